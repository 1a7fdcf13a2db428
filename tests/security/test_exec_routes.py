"""A namespace user never reaches a pod they could not have created, on any route.

The cluster administrator creates, in the attacker's own namespace, pods that baseline
Pod Security refuses to the attacker (hostPath, an added capability, a privileged
container, the host's PID namespace). The attacker holds ``edit`` there, so RBAC allows
``create pods/exec``; the refusal must come from admission, before any byte reaches the
node: over WebSocket and SPDY (kubectl), for attach, and on the seed's legacy
``/proxy/minions`` path (a raw upgrade over real TLS). Nothing the attacker asked for runs.
"""

from __future__ import annotations

import base64
import socket
import ssl
import uuid
from collections.abc import Iterator

import pytest
import yaml

from cluster import Cluster
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc

MARK = "/tmp/reached"


def _forbidden_pods(namespace: str) -> dict[str, dict]:
    suffix = uuid.uuid4().hex[:5]
    host_path = pod_manifest(
        f"hostpath-{suffix}",
        namespace,
        {"volumes": [{"name": "p", "hostPath": {"path": "/tmp"}}]},
        volumeMounts=[{"name": "p", "mountPath": "/host"}],
    )
    caps = pod_manifest(
        f"caps-{suffix}",
        namespace,
        securityContext={"capabilities": {"add": ["SYS_ADMIN"]}},
    )
    privileged = pod_manifest(f"priv-{suffix}", namespace, securityContext={"privileged": True})
    host_pid = pod_manifest(f"hostpid-{suffix}", namespace, {"hostPID": True})
    return {
        "hostPath": host_path,
        "capabilities": caps,
        "privileged": privileged,
        "hostPID": host_pid,
    }


@pytest.fixture(scope="module")
def forbidden(cluster: Cluster, attacker: Attacker) -> Iterator[dict[str, str]]:
    """Pods the admin made in the attacker's namespace: kind -> pod name."""
    manifests = _forbidden_pods(attacker.namespace)
    for manifest in manifests.values():
        cluster.apply_pod(manifest)
    for manifest in manifests.values():
        cluster.wait_phase(manifest["metadata"]["name"], namespace=attacker.namespace)
    yield {kind: m["metadata"]["name"] for kind, m in manifests.items()}
    names = [m["metadata"]["name"] for m in manifests.values()]
    cluster.kubectl("delete", "pod", "-n", attacker.namespace, "--wait=false", *names)


def _reached(cluster: Cluster, namespace: str, pod: str) -> bool:
    probe = cluster.kubectl("exec", "-n", namespace, pod, "--", "ls", MARK)
    return probe.returncode == 0


KINDS = ("hostPath", "capabilities", "privileged", "hostPID")


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
@pytest.mark.parametrize("kind", KINDS)
def test_exec_refused(
    cluster: Cluster, attacker: Attacker, forbidden: dict[str, str], kind: str, transport: str
) -> None:
    pod = forbidden[kind]
    env_flag = "true" if transport == "websocket" else "false"
    result = attacker.kubectl(
        "exec", pod, "--", "touch", MARK, env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": env_flag}
    )
    assert result.returncode != 0
    assert f'pods "{pod}" is forbidden' in result.stderr.decode(), result.stderr
    assert not _reached(cluster, attacker.namespace, pod)


@pytest.mark.parametrize("kind", KINDS)
def test_attach_refused(attacker: Attacker, forbidden: dict[str, str], kind: str) -> None:
    pod = forbidden[kind]
    result = attacker.kubectl("attach", pod, "-c", "main", timeout=30)
    assert result.returncode != 0
    assert f'pods "{pod}" is forbidden' in result.stderr.decode(), result.stderr


def _client_context(attacker: Attacker) -> ssl.SSLContext:
    config = yaml.safe_load(attacker.kubeconfig.read_text())
    user = config["users"][0]["user"]
    cluster = config["clusters"][0]["cluster"]
    directory = attacker.kubeconfig.parent
    cert, key = directory / "legacy.crt", directory / "legacy.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    context.load_cert_chain(cert, key)
    return context


def _raw_upgrade(cluster: Cluster, context: ssl.SSLContext, path: str) -> bytes:
    """The API server's answer head to a WebSocket upgrade of ``path``."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", cluster.apiserver_port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_path_refused(
    cluster: Cluster, attacker: Attacker, forbidden: dict[str, str], kind: str
) -> None:
    pod = forbidden[kind]
    path = (
        f"/proxy/minions/{cluster.node_name}/exec/{attacker.namespace}/{pod}/main"
        f"?command=touch&command={MARK}&output=1&error=1"
    )
    answer = _raw_upgrade(cluster, _client_context(attacker), path)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert not _reached(cluster, attacker.namespace, pod)


def test_plain_pod_still_reachable(cluster: Cluster, attacker: Attacker) -> None:
    """The refusals above are about the pods, not the user: a pod they could create works."""
    name = f"plain-{uuid.uuid4().hex[:5]}"
    created = attacker.create(pod_manifest(name, attacker.namespace))
    assert created.returncode == 0, created.stderr
    cluster.wait_phase(name, namespace=attacker.namespace)
    result = attacker.kubectl("exec", name, "--", "echo", "in")
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    attacker.kubectl("delete", "pod", name, "--wait=false")
