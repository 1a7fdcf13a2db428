"""The official Python client (``kubernetes`` from PyPI) against a Hatchway cluster.

It speaks WebSocket only, offers ``v5.channel.k8s.io,v4.channel.k8s.io``, never GETs the
pod first (the server defaults the container), and reads the exit code from channel 3
(protocol.md 5.1, 7).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

import pytest

from cluster import Cluster, nc_server
from interop.support import SLEEP, Pods, Users, container, core_api, pod_manifest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

RBAC_GROUP = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Any:
    return core_api(cluster.kubeconfig)


def exec_stream(api: Any, pod: str, command: list[str], **kwargs: Any) -> Any:
    options = {"stderr": True, "stdin": False, "stdout": True, "tty": False, **kwargs}
    return stream(api.connect_get_namespaced_pod_exec, pod, "default", command=command, **options)


def test_exec_preloaded_output(api: Any, pods: Pods) -> None:
    output = exec_stream(api, pods.simple, ["sh", "-c", "echo out; sleep 0.1; echo err >&2"])
    assert output == "out\nerr\n"


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exec_stdout_stderr_and_returncode(api: Any, pods: Pods, code: int) -> None:
    command = ["sh", "-c", f"echo out; echo err >&2; exit {code}"]
    response = exec_stream(api, pods.simple, command, _preload_content=False)
    try:
        response.run_forever(timeout=30)
        assert response.read_stdout() == "out\n"
        assert response.read_stderr() == "err\n"
        assert response.returncode == code
    finally:
        response.close()


def test_exec_binary_stdin_with_close_signal(api: Any, pods: Pods) -> None:
    data = os.urandom(3 << 20)
    response = exec_stream(
        api,
        pods.simple,
        ["sh", "-c", "sha256sum; exit 4"],
        stdin=True,
        _preload_content=False,
        binary=True,
    )
    try:
        assert response.is_open()
        for start in range(0, len(data), 1 << 16):
            response.write_stdin(data[start : start + (1 << 16)])
        response.close_channel(0)  # the v5 close signal: stdin EOF
        response.run_forever(timeout=30)
        assert response.read_stdout().split()[0].decode() == hashlib.sha256(data).hexdigest()
        assert response.returncode == 4
    finally:
        response.close()


def test_exec_named_container(api: Any, pods: Pods) -> None:
    output = exec_stream(api, pods.multi, ["sh", "-c", "echo $WHO"], container="sidecar")
    assert output == "sidecar\n"


def test_exec_tty(api: Any, pods: Pods) -> None:
    response = exec_stream(
        api,
        pods.simple,
        ["sh", "-c", "tty >/dev/null && echo tty; exit 2"],
        stderr=False,
        tty=True,
        _preload_content=False,
    )
    try:
        response.run_forever(timeout=30)
        assert response.read_stdout() == "tty\r\n"
        assert response.returncode == 2
    finally:
        response.close()


def handshake_error(call: Any) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    return info.value


def test_errors_are_handshake_failures(
    api: Any, pods: Pods, cluster: Cluster, users: Users
) -> None:
    # The Python client never falls back and reports the refused upgrade (protocol.md 7).
    missing = handshake_error(lambda: exec_stream(api, "nope", ["true"]))
    assert "404" in str(missing.reason)
    multi = handshake_error(lambda: exec_stream(api, pods.multi, ["true"]))
    assert "400" in str(multi.reason)
    viewer = core_api(users.viewer)
    forbidden = handshake_error(lambda: exec_stream(viewer, pods.simple, ["true"]))
    assert "403" in str(forbidden.reason)
    editor = core_api(users.editor)
    privileged = handshake_error(lambda: exec_stream(editor, pods.privileged, ["true"]))
    assert "403" in str(privileged.reason)


def test_rest_reads_and_writes(api: Any, pods: Pods) -> None:
    pod = api.read_namespaced_pod(pods.simple, "default")
    assert pod.status.phase == "Running"
    names = [p.metadata.name for p in api.list_namespaced_pod("default").items]
    assert pods.simple in names
    logs = api.read_namespaced_pod_log(pods.multi, "default", container="app")
    assert logs == "line1\nline2\n"
    with pytest.raises(ApiException) as info:
        api.read_namespaced_pod("nope", "default")
    assert info.value.status == 404


def test_v4_only_offer_of_older_clients(api: Any, pods: Pods) -> None:
    # Python client releases up to 35.x offer only v4 (protocol.md 5.1): no close signal, so
    # the command reads just what it needs; text frames carry the stdin.
    response = exec_stream(
        api,
        pods.simple,
        ["sh", "-c", "head -c 5; echo; echo err >&2; exit 3"],
        stdin=True,
        _preload_content=False,
        _headers={"sec-websocket-protocol": "v4.channel.k8s.io"},
    )
    try:
        assert response.subprotocol == "v4.channel.k8s.io"
        response.write_stdin("hello world")
        response.run_forever(timeout=30)
        assert (response.read_stdout(), response.read_stderr()) == ("hello\n", "err\n")
        assert response.returncode == 3
    finally:
        response.close()


def test_service_account_token_from_the_official_client(
    api: Any, cluster: Cluster, pods: Pods
) -> None:
    """create_namespaced_service_account_token (a TokenRequest), then exec with the token
    alone, as automation would."""

    name = f"robot-{uuid.uuid4().hex[:6]}"
    body = kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name=name))
    api.create_namespaced_service_account("default", body)
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    answer = api.create_namespaced_service_account_token(name, "default", request)
    assert answer.status.token and answer.spec.expiration_seconds == 600
    rbac = kubernetes.client.RbacAuthorizationV1Api(api.api_client)
    rbac.create_namespaced_role_binding(
        "default",
        {
            "metadata": {"name": f"{name}-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
        },
    )
    configuration = kubernetes.client.Configuration()
    configuration.host = api.api_client.configuration.host
    configuration.ssl_ca_cert = api.api_client.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": answer.status.token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    robot = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    try:
        assert exec_stream(robot, pods.simple, ["echo", "robot"]) == "robot\n"
        api.delete_namespaced_service_account(name, "default")
        with pytest.raises(ApiException) as info:
            robot.list_namespaced_pod("default")
        assert info.value.status == 401
    finally:
        rbac.delete_namespaced_role_binding(f"{name}-edit", "default")


def test_events_listed_and_watched_by_the_official_client(api: Any, cluster: Cluster) -> None:
    """A new pod's life as the official client sees it: a watch on core/v1 events with a
    field selector gets Scheduled … Started as they happen, and a list finds them too."""
    name = f"pyev-{uuid.uuid4().hex[:6]}"
    selector = f"involvedObject.name={name}"
    wanted = {"Scheduled", "Pulled", "Created", "Started"}
    seen: list[tuple[str, str]] = []
    watching = threading.Event()

    def watch() -> None:
        watcher = kubernetes.watch.Watch()
        stream_ = watcher.stream(
            api.list_namespaced_event, "default", field_selector=selector, timeout_seconds=60
        )
        watching.set()
        for event in stream_:
            seen.append((event["type"], event["object"].reason))
            if wanted <= {reason for _, reason in seen}:
                watcher.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert watching.wait(30)
    cluster.apply_pod(pod_manifest(name, {"containers": [container("main", SLEEP)]}))
    try:
        thread.join(90)
        assert not thread.is_alive(), f"the watch saw only {seen}"
        assert wanted <= {reason for kind, reason in seen if kind == "ADDED"}, seen
        listed = api.list_namespaced_event("default", field_selector=selector)
        assert wanted <= {e.reason for e in listed.items}
        assert all(e.involved_object.name == name for e in listed.items)
        assert all(e.involved_object.kind == "Pod" for e in listed.items)
    finally:
        api.delete_namespaced_pod(name, "default", grace_period_seconds=0)


# -- port-forward: the channel protocol (protocol.md 6.6) --------------------------------

PF_SERVERS = " ".join(
    (nc_server(8080, "cat"), nc_server(8082, "busybox", "echo", "hello-from-8082"), "wait")
)


@pytest.fixture(scope="module")
def pf_pod(cluster: Cluster) -> Any:
    from interop.support import container, pod_manifest

    name = f"pypf-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(
        pod_manifest(name, {"containers": [container("main", ["sh", "-c", PF_SERVERS])]})
    )
    cluster.wait_phase(name)
    yield name
    cluster.kubectl("delete", "pod", "--wait=false", name)


def _read_until_closed(sock: Any, limit: int = 1 << 24) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := sock.recv(1 << 16)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_exactly(sock: Any, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        assert chunk, f"ended after {len(received)} of {size} bytes"
        received += chunk
    return received


def test_port_forward_channels_of_several_ports(api: Any, pf_pod: str) -> None:
    from kubernetes.stream import portforward

    pf = portforward(
        api.connect_get_namespaced_pod_portforward, pf_pod, "default", ports="8082,8080,9999"
    )
    try:
        # The client ends a port's socket only at an error or at the end of the whole
        # connection (v4 has no half-close): read what is expected, not to EOF.
        hello = pf.socket(8082)
        hello.settimeout(30)
        assert _read_exactly(hello, 16) == b"hello-from-8082\n"
        assert pf.error(8082) is None
        echo = pf.socket(8080)
        echo.settimeout(30)
        payload = os.urandom(1 << 20)
        echo.sendall(payload)
        assert _read_exactly(echo, len(payload)) == payload
        refused = pf.socket(9999)
        refused.settimeout(30)
        assert _read_until_closed(refused) == b""
        error = pf.error(9999)
        assert error is not None
        assert error.startswith("error forwarding port 9999: failed to connect to localhost:9999")
    finally:
        pf.close()


def test_port_forward_needs_create_on_pods_portforward(users: Users, pf_pod: str) -> None:
    from kubernetes.stream import portforward

    viewer = core_api(users.viewer)
    with pytest.raises(ApiException) as raised:
        pf = portforward(
            viewer.connect_get_namespaced_pod_portforward, pf_pod, "default", ports="8082"
        )
        pf.close()
    assert "403" in str(raised.value)
