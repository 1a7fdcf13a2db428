"""``hatchway exec`` end to end: pipes, stdin with EOF, a real pty with a resize and
raw mode restored, exit codes, every error path with a clear message, and what it
imports."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import pathlib
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid

import pytest
import yaml

from cluster import SCALE, Cluster


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    return cluster.pod()


def _fails(result: subprocess.CompletedProcess[bytes], fragment: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 1, (result.stdout, err)
    assert fragment in err, err
    assert "Traceback" not in err


def test_exit_status_and_streams(cluster: Cluster, pod: str) -> None:
    result = cluster.hatchway("exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 42")
    assert result.returncode == 42
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\ncommand terminated with exit code 42\n"
    assert cluster.hatchway("exec", pod, "--", "true").returncode == 0


def test_stdin_with_eof(cluster: Cluster, pod: str) -> None:
    data = os.urandom(3 << 20)
    result = cluster.hatchway("exec", "-i", pod, "--", "sh", "-c", "md5sum; echo done", input=data)
    assert result.returncode == 0, result.stderr
    digest, _, rest = result.stdout.decode().partition(" ")
    assert digest == hashlib.md5(data).hexdigest() and rest.endswith("done\n")
    # -it without a terminal: kubectl's warning, then no tty
    result = cluster.hatchway("exec", "-it", pod, "--", "sh", "-c", "cat; tty", input=b"abc")
    assert result.stdout.startswith(b"abc") and b"not a tty" in result.stdout
    assert b"Unable to use a TTY" in result.stderr


def test_full_duplex_over_tls(cluster: Cluster, pod: str) -> None:
    """stdin and stdout at once on the one TLS socket (the blocking client: a thread
    sending, the main thread receiving): every byte back, in order."""
    data = os.urandom(24 << 20)
    result = cluster.hatchway("exec", "-i", pod, "--", "cat", input=data, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()


def test_a_session_that_ends_first_does_not_wait_for_stdin(cluster: Cluster, pod: str) -> None:
    """The command exits while stdin stays open and unread: the client exits too (its
    stdin reader is a daemon thread) and does not read the user's next input."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hatchway", "exec", "-i", pod, "--", "sh", "-c", "echo bye"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
    )
    try:
        out, err = proc.communicate(timeout=60 * SCALE)  # stdin never closed by us
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == b"bye\n"


def test_interrupted_exec_ends_the_session(cluster: Cluster, pod: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hatchway", "exec", pod, "--", "sh", "-c", "echo ready; sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30 * SCALE) == 130
    finally:
        proc.kill()
        proc.wait()


def test_stdin_from_a_file_and_dev_null(cluster: Cluster, pod: str, tmp_path: pathlib.Path) -> None:
    """A pipe is read from the event loop; what epoll cannot poll (a regular file,
    /dev/null) falls back to a thread: every byte and the EOF arrive either way."""
    data = os.urandom((1 << 20) + 12345)
    path = tmp_path / "input"
    path.write_bytes(data)
    argv = [
        sys.executable,
        "-m",
        "hatchway",
        "exec",
        "-i",
        pod,
        "--",
        "sh",
        "-c",
        "md5sum; echo done",
    ]
    for source, expected in ((path, data), (os.devnull, b"")):
        with open(source, "rb") as stdin:
            result = subprocess.run(
                argv, env=cluster.env, stdin=stdin, capture_output=True, timeout=60 * SCALE
            )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == f"{hashlib.md5(expected).hexdigest()}  -\ndone\n"


