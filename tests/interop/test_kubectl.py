"""Every bundled kubectl against a Hatchway cluster.

``kubectl_exec`` runs each exec-shaped test with every version, and for 1.30+ both over
WebSocket (the default) and over SPDY (``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``);
``kubectl`` runs the other commands once per version. Expected texts are kubectl's own
(protocol.md 7).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from typing import Any

import pytest
import yaml

from hatchway.protocol import exec_options
from hatchway.types import ExecOptions
from interop.support import (
    SLEEP,
    Kubectl,
    Pods,
    PtySession,
    Users,
    container,
    pod_manifest,
    speaks_websocket,
)

MIB = 1 << 20


def out(result: Any) -> str:
    return result.stdout.decode(errors="replace")


def err(result: Any) -> str:
    return result.stderr.decode(errors="replace")


def upgrade_lines(stderr: str) -> list[tuple[str, str]]:
    """(method, status) of the exec requests in kubectl's ``-v=6`` log."""
    klog = re.findall(r"\] (GET|POST) https://\S+/exec\?\S+ (\d{3}) ", stderr)
    # kubectl 1.33 logs structured: verb="GET" url="..." status="101 Switching Protocols"
    structured = re.findall(
        r'verb="(GET|POST)" url="https://\S+/exec\?\S+" status="(\d{3})', stderr
    )
    return klog + structured


# -- exec ------------------------------------------------------------------------------------
def test_exec_output_over_the_expected_transport(kubectl_exec: Kubectl, pods: Pods) -> None:
    result = kubectl_exec("exec", "-v=6", pods.simple, "--", "sh", "-c", "echo out; echo err >&2")
    assert result.returncode == 0, err(result)
    assert out(result) == "out\n"
    assert "\nerr\n" in err(result) or err(result).startswith("err\n")
    # WebSocket is a GET upgrade, SPDY a POST; no fallback happened (protocol.md 5.8).
    expected = "GET" if kubectl_exec.transport == "ws" else "POST"
    assert upgrade_lines(err(result)) == [(expected, "101")], err(result)


def test_exec_query_on_the_wire(kubectl_exec: Kubectl, pods: Pods) -> None:
    """What every kubectl sends as the exec query is what our codec writes in the API
    server spelling, byte for byte (escaping, key order, the defaulted container)."""
    script = "echo 'a b/c|d+e%f&g=h'"
    result = kubectl_exec("exec", "-v=6", "-i", pods.simple, "--", "sh", "-c", script, input=b"")
    assert result.returncode == 0, err(result)
    assert out(result) == "a b/c|d+e%f&g=h\n"
    queries = re.findall(r'/exec\?([^\s"]+)', err(result))
    wanted = ExecOptions(("sh", "-c", script), "main", stdin=True, stdout=True, stderr=True)
    assert queries == [exec_options.encode(wanted, exec_options.APISERVER)], err(result)


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exec_exit_code(kubectl_exec: Kubectl, pods: Pods, code: int) -> None:
    result = kubectl_exec("exec", pods.simple, "--", "sh", "-c", f"echo before; exit {code}")
    assert result.returncode == code, err(result)
    assert out(result) == "before\n"
    if code:
        assert err(result) == f"command terminated with exit code {code}\n"
    else:
        assert err(result) == ""


@pytest.mark.slow
def test_exec_stdin_several_mib_with_eof(kubectl_exec: Kubectl, pods: Pods) -> None:
    data = os.urandom(5 * MIB + 12345)
    result = kubectl_exec(
        "exec", "-i", pods.simple, "--", "sh", "-c", "sha256sum; exit 9", input=data
    )
    # The exit code proves that stdin EOF reached the process (sha256sum returned).
    assert result.returncode == 9, err(result)
    assert out(result).split()[0] == hashlib.sha256(data).hexdigest()


def test_exec_stdin_binary_round_trip(kubectl_exec: Kubectl, pods: Pods) -> None:
    data = bytes(range(256)) * 256 + b"\r\n\x00\xff" * 100
    result = kubectl_exec("exec", "-i", pods.simple, "--", "cat", input=data)
    assert result.returncode == 0, err(result)
    assert result.stdout == data


