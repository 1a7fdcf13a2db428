"""``hatchway exec --reuse`` (or ``HATCHWAY_EXEC_REUSE=1``), the client side: hand the
exec to a warm per-user daemon, in the spirit of OpenSSH's ControlMaster.

A one-shot ``hatchway exec`` spends most of its CPU importing asyncio, ssl, h11 and
websockets (bench/README.md "Where an exec's time goes"), which no per-process change
removes. With reuse, this module -- standard library only, nothing asyncio -- connects
to a daemon (:mod:`hatchway.cli.reuse_daemon`) on a unix socket, passes it the argv and
its stdin, stdout and stderr (``SCM_RIGHTS``), and exits with the status it answers. The
daemon has the modules loaded, the kubeconfig read and TLS connections to the API
server open, and runs the exec exactly as ``hatchway exec`` would.

Security: the socket lives in ``$XDG_RUNTIME_DIR/hatchway`` (else ``/tmp/hatchway-UID``),
a 0700 directory that must belong to us; the socket is 0600 and the daemon accepts only
peers of its own uid (``SO_PEERCRED``). Its name is a digest of the credentials' source
-- the kubeconfig files (absolute paths and modification times), the context asked for
and the uid -- and the daemon recomputes it from each request, so an exec only ever
runs with the credentials a direct run would have used; an edited kubeconfig gets a
new daemon. No privilege changes hands: the daemon is the user's own process.

When there is no daemon yet, one is started in the background and this exec runs
directly; a daemon that declines (another kubeconfig, a terminal session) also means a
direct run. The daemon exits after :data:`IDLE_SECONDS` without a session.
"""

from __future__ import annotations

# The C modules under ``socket`` and ``hashlib``: ``socket.py`` imports enum and
# selectors, ``hashlib`` OpenSSL's libcrypto -- together more than the interpreter's own
# start (callgrind), for the one connect, sendmsg and digest made here.
import _socket
import os
import stat
import sys

ENV = "HATCHWAY_EXEC_REUSE"
FLAG = "--reuse"
MAGIC = b"hatchway-exec-reuse/1\0"
#: A request (argv, cwd, environment values) is one datagram of at most this.
MAX_REQUEST = 64 * 1024
IDLE_SECONDS = 300.0
DIRECT = b"direct"
EXIT_PREFIX = b"exit:"


def wanted(argv: list[str], env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Reuse asked for: the variable, or ``--reuse`` among the options (before ``--``)."""
    if env.get(ENV, "") not in ("", "0"):
        return True
    options = argv[: argv.index("--")] if "--" in argv else argv
    return FLAG in options


def _scan(argv: list[str], name: str) -> str | None:
    """``--name VALUE`` / ``--name=VALUE`` before ``--``, as exec_args reads them (the
    daemon parses the argv fully and declines when it reads something else)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1] or None
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1] or None
    return None


def credential_source(
    kubeconfig: str | None, context: str | None, kubeconfig_env: str, home: str, cwd: str
) -> list[str]:
    """What decides the credentials of an exec: the kubeconfig files kubectl would read
    (as client.kubeconfig_file.kubeconfig_paths picks them; absolute, with size and
    modification time), the context asked for, and the uid."""
    if kubeconfig:
        paths = [kubeconfig]
    else:
        paths = [p for p in dict.fromkeys(kubeconfig_env.split(os.pathsep)) if p]
        paths = paths or [os.path.join(home or os.path.expanduser("~"), ".kube", "config")]
    fields = ["v1", str(os.getuid()), context or ""]
    for path in paths:
        full = os.path.normpath(os.path.join(cwd, path))
        try:
            info = os.stat(full)
            fields += [full, f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"]
        except OSError:
            fields += [full, "-"]
    return fields


def socket_path(fields: list[str]) -> str | None:
    """The daemon's socket for these credentials, in a private directory of ours; None
    when no such directory can be had."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    directory = os.path.join(runtime, "hatchway") if runtime else f"/tmp/hatchway-{os.getuid()}"
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # not ours alone: never trust a socket in it
    digest = _sha256("\0".join(fields).encode("utf-8", "surrogateescape"))
    # 64 bits name the file; the daemon checks the whole source of every request.
    path = os.path.join(directory, f"exec-{digest[:16]}.sock")
    return path if len(path.encode()) < 108 else None  # sun_path: 108 bytes with the NUL


def _sha256(data: bytes) -> str:
    try:
        from _sha256 import sha256  # CPython 3.11; _sha2 from 3.12
    except ImportError:
        from hashlib import sha256
    return sha256(data).hexdigest()


def _start_daemon(path: str, kubeconfig: str | None, context: str | None) -> None:
    argv = [sys.executable, "-m", "hatchway", "exec-reuse-daemon", "--socket", path]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    null = os.devnull
    actions = [(os.POSIX_SPAWN_OPEN, fd, null, os.O_RDWR, 0) for fd in (0, 1, 2)]
    try:
        os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions, setsid=True)
    except OSError:
        pass  # this exec runs directly all the same


def _request(argv: list[str]) -> bytes:
    values = [os.getcwd(), os.environ.get("KUBECONFIG", ""), os.environ.get("HOME", ""), *argv]
    return MAGIC + "\0".join(values).encode("utf-8", "surrogateescape")


def run(argv: list[str]) -> int | None:
    """Run ``hatchway exec ARGV`` through the daemon: its exit status, or None to run
    it directly."""
    kubeconfig, context = _scan(argv, "kubeconfig"), _scan(argv, "context")
    env = os.environ
    cwd = os.getcwd()
    fields = credential_source(
        kubeconfig, context, env.get("KUBECONFIG", ""), env.get("HOME", ""), cwd
    )
    path = socket_path(fields)
    request = _request(argv)
    if path is None or len(request) > MAX_REQUEST:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            _start_daemon(path, kubeconfig, context)
            return None
        except OSError:
            return None
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))  # int[3]
        try:
            sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        except OSError:
            return None  # nothing started (a closed stdin, say): run it directly
        answer = sock.recv(64)
    except KeyboardInterrupt:
        return 130  # the daemon sees us go and ends the session, as a direct run would
    except OSError:
        answer = b""
    finally:
        sock.close()
    if answer == DIRECT:
        return None
    if answer.startswith(EXIT_PREFIX) and answer[len(EXIT_PREFIX) :].isdigit():
        return int(answer[len(EXIT_PREFIX) :])
    os.write(2, b"error: the exec reuse daemon ended before the command did\n")
    return 1