def test_timing_line_names_every_phase(cluster: Cluster, pod: str) -> None:
    env = {**cluster.env, "HATCHWAY_TIMING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hatchway", "exec", pod, "--", "echo", "hi"],
        capture_output=True,
        env=env,
        timeout=60 * SCALE,
    )
    assert result.returncode == 0 and result.stdout == b"hi\n", result.stderr
    line = result.stderr.decode().strip()
    assert line.startswith("timing (ms): "), line
    phases = [part.rsplit(" ", 1) for part in line.removeprefix("timing (ms): ").split(" | ")]
    names = [name for name, _ in phases]
    assert names == [
        "start", "kubeconfig", "connect", "pod get", "upgrade", "first output", "output",
        "exit status", "teardown", "total",
    ]  # fmt: skip
    values = [float(value) for _, value in phases]
    assert all(v >= 0 for v in values) and values[-1] >= max(values[:-1])
    # Off by default: nothing but the command's own output.
    quiet = cluster.hatchway("exec", pod, "--", "true")
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_seed_form_without_dashes(cluster: Cluster, pod: str) -> None:
    result = cluster.hatchway("exec", pod, "-c", "main", "sh", "-c", "echo $0-$1", "a", "-n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"a--n\n"
    result = cluster.hatchway("exec", f"pod/{pod}", "--", "echo", "ok")
    assert result.stdout == b"ok\n"


def test_defaulted_container_notice(cluster: Cluster) -> None:
    containers = [
        {"name": "app", "image": "busybox", "command": ["sleep", "3600"]},
        {"name": "side", "image": "busybox", "command": ["sleep", "3600"]},
    ]
    name = cluster.pod(containers=containers)
    result = cluster.hatchway("exec", name, "--", "true")
    assert result.stderr == b'Defaulted container "app" out of: app, side\n'
    assert cluster.hatchway("exec", "-q", name, "--", "true").stderr == b""
    result = cluster.hatchway("exec", "-c", "side", name, "--", "true")
    assert result.returncode == 0 and result.stderr == b""


def _kubeconfig_variant(cluster: Cluster, tmp_path: pathlib.Path, **cluster_fields: str) -> str:
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    doc["clusters"][0]["cluster"].update(cluster_fields)
    path = tmp_path / f"{uuid.uuid4().hex}.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_error_paths(cluster: Cluster, pod: str, tmp_path: pathlib.Path) -> None:
    _fails(
        cluster.hatchway("exec", "ghost", "--", "true"),
        'Error from server (NotFound): pods "ghost" not found',
    )
    _fails(
        cluster.hatchway("exec", pod, "-c", "bogus", "--", "true"),
        f"Error from server (BadRequest): container bogus is not valid for pod {pod}",
    )
    _fails(cluster.hatchway("exec", pod), "you must specify at least one command")
    done = cluster.pod(command=("true",), restartPolicy="Never", wait=False)
    cluster.wait_phase(done, ("Succeeded",))
    _fails(
        cluster.hatchway("exec", done, "--", "true"),
        "error: cannot exec into a container in a completed pod; current phase is Succeeded",
    )
    waiting = cluster.pod(containers=[{"name": "w", "image": "no-such-image:1"}], wait=False)
    deadline = time.monotonic() + 30 * SCALE
    while time.monotonic() < deadline:
        result = cluster.hatchway("exec", waiting, "--", "true")
        if b"waiting to start" in result.stderr or b"not running" in result.stderr:
            break
        time.sleep(0.3)
    _fails(result, f'container "w" in pod "{waiting}"')


def test_connection_errors(cluster: Cluster, pod: str, tmp_path: pathlib.Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the with ends: nobody listens
    refused = _kubeconfig_variant(cluster, tmp_path, server=f"https://127.0.0.1:{port}")
    _fails(
        cluster.hatchway("exec", "--kubeconfig", refused, pod, "--", "true"),
        f"The connection to the server 127.0.0.1:{port} was refused",
    )
    from hatchway import pki

    other = pki.create_ca(tmp_path / "other-ca")
    import base64

    wrong_ca = _kubeconfig_variant(
        cluster,
        tmp_path,
        **{"certificate-authority-data": base64.b64encode(other.cert.read_bytes()).decode()},
    )
    _fails(
        cluster.hatchway("exec", "--kubeconfig", wrong_ca, pod, "--", "true"),
        "Unable to connect to the server: tls: failed to verify certificate: x509: "
        "certificate signed by unknown authority",
    )
    _fails(
        cluster.hatchway("exec", "--context", "nope", pod, "--", "true"), 'context "nope" not found'
    )


# ------------------------------------------------------------------------------ tty


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout * SCALE
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in {seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF before {needle!r}; got {seen!r}")
            seen += chunk
    return seen


def _spawn_in_pty(cluster: Cluster, *args: str) -> tuple[subprocess.Popen[bytes], int, int]:
    master, slave = os.openpty()
    _set_size(slave, 33, 101)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hatchway", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cluster.env,
        close_fds=True,
    )
    return proc, master, slave


def _poke_until(master: int, needle: bytes) -> bytes:
    """Send Enter until ``needle`` shows up (the remote prints its size per line)."""
    deadline = time.monotonic() + 30 * SCALE
    while True:
        os.write(master, b"\r")
        try:
            return _read_until(master, needle, 0.5)
        except AssertionError:
            assert time.monotonic() < deadline, f"{needle!r} never came"


def test_tty_resize_and_raw_mode_restored(cluster: Cluster, pod: str) -> None:
    # The initial size may reach the remote pty just after the command starts (as with
    # the kubelet), and busybox stty wants the tty as its stdout: print it on each line.
    script = "while :; do stty size; read x || exit 3; done"
    proc, master, slave = _spawn_in_pty(cluster, "exec", "-it", pod, "--", "sh", "-c", script)
    before = termios.tcgetattr(slave)
    try:
        _poke_until(master, b"33 101")
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0  # raw while running
        _set_size(slave, 40, 120)
        proc.send_signal(signal.SIGWINCH)
        out = _poke_until(master, b"40 120")
        os.write(master, b"\x04")  # ^D: the remote pty's EOF ends the loop
        assert proc.wait(30 * SCALE) == 3
        assert b"\r\n" in out  # the remote pty's output processing, passed through raw
        assert termios.tcgetattr(slave) == before
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_tty_resizes_while_output_flows(cluster: Cluster, pod: str) -> None:
    """Resizes signalled while the reader is in its receive and the container writes:
    no signal cuts the session (a SIGWINCH that interrupted the reader's SSL_read raced
    the resize thread's SSL_write on the one TLS connection, and the session ended),
    and the last size the terminal had reaches the container."""
    script = "while :; do stty size; read x || exit 3; done"
    proc, master, slave = _spawn_in_pty(cluster, "exec", "-it", pod, "--", "sh", "-c", script)
    try:
        _poke_until(master, b"33 101")
        seen = b""
        for i in range(300):
            _set_size(slave, 20 + i % 13, 60 + i % 17)
            proc.send_signal(signal.SIGWINCH)
            if i % 2:
                os.write(master, b"\r")
            time.sleep(0.005)  # the reader back in its receive
            seen = (seen + _drain(master))[-2000:]
            assert proc.poll() is None, seen + _drain(master)
        _set_size(slave, 40, 120)
        proc.send_signal(signal.SIGWINCH)
        _poke_until(master, b"40 120")
        os.write(master, b"\x04")
        assert proc.wait(30 * SCALE) == 3
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


def test_tty_restored_when_killed(cluster: Cluster, pod: str) -> None:
    proc, master, slave = _spawn_in_pty(
        cluster, "exec", "-it", pod, "--", "sh", "-c", "echo ready; sleep 60"
    )
    before = termios.tcgetattr(slave)
    try:
        _read_until(master, b"ready", 30)
        assert termios.tcgetattr(slave) != before
        proc.send_signal(signal.SIGTERM)
        proc.wait(30 * SCALE)
        assert termios.tcgetattr(slave) == before
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


def test_tty_stdin_reaches_remote(cluster: Cluster, pod: str) -> None:
    proc, master, slave = _spawn_in_pty(
        cluster, "exec", "-it", pod, "--", "sh", "-c", "echo go; read line; echo got:$line"
    )
    try:
        _read_until(master, b"go", 30)
        os.write(master, b"hello\r")
        _read_until(master, b"got:hello", 30)
        assert proc.wait(30 * SCALE) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


# -------------------------------------------------------------------------- imports

HEAVY = (
    "hatchway.apiserver",
    "hatchway.node",
    "hatchway.store",
    "hatchway.pki",
    "cryptography",
    "sqlite3",
    "uvloop",
)


def test_exec_help_imports_little() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hatchway", "exec", "--help"],
        capture_output=True,
        timeout=60 * SCALE,
    )
    assert result.returncode == 0 and b"hatchway exec" in result.stdout
    modules = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()}
    loaded = {m for m in modules if m.startswith((*HEAVY, "yaml", "hatchway.client", "h11"))}
    assert not loaded, loaded