def test_exec_tty_in_a_pty_with_resize(kubectl_exec: Kubectl, pods: Pods) -> None:
    argv = kubectl_exec.argv("exec", "-it", pods.simple, "--", "sh")
    session = PtySession(argv, kubectl_exec.env, rows=30, cols=100)
    try:
        session.expect(rb"# ")
        # The quotes keep the echoed command line from matching.
        size = rb"SIZE=(\d+) (\d+)"
        session.send(b"stty size | sed s/^/SI''ZE=/\r")
        assert session.expect(size).groups() == (b"30", b"100")
        session.resize(rows=40, cols=132)  # the kernel sends SIGWINCH to kubectl
        for _ in range(50):
            session.send(b"stty size | sed s/^/SI''ZE=/\r")
            if session.expect(size).groups() == (b"40", b"132"):
                break
        else:
            raise AssertionError(f"resize never arrived: {session.output[-500:]!r}")
        session.send(b"tty; exit 7\r")
        session.expect(rb"/dev/pts/\d+")
        assert session.wait() == 7, session.output[-500:]
    finally:
        session.close()


def test_exec_tty_flags_without_a_terminal(kubectl_exec: Kubectl, pods: Pods) -> None:
    # -t without -i is ignored silently; -it with a pipe warns and runs without a TTY
    # (protocol.md 2.7 item 5).
    result = kubectl_exec("exec", "-t", pods.simple, "--", "tty")
    assert (result.returncode, out(result)) == (1, "not a tty\n"), err(result)
    result = kubectl_exec("exec", "-it", pods.simple, "--", "sh", "-c", "cat; tty", input=b"in\n")
    assert out(result) == "in\nnot a tty\n"
    assert "Unable to use a TTY - input is not a terminal or the right kind of file" in err(result)


def test_exec_container_flag_and_default_container(kubectl_exec: Kubectl, pods: Pods) -> None:
    who = ["sh", "-c", "echo $WHO"]
    result = kubectl_exec("exec", pods.multi, "-c", "sidecar", "--", *who)
    assert (result.returncode, out(result), err(result)) == (0, "sidecar\n", "")

    result = kubectl_exec("exec", pods.multi, "--", *who)
    assert (result.returncode, out(result)) == (0, "app\n")
    assert err(result) == 'Defaulted container "app" out of: app, sidecar, init (init)\n'

    # The annotation picks the container silently.
    result = kubectl_exec("exec", pods.annotated, "--", *who)
    assert (result.returncode, out(result), err(result)) == (0, "sidecar\n", "")

    result = kubectl_exec("exec", pods.simple, "-c", "bogus", "--", "true")
    assert result.returncode == 1
    assert err(result) == (
        f"Error from server (BadRequest): container bogus is not valid for pod {pods.simple}\n"
    )


@pytest.mark.slow
def test_cp_to_the_pod_and_back(kubectl_exec: Kubectl, pods: Pods, tmp_path: Any) -> None:
    data = os.urandom(MIB) + b"\x00end"
    local = tmp_path / "src.bin"
    local.write_bytes(data)
    remote = f"/tmp/cp-{uuid.uuid4().hex}.bin"
    result = kubectl_exec("cp", str(local), f"{pods.simple}:{remote}")
    assert result.returncode == 0, err(result) + out(result)

    inside = kubectl_exec("exec", pods.simple, "--", "sha256sum", remote)
    assert out(inside).split()[0] == hashlib.sha256(data).hexdigest(), err(inside)

    back = tmp_path / "back.bin"
    result = kubectl_exec("cp", f"{pods.simple}:{remote}", str(back))
    assert result.returncode == 0, err(result) + out(result)
    assert back.read_bytes() == data


def test_exec_forbidden_without_pods_exec(kubectl_exec: Kubectl, pods: Pods, users: Users) -> None:
    # view may read the pod but not exec: the WebSocket GET and then the SPDY POST are
    # both refused, kubectl prints the second (protocol.md 2.6).
    result = kubectl_exec("exec", pods.simple, "--", "true", kubeconfig=users.viewer)
    assert result.returncode == 1
    user = users.names["viewer"]
    assert err(result) == (
        f'Error from server (Forbidden): pods "{pods.simple}" is forbidden: User "{user}" '
        'cannot create resource "pods/exec" in API group "" in the namespace "default"\n'
    )


