"""``hatchway exec --reuse``: the same exec through a warm per-user daemon -- same
output, exit codes and stdin; a private socket; other uids refused; a client killed
mid-command ends the command; a daemon per credential source; idle exit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from cluster import SCALE, Cluster
from hatchway.cli import reuse, reuse_daemon


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    return cluster.pod()


def _daemon_pids(runtime: pathlib.Path) -> list[int]:
    pids = []
    for lock in (runtime / "hatchway").glob("*.sock.lock"):
        text = lock.read_text().strip()
        if text.isdigit() and os.path.exists(f"/proc/{text}"):
            pids.append(int(text))
    return pids


@pytest.fixture
def runtime(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A private XDG_RUNTIME_DIR; the daemons started in it are stopped afterwards."""
    directory = tmp_path / "xdg"
    directory.mkdir(mode=0o700)
    yield directory
    pids = _daemon_pids(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10 * SCALE
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _env(cluster: Cluster, runtime: pathlib.Path) -> dict[str, str]:
    return {**cluster.env, "XDG_RUNTIME_DIR": str(runtime)}


def _run(
    env: dict[str, str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "hatchway", "exec", "--reuse", *args]
    return subprocess.run(argv, input=input, capture_output=True, env=env, timeout=60 * SCALE)


def _warm(env: dict[str, str], pod: str, runtime: pathlib.Path) -> pathlib.Path:
    """The first exec runs directly and starts the daemon; its socket, once listening."""
    assert _run(env, pod, "--", "true").returncode == 0
    deadline = time.monotonic() + 30 * SCALE
    while time.monotonic() < deadline:
        sockets = list((runtime / "hatchway").glob("*.sock"))
        if sockets and _daemon_pids(runtime):
            return sockets[0]
        time.sleep(0.05)
    raise AssertionError("no exec reuse daemon came up")


def test_reuse_runs_as_a_direct_exec(cluster: Cluster, pod: str, runtime: pathlib.Path) -> None:
    env = _env(cluster, runtime)
    _warm(env, pod, runtime)
    script = "echo out; echo err >&2; exit 42"
    result = _run(env, pod, "--", "sh", "-c", script)
    direct = cluster.hatchway("exec", pod, "--", "sh", "-c", script)
    assert (result.returncode, result.stdout, result.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )
    assert result.stderr == b"err\ncommand terminated with exit code 42\n"
    data = os.urandom(1 << 20)
    result = _run(env, "-i", pod, "--", "md5sum", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    # an error is reported as the direct run reports it
    result = _run(env, "no-such-pod", "--", "true")
    assert result.returncode == 1 and b'pods "no-such-pod" not found' in result.stderr


def test_reuse_client_imports_no_asyncio(
    cluster: Cluster, pod: str, runtime: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Served by the daemon: the client process never loads the exec machinery."""
    env = _env(cluster, runtime)
    _warm(env, pod, runtime)
    dump = tmp_path / "modules.txt"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(dump)!r}, 'w').write('\\n'.join(sys.modules)))\n"
        "from hatchway.cli.main import main\n"
        f"main(['exec', '--reuse', {pod!r}, '--', 'sh', '-c', 'exit 7'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert result.returncode == 7, result.stderr
    modules = dump.read_text().split()
    assert "hatchway.cli.reuse" in modules
    assert not [m for m in modules if m.startswith(("asyncio", "ssl", "h11", "websockets"))]


def test_socket_is_private(cluster: Cluster, pod: str, runtime: pathlib.Path) -> None:
    sock = _warm(_env(cluster, runtime), pod, runtime)
    assert (sock.parent.stat().st_mode & 0o777) == 0o700
    assert (sock.stat().st_mode & 0o777) == 0o600


def test_killed_client_ends_the_command(cluster: Cluster, pod: str, runtime: pathlib.Path) -> None:
    env = _env(cluster, runtime)
    _warm(env, pod, runtime)
    tag = str(3000 + uuid.uuid4().int % 1000)
    argv = [sys.executable, "-m", "hatchway", "exec", "--reuse", pod, "--"]
    argv += ["sh", "-c", f"echo started; exec sleep {tag}"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15 * SCALE
    while time.monotonic() < deadline:
        ps = cluster.hatchway("exec", pod, "--", "ps", "-o", "args")
        if f"sleep {tag}".encode() not in ps.stdout:
            return
        time.sleep(0.2)
    raise AssertionError(f"sleep {tag} still runs after its client was killed")


def test_a_daemon_per_credential_source(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("a")
    first = reuse.credential_source(str(kubeconfig), None, "", "", "/")
    assert first == reuse.credential_source(None, None, str(kubeconfig), "", "/")
    assert first != reuse.credential_source(str(kubeconfig), "other", "", "", "/")
    os.utime(kubeconfig, ns=(0, 0))
    assert first != reuse.credential_source(str(kubeconfig), None, "", "", "/")
    relative = reuse.credential_source("config", None, "", "", str(tmp_path))
    assert relative == reuse.credential_source(str(kubeconfig), None, "", "", "/")


def test_reuse_is_asked_for() -> None:
    assert reuse.wanted(["--reuse", "pod", "--", "true"], {})
    assert reuse.wanted(["pod", "--", "true"], {reuse.ENV: "1"})
    assert not reuse.wanted(["pod", "--", "echo", "--reuse"], {})
    assert not reuse.wanted(["pod", "--", "true"], {reuse.ENV: "0"})


def test_socket_dir_not_ours_alone_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "hatchway"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert reuse.socket_path(["x"]) is None
    shared.chmod(0o700)
    assert reuse.socket_path(["x"]) is not None


@pytest.mark.skipif(os.getuid() != 0, reason="setuid to another user needs root")
def test_other_uid_is_dropped_unread() -> None:
    """SO_PEERCRED: a peer of another uid gets the connection closed, nothing read."""
    # Reachable by the other user (pytest's tmp_path is 0700 all the way).
    directory = pathlib.Path(tempfile.mkdtemp(prefix="hw-reuse-"))
    directory.chmod(0o755)
    path = str(directory / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(1)
    listener.settimeout(30 * SCALE)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.setuid(65534)
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            peer.connect(path)
            try:
                socket.send_fds(peer, [reuse.MAGIC + b"/\0\0\0pod\0--\0true"], [0, 1, 2])
                status = 0 if peer.recv(64) == b"" else 2
            except (BrokenPipeError, ConnectionResetError):  # closed, our request unread
                status = 0
        finally:
            os._exit(status)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        os.waitpid(child, 0)
        raise
    assert reuse_daemon.peer_uid(conn) == 65534

    async def serve() -> None:
        daemon = reuse_daemon.Daemon(client=None, source=[], idle=1.0)
        conn.setblocking(False)
        await daemon.serve(conn)

    asyncio.run(serve())
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    listener.close()
    shutil.rmtree(directory)


def test_daemon_exits_when_idle(cluster: Cluster, runtime: pathlib.Path) -> None:
    directory = runtime / "hatchway"
    directory.mkdir(mode=0o700)
    sock = directory / "exec-test.sock"
    argv = [sys.executable, "-m", "hatchway", "exec-reuse-daemon", "--socket", str(sock)]
    proc = subprocess.Popen([*argv, "--idle", "0.5"], env=cluster.env)
    try:
        assert proc.wait(timeout=30 * SCALE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not sock.exists()