@pytest.mark.parametrize("path", ["blocking", "asyncio"])
def test_exec_imports_only_what_it_needs(
    cluster: Cluster, pod: str, tmp_path: pathlib.Path, path: str
) -> None:
    dump = tmp_path / "modules.txt"
    code = (
        "import atexit, sys\n"
        "import gc\n"
        f"atexit.register(lambda: open({str(dump)!r}, 'w').write("
        "'\\n'.join([*sys.modules, f'gc-enabled={gc.isenabled()}'])))\n"
        "from hatchway.cli.main import main\n"
        f"main(['exec', {pod!r}, '--', 'true'])\n"
    )
    env = dict(cluster.env)
    if path == "asyncio":
        env["HATCHWAY_EXEC_ASYNCIO"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=60 * SCALE
    )
    assert result.returncode == 0, result.stderr
    modules = dump.read_text().split()
    assert "gc-enabled=True" in modules  # paused for the imports only
    assert not [m for m in modules if m.startswith(HEAVY)], modules
    # A kubeconfig as Hatchway writes it is read without PyYAML; no HTTP server code,
    # no kubeconfig writer; websockets without importlib.metadata, certificates loaded
    # without tempfile (cli/startup.py, transport/tls.py).
    unneeded = ("yaml", "hatchway.transport.http", "hatchway.client.kubeconfig_write")
    unneeded += ("importlib.metadata", "tempfile")
    if path == "blocking":
        # Nor what the blocking path avoids to start sooner (bench/README.md "Where an
        # exec's time goes"): typing, urllib.parse (and its ipaddress), hashlib and
        # random (secrets), the idna codec; without a terminal, no termios; the ssl,
        # socket and signal modules (their C modules only: transport/tls_core.py); the
        # masking extension's loader (importlib, warnings) for a session that sends
        # nothing larger than its close frame (protocol/websocket_mask.py).
        unneeded += ("typing", "urllib.parse", "ipaddress", "hashlib", "random", "secrets")
        unneeded += ("encodings.idna", "termios", "hatchway.cli.terminal")
        unneeded += ("ssl", "socket", "signal", "selectors", "importlib.machinery", "warnings")
    assert not [m for m in modules if m in unneeded], modules
    if path == "asyncio":
        assert "hatchway.client.exec" in modules
        assert "hatchway.client.blocking" not in modules
    else:
        # The blocking client: no event loop, no h11, no websockets package at all.
        assert "hatchway.client.blocking" in modules
        loops = ("asyncio", "h11", "websockets", "hatchway.client.exec", "hatchway.rest")
        assert not [m for m in modules if m.split(".")[0] in loops or m in loops], modules