def test_exec_into_privileged_pods_is_for_admins(
    kubectl_exec: Kubectl, pods: Pods, users: Users
) -> None:
    ok = kubectl_exec("exec", pods.simple, "--", "echo", "ok", kubeconfig=users.editor)
    assert (ok.returncode, out(ok)) == (0, "ok\n"), err(ok)
    refused = {
        pods.privileged: "cannot exec into or attach to a privileged container",
        pods.host_pid: "cannot exec into or attach to a container using host pid",
    }
    for pod, reason in refused.items():
        result = kubectl_exec("exec", pod, "--", "echo", "ok", kubeconfig=users.editor)
        assert result.returncode == 1
        assert (
            err(result) == f'Error from server (Forbidden): pods "{pod}" is forbidden: {reason}\n'
        )
        admin = kubectl_exec("exec", pod, "--", "echo", "ok")
        assert (admin.returncode, out(admin)) == (0, "ok\n"), err(admin)


# -- errors before any exec -------------------------------------------------------------------
def test_not_found(kubectl: Kubectl) -> None:
    for args in (("exec", "nope", "--", "true"), ("get", "pod", "nope")):
        result = kubectl(*args)
        assert result.returncode == 1, args
        assert err(result) == 'Error from server (NotFound): pods "nope" not found\n', args
    # kubectl 1.30+ wraps the error of logs itself, as it does against Kubernetes.
    result = kubectl("logs", "nope")
    assert result.returncode == 1
    if speaks_websocket(kubectl.version):
        expected = (
            'error: error from server (NotFound): pods "nope" not found in namespace "default"'
        )
    else:
        expected = 'Error from server (NotFound): pods "nope" not found'
    assert err(result) == expected + "\n"


def test_forbidden_without_any_binding(kubectl: Kubectl, pods: Pods, users: Users) -> None:
    user = users.names["nobody"]
    result = kubectl("exec", pods.simple, "--", "true", kubeconfig=users.nobody)
    assert result.returncode == 1
    assert err(result) == (
        f'Error from server (Forbidden): pods "{pods.simple}" is forbidden: User "{user}" '
        'cannot get resource "pods" in API group "" in the namespace "default"\n'
    )
    result = kubectl("get", "pods", kubeconfig=users.nobody)
    assert result.returncode == 1
    assert err(result) == (
        f'Error from server (Forbidden): pods is forbidden: User "{user}" '
        'cannot list resource "pods" in API group "" in the namespace "default"\n'
    )


# -- other commands ---------------------------------------------------------------------------
def test_get(kubectl: Kubectl, pods: Pods) -> None:
    result = kubectl("get", "pod", pods.simple, "-o", "json")
    assert result.returncode == 0, err(result)
    pod = json.loads(result.stdout)
    assert (pod["kind"], pod["metadata"]["name"]) == ("Pod", pods.simple)
    assert pod["status"]["phase"] == "Running"

    table = kubectl("get", "pods")
    assert table.returncode == 0, err(table)
    header, *rows = out(table).splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [pods.simple, "1/1", "Running", "0"] in [row.split()[:4] for row in rows]

    nodes = kubectl("get", "nodes", "-o", "name")
    assert (nodes.returncode, out(nodes)) == (0, f"node/{kubectl.cluster.node_name}\n")


def test_get_in_chunks(kubectl: Kubectl, pods: Pods) -> None:
    """``--chunk-size=2`` over running pods (more than one page): every pod once, in
    order, one header, and kubectl really followed ``continue`` tokens (protocol.md 10.5).
    Other tests' pods come and go in this namespace meanwhile, so the pages are checked
    against themselves and the fixture's pods, not against a list taken at another
    moment. A page may hold fewer than ``limit`` objects (the API allows it); exact page
    sizes are checked on a quiet store in tests/apiserver/test_list_paging.py."""
    chunked = kubectl("get", "pods", "--chunk-size=2", "-v=6")
    assert chunked.returncode == 0, err(chunked)
    header, *rows = out(chunked).splitlines()
    assert header.split()[:3] == ["NAME", "READY", "STATUS"]
    names = [row.split()[0] for row in rows]
    assert names == sorted(set(names)), names
    assert len(names) >= 5 and {pods.simple, pods.multi, pods.annotated} <= set(names)
    pages = re.findall(r"/api/v1/namespaces/default/pods\?(\S*limit=2\S*)", err(chunked))
    assert len(pages) >= (len(names) + 1) // 2, (pages, names)
    assert "continue=" not in pages[0] and all("continue=" in p for p in pages[1:]), pages


