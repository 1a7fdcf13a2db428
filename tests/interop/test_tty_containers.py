"""TTY containers and stdinOnce with every bundled kubectl and both transports (1.30+:
WebSocket first, and SPDY forced by ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``), kubectl
driven in a real pty (:class:`~interop.support.PtySession`).

* ``kubectl attach -it`` to a ``tty: true`` container: a prompt, the pty's size follows
  the terminal's, Enter (CR) works as on a terminal.
* ``kubectl run -it --rm x --image=busybox -- sh``: a shell, ``echo hi; exit``, the pod
  is deleted.
* ``echo hi | kubectl run -i --rm --restart=Never t --image=busybox -- cat``: ``hi``,
  cat ends when kubectl's stdin does (stdinOnce), the pod completes and is deleted.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cluster import SCALE, Cluster
from interop.support import Kubectl, PtySession, pod_manifest

pytestmark = pytest.mark.runc


def _name(kubectl: Kubectl, prefix: str) -> str:
    return f"{prefix}-{kubectl.version.replace('.', '')}-{kubectl.transport}-{uuid.uuid4().hex[:4]}"


def _gone(cluster: Cluster, name: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        result = cluster.kubectl("get", "pod", name, "-o", "name")
        if result.returncode != 0 and b"NotFound" in result.stderr:
            return True
        time.sleep(0.2)
    return False


def _size(session: PtySession, rows: int, cols: int) -> None:
    """Ask the container's shell for its pty size until it is ``rows cols`` (a resize
    goes to kubectl as SIGWINCH, then over the resize stream: not instant)."""
    for _ in range(50):
        session.send(b"stty size | sed s/^/SI''ZE=/\r")  # (the quotes: no echo match)
        got = session.expect(rb"SIZE=(\d+) (\d+)").groups()
        if got == (str(rows).encode(), str(cols).encode()):
            return
    raise AssertionError(f"size {rows}x{cols} never arrived: {session.output[-500:]!r}")


def test_attach_it_to_a_tty_container(kubectl_exec: Kubectl) -> None:
    cluster = kubectl_exec.cluster
    name = _name(kubectl_exec, "tty")
    spec = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": "busybox", "command": ["sh"], "stdin": True, "tty": True}
        ],
    }
    cluster.apply_pod(pod_manifest(name, spec))
    try:
        cluster.wait_phase(name)
        argv = kubectl_exec.argv("attach", "-it", name)
        session = PtySession(argv, kubectl_exec.env, rows=30, cols=100)
        try:
            session.expect(rb"If you don't see a command prompt, try pressing enter\.")
            session.send(b"\r")
            session.expect(rb"/ # ")
            _size(session, 30, 100)
            session.resize(rows=40, cols=132)
            _size(session, 40, 132)
            session.send(b"echo $TERM; tty; exit 4\r")
            session.expect(rb"xterm\r\n/dev/pts/\d+")
            session.wait()  # attach reports no exit code (protocol.md 6.1)
        finally:
            session.close()
        pod = cluster.wait_phase(name, ("Failed",))
        state = pod["status"]["containerStatuses"][0]["state"]
        assert state["terminated"]["exitCode"] == 4, json.dumps(state)
    finally:
        cluster.kubectl("delete", "pod", name, "--wait=false")


def test_run_it_rm_shell(kubectl_exec: Kubectl) -> None:
    name = _name(kubectl_exec, "runit")
    argv = kubectl_exec.argv("run", "-it", "--rm", name, "--image=busybox", "--", "sh")
    session = PtySession(argv, kubectl_exec.env, rows=24, cols=80)
    try:
        session.expect(rb"If you don't see a command prompt, try pressing enter\.", timeout=90)
        session.send(b"\r")
        session.expect(rb"/ # ")
        session.send(b"echo h''i; exit\r")
        session.expect(rb"\r\nhi\r\n")
        assert session.wait(timeout=90) == 0, session.output[-800:]
        assert f'pod "{name}" deleted'.encode() in session.output, session.output[-800:]
    finally:
        session.close()
    assert _gone(kubectl_exec.cluster, name)


def test_run_i_rm_never_cat(kubectl_exec: Kubectl) -> None:
    name = _name(kubectl_exec, "runi")
    result = kubectl_exec(
        "run", "-i", "--rm", "--restart=Never", name, "--image=busybox", "--", "cat",
        input=b"hi\n",
        timeout=120,
    )  # fmt: skip
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, (stdout, stderr)
    assert stdout.startswith("hi\n"), (stdout, stderr)
    assert f'pod "{name}" deleted' in stdout + stderr
    assert _gone(kubectl_exec.cluster, name)