@pytest.mark.parametrize("path", ["blocking", "asyncio"])
def test_names_cannot_steer_the_request(cluster: Cluster, pod: str, path: str) -> None:
    # Before: the names went into the path as they were. 'POD?' read the pod (its
    # query empty), then the upgrade went to '/pods/POD?/exec?command=…': the exec's
    # own query after the name's. A '/' in a namespace reached another resource.
    env = {**cluster.env, "HATCHWAY_EXEC_ASYNCIO": "1" if path == "asyncio" else "0"}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "hatchway", "exec", *args]
        return subprocess.run(argv, capture_output=True, env=env, timeout=60 * SCALE)

    _fails(run(f"{pod}?x=1", "--", "true"), f'pods "{pod}?x=1" not found')
    steer = "default/pods/demo/exec?command=id&x="
    wanted = f"error: invalid namespace \"{steer}\": [may not contain '/']"
    _fails(run("-n", steer, pod, "--", "true"), wanted)


@pytest.mark.parametrize("path", ["blocking", "asyncio"])
def test_tls_server_name_is_the_name_checked(
    cluster: Cluster, pod: str, path: str, tmp_path: pathlib.Path
) -> None:
    # kubeconfig's tls-server-name: the server's certificate is checked against it (and
    # it is sent as SNI) instead of the URL's host, as client-go's TLSClientConfig.ServerName.
    # The API server's certificate names localhost and 127.0.0.1, not api.test.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://127.0.0.1:")

    def run_with(name: str | None) -> tuple[subprocess.CompletedProcess[bytes], ...]:
        changed = yaml.safe_load(cluster.kubeconfig.read_text())
        entry = changed["clusters"][0]["cluster"]
        if name is not None:
            entry["tls-server-name"] = name
        path_ = tmp_path / f"kubeconfig-{uuid.uuid4().hex}"
        path_.write_text(yaml.safe_dump(changed))
        env = {**cluster.env, "KUBECONFIG": str(path_)}
        env["HATCHWAY_EXEC_ASYNCIO"] = "1" if path == "asyncio" else "0"
        ours = subprocess.run(
            [sys.executable, "-m", "hatchway", "exec", pod, "--", "echo", "ok"],
            capture_output=True, env=env, timeout=60 * SCALE,
        )  # fmt: skip
        theirs = subprocess.run(
            ["kubectl", "exec", pod, "--", "echo", "ok"],
            capture_output=True, env=env, timeout=60 * SCALE,
        )  # fmt: skip
        return ours, theirs

    for name in ("localhost", None):  # a name the certificate has; none (the host's)
        ours, theirs = run_with(name)
        assert ours.returncode == 0 and ours.stdout == b"ok\n", ours.stderr
        assert theirs.returncode == 0 and theirs.stdout == b"ok\n", theirs.stderr
    ours, theirs = run_with("api.test")  # one it has not: refused by both
    _fails(ours, "Unable to connect to the server: tls: failed to verify certificate: x509")
    assert theirs.returncode == 1 and b"x509" in theirs.stderr, theirs.stderr
    assert b"ok" not in ours.stdout
    # Nothing but a DNS name or an IP address is taken.
    ours, _ = run_with("api.test/../x")
    _fails(ours, "invalid tls-server-name 'api.test/../x'")