def test_logs(kubectl: Kubectl, pods: Pods) -> None:
    result = kubectl("logs", pods.multi, "-c", "app")
    assert (result.returncode, out(result), err(result)) == (0, "line1\nline2\n", "")
    result = kubectl("logs", pods.multi)
    assert (result.returncode, out(result)) == (0, "line1\nline2\n")
    assert err(result) == 'Defaulted container "app" out of: app, sidecar, init (init)\n'
    result = kubectl("logs", pods.annotated, "-c", "sidecar")
    assert (result.returncode, out(result)) == (0, "")


def test_logs_tail(kubectl: Kubectl, pods: Pods) -> None:
    result = kubectl("logs", pods.multi, "-c", "app", "--tail=1")
    assert (result.returncode, out(result)) == (0, "line2\n")
    result = kubectl("logs", pods.multi, "-c", "app", "--limit-bytes=8")
    assert (result.returncode, out(result)) == (0, "line1\nli")
    result = kubectl("logs", pods.multi, "-c", "app", "--since=1h", "--tail=5")
    assert (result.returncode, out(result)) == (0, "line1\nline2\n")


def _manifest(name: str, labels: dict[str, str] | None = None) -> bytes:
    manifest = pod_manifest(name, {"containers": [container("main", SLEEP)]})
    if labels:
        manifest["metadata"]["labels"] = labels
    return yaml.safe_dump(manifest).encode()


def test_create_get_delete(kubectl: Kubectl, tmp_path: Any) -> None:
    name = f"crud-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "pod.yaml"
    path.write_bytes(_manifest(name))
    result = kubectl("create", "-f", str(path))
    assert (result.returncode, out(result)) == (0, f"pod/{name} created\n"), err(result)
    again = kubectl("create", "-f", str(path))
    assert again.returncode == 1
    assert f'pods "{name}" already exists' in err(again)
    got = kubectl("get", "-f", str(path), "-o", "name")
    assert (got.returncode, out(got)) == (0, f"pod/{name}\n"), err(got)
    result = kubectl("delete", "-f", str(path), "--wait=false")
    assert (result.returncode, out(result)) == (0, f'pod "{name}" deleted\n'), err(result)


def test_apply(kubectl: Kubectl, tmp_path: Any) -> None:
    """Client-side apply: created, unchanged, configured (a strategic merge PATCH)."""
    name = f"apply-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_bytes(_manifest(name))
    second.write_bytes(_manifest(name, {"tier": "x"}))
    try:
        steps = [(first, "created"), (first, "unchanged"), (second, "configured")]
        for path, verb in steps:
            result = kubectl("apply", "-f", str(path))
            assert (result.returncode, out(result)) == (0, f"pod/{name} {verb}\n"), err(result)
        labels = kubectl("get", "pod", name, "-o", "jsonpath={.metadata.labels}")
        assert json.loads(out(labels)) == {"tier": "x"}
    finally:
        kubectl("delete", "pod", name, "--wait=false")


@pytest.mark.parametrize("verb", ["create", "apply"])
@pytest.mark.parametrize(
    "kubectl",
    [
        pytest.param(("1.27", "spdy"), id="1.27"),
        pytest.param(("1.28", "spdy"), id="1.28"),
        pytest.param(("1.29", "spdy"), id="1.29"),
    ],
    indirect=True,
)
def test_create_and_apply_with_default_validation(
    kubectl: Kubectl, verb: str, tmp_path: Any
) -> None:
    name = f"{verb}v-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "pod.yaml"
    path.write_bytes(_manifest(name))
    try:
        result = kubectl(verb, "-f", str(path))
        assert (result.returncode, out(result)) == (0, f"pod/{name} created\n"), err(result)
    finally:
        kubectl("delete", "pod", name, "--wait=false")


def test_create_reports_unknown_fields(kubectl: Kubectl, tmp_path: Any) -> None:
    """Default validation (Strict): kubectl sends fieldValidation=Strict, the server
    refuses a field the schema does not name and kubectl prints the server's reason."""
    name = f"unknown-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    manifest = yaml.safe_load(_manifest(name))
    manifest["spec"]["containers"][0]["foo"] = "bar"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(manifest))
    try:
        result = kubectl("create", "-f", str(path))
        assert result.returncode == 1, out(result)
        assert 'strict decoding error: unknown field "spec.containers[0].foo"' in err(result)
    finally:
        kubectl("delete", "pod", name, "--wait=false", "--ignore-not-found")