def test_an_exec_credential_plugin_signs_in_as_with_kubectl(
    cluster: Cluster, pod: str, tmp_path: pathlib.Path
) -> None:
    # The admin kubeconfig's client certificate, handed out by an exec plugin (v1) instead
    # of sitting in the file: hatchway (both exec paths) and kubectl 1.32 sign in with it;
    # a plugin whose token the server does not know gets both the same 401.
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = admin["users"][0]["user"]
    cert = base64.b64decode(user["client-certificate-data"]).decode()
    key = base64.b64decode(user["client-key-data"]).decode()
    plugin = tmp_path / "plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"status = {{'clientCertificateData': {cert!r}, 'clientKeyData': {key!r}}}\n"
        "if os.environ.get('BOGUS'): status = {'token': 'not-a-token'}\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': status}))\n"
    )
    plugin.chmod(0o700)
    admin["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                 "interactiveMode": "Never"},
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(admin))

    def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[bytes]:
        full = {**cluster.env, "KUBECONFIG": str(path), **env}
        return subprocess.run(argv, capture_output=True, env=full, timeout=60 * SCALE)

    ours = [sys.executable, "-m", "hatchway", "exec", pod, "--", "echo", "ok"]
    theirs = ["kubectl", "exec", pod, "--", "echo", "ok"]
    for argv, env in ((ours, {}), (ours, {"HATCHWAY_EXEC_ASYNCIO": "1"}), (theirs, {})):
        result = run(argv, **env)
        assert result.returncode == 0 and result.stdout == b"ok\n", result.stderr
        refused = run(argv, BOGUS="1", **env)
        assert refused.returncode == 1 and b"You must be logged in" in refused.stderr