def test_server_side_apply(kubectl: Kubectl, tmp_path: Any) -> None:
    name = f"ssa-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "pod.yaml"
    path.write_bytes(_manifest(name))
    try:
        result = kubectl("apply", "--server-side", "-f", str(path))
        assert (result.returncode, out(result)) == (0, f"pod/{name} serverside-applied\n"), err(
            result
        )
        manifest = yaml.safe_load(_manifest(name, {"tier": "web"}))
        manifest["spec"]["containers"][0]["image"] = "busybox:latest"
        path.write_text(yaml.safe_dump(manifest))
        result = kubectl("apply", "--server-side", "-f", str(path))
        assert (result.returncode, out(result)) == (0, f"pod/{name} serverside-applied\n"), err(
            result
        )
        got = kubectl("get", "pod", name, "-o", "json", "--show-managed-fields")
        pod = json.loads(got.stdout)
        assert pod["metadata"]["labels"] == {"tier": "web"}
        assert pod["spec"]["containers"][0]["image"] == "busybox:latest"
        managers = [(e["manager"], e["operation"]) for e in pod["metadata"]["managedFields"]]
        assert managers == [("kubectl", "Apply")]
    finally:
        kubectl("delete", "pod", name, "--wait=false")


def test_auth_can_i(kubectl: Kubectl, users: Users) -> None:
    cases = [
        (None, ("create", "pods/exec"), "yes"),
        (None, ("*", "*"), "yes"),
        (users.nobody, ("get", "pods"), "no"),
        (users.viewer, ("get", "pods"), "yes"),
        (users.viewer, ("create", "pods/exec"), "no"),
        (users.viewer, ("get", "pods", "--subresource=log"), "yes"),
        (users.editor, ("create", "pods/exec"), "yes"),
        (users.editor, ("create", "pods"), "yes"),
        (users.editor, ("create", "rolebindings"), "no"),
    ]
    for config, args, answer in cases:
        result = kubectl("auth", "can-i", *args, kubeconfig=config)
        assert out(result) == f"{answer}\n", (config, args, err(result))
        assert result.returncode == (0 if answer == "yes" else 1), (config, args)


def test_auth_whoami(kubectl: Kubectl, users: Users) -> None:
    result = kubectl("auth", "whoami")
    assert result.returncode == 0, err(result)
    assert out(result).split("\n")[:3] == [
        "ATTRIBUTE   VALUE",
        "Username    admin",
        "Groups      [system:masters system:authenticated]",
    ]
    result = kubectl("auth", "whoami", "-o", "json", kubeconfig=users.viewer)
    assert result.returncode == 0, err(result)
    info = json.loads(result.stdout)["status"]["userInfo"]
    assert (info["username"], info["groups"]) == (users.names["viewer"], ["system:authenticated"])


def _can_i_list(kubectl: Kubectl, config: Any) -> dict[str, list[str]]:
    """Resource -> verbs from ``auth can-i --list`` (resource-name column ignored)."""
    result = kubectl("auth", "can-i", "--list", kubeconfig=config)
    assert result.returncode == 0, err(result)
    header, *rows = out(result).splitlines()
    assert header.split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    table: dict[str, list[str]] = {}
    for row in rows:
        resource = row.split()[0] if not row.startswith(" ") else ""
        verbs = row[row.rindex("[") + 1 : row.rindex("]")].split()
        table.setdefault(resource, []).extend(verbs)
    return table


def test_auth_can_i_list(kubectl: Kubectl, users: Users) -> None:
    assert _can_i_list(kubectl, None)["*.*"] == ["*"]
    viewer = _can_i_list(kubectl, users.viewer)
    assert set(viewer["pods"]) == {"get", "list", "watch"}
    assert set(viewer["pods/log"]) >= {"get"}
    assert "pods/exec" not in viewer
    editor = _can_i_list(kubectl, users.editor)
    assert "create" in editor["pods/exec"]
    nobody = _can_i_list(kubectl, users.nobody)
    assert "pods" not in nobody
    assert nobody["selfsubjectrulesreviews.authorization.k8s.io"] == ["create"]
