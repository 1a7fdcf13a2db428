"""The per-container shim: owns a container's stdio, writes its CRI log, serves attach.

Run as a program of its own (``python -I -S -c "…import runtime_shim;
runtime_shim.boot()" ARGS``, standard library only, so it starts in a few milliseconds
and stays small), it forks once into a session of its own
and is then nobody's child but init's: the node agent can restart without losing the
container, its output or its exit status. In the container's bundle it writes
``shim.pid``; ``exit`` (and ``oom``) once the container is gone, as the shell shim did.

The container is made with ``runc create`` and started with ``runc start``; the shim is
a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the container's init becomes its
child when ``runc create`` exits and its wait status is the container's exit code
(128+N for signal N, as ``runc run`` reports it). Its stdio:

* ``tty: true``: a pty. runc sends the master over ``console.sock`` (``--console-socket``,
  SCM_RIGHTS); the slave is the container's stdin, stdout and stderr. Output is logged
  as ``stdout``.
* otherwise pipes: stdout and stderr each its own, stdin a pipe when the spec asks for
  ``stdin`` (else ``/dev/null``).

Output goes to the log file in the CRI format (:func:`cri_line`, protocol.md 9.1): one
record per line, lines longer than 16 KiB split into ``P`` records; a partial last line
is written when the stream ends. Past ``max_log_bytes`` the shim writes one ``stderr``
record saying so and keeps no more output (attached clients still get all of it).

Attach is a unix socket, ``attach.sock`` in the bundle (protocol.md 9.4), with frames
of one kind byte and a 4-byte big-endian length (at most :data:`MAX_FRAME`): from a
client ``HELLO`` (payload ``1`` when it brings stdin), ``STDIN``, ``STDIN_EOF``,
``RESIZE`` (``!HH`` columns, rows: ``TIOCSWINSZ`` on the pty); to every client
``STDOUT``/``STDERR`` output from the moment it connected and ``EXIT`` (the exit code
as text) before the shim closes it.
With ``stdinOnce`` the container's stdin is closed when the first client that brought
stdin sends its EOF or goes away (for a pty: the terminal's EOF character, ``^D``, is
written, since the pty cannot be half-closed). Backpressure: while a client has more
than :data:`HIGH_WATER` unsent, the container's output is not read; while the
container's stdin has that much unwritten, clients' input is not read.
"""

from __future__ import annotations

# The C modules under socket, signal and selectors, and no array or typing: their Python
# layers (enum, collections, functools…) would cost each container's shim ~0.6 MiB more.
import _signal as signal
import _socket as socket
import ctypes
import errno
import fcntl
import os
import select
import struct
import sys
import termios
import time

HELLO, STDIN, STDIN_EOF, RESIZE = 0, 1, 2, 3
STDOUT, STDERR, EXIT = 1, 2, 4
MAX_FRAME = 64 * 1024
HIGH_WATER = 1 << 20
MAX_CLIENTS = 64
#: How long output is still read once the init exited.
DRAIN_AFTER_EXIT = 2.0
#: containerd's (and the kubelet's) maximum CRI log record: longer lines are split.
MAX_LINE = 16 * 1024
FRAME_HEADER = struct.Struct("!BI")
_INT = struct.Struct("i")  # a file descriptor in SCM_RIGHTS (not array: collections)
_PR_SET_CHILD_SUBREAPER = 36
_STREAMS = {STDOUT: b"stdout", STDERR: b"stderr"}


EVENT_READ, EVENT_WRITE = select.EPOLLIN, select.EPOLLOUT


class SelectorKey:
    """A registered file (``selectors.SelectorKey`` without the typing import)."""

    __slots__ = ("data", "events", "fd", "fileobj")

    def __init__(self, fileobj: object, fd: int, events: int, data: object) -> None:
        self.fileobj, self.fd, self.events, self.data = fileobj, fd, events, data


class Poller:
    """The part of ``selectors.EpollSelector`` the shim uses, on ``select.epoll``."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._keys: dict[int, SelectorKey] = {}

    def get_map(self) -> dict[int, SelectorKey]:
        return self._keys

    def register(self, fileobj: object, events: int, data: object = None) -> None:
        fd = _fd(fileobj)
        self._epoll.register(fd, events)
        self._keys[fd] = SelectorKey(fileobj, fd, events, data)

    def modify(self, fileobj: object, events: int, data: object = None) -> None:
        fd = _fd(fileobj)
        self._epoll.modify(fd, events)
        self._keys[fd] = SelectorKey(fileobj, fd, events, data)

    def unregister(self, fileobj: object) -> None:
        fd = _fd(fileobj)
        self._keys.pop(fd)
        self._epoll.unregister(fd)

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        ready = []
        for fd, mask in self._epoll.poll(-1 if timeout is None else max(timeout, 0)):
            key = self._keys.get(fd)
            if key is not None:
                # (hang-up and error wake a reader, as selectors reports them)
                if mask & (select.EPOLLHUP | select.EPOLLERR):
                    mask |= key.events
                ready.append((key, mask & (EVENT_READ | EVENT_WRITE)))
        return ready

    def close(self) -> None:
        self._epoll.close()


def _fd(fileobj: object) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()  # type: ignore[attr-defined]


def cri_time(ns: int) -> bytes:
    """RFC 3339 with nanoseconds in UTC, as containerd writes it."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode() + b".%09dZ" % frac


def cri_line(ns: int, stream: bytes, tag: bytes, content: bytes) -> bytes:
    """One CRI log record: ``TIME STREAM TAG CONTENT\\n`` (protocol.md 9.1)."""
    return b"%s %s %s %s\n" % (cri_time(ns), stream, tag, content)


class CriWriter:
    """Turns a stream's output into CRI records (per-stream partial lines kept)."""

    def __init__(self, fd: int, max_bytes: int, written: int = 0) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.written = written
        self.full = written >= max_bytes
        self._partial: dict[bytes, bytearray] = {}

    def feed(self, stream: bytes, data: bytes, now_ns: int | None = None) -> None:
        ns = time.time_ns() if now_ns is None else now_ns
        buf = self._partial.setdefault(stream, bytearray())
        buf += data
        records = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            end = nl if nl >= 0 else len(buf)
            while end - start >= MAX_LINE:
                records.append(cri_line(ns, stream, b"P", bytes(buf[start : start + MAX_LINE])))
                start += MAX_LINE
            if nl < 0:
                break
            records.append(cri_line(ns, stream, b"F", bytes(buf[start:nl])))
            start = nl + 1
        del buf[:start]
        self._write(records, ns)

    def finish(self, stream: bytes) -> None:
        """The stream ended: its partial last line becomes a record of its own."""
        buf = self._partial.pop(stream, None)
        if buf:
            ns = time.time_ns()
            self._write([cri_line(ns, stream, b"F", bytes(buf))], ns)

    def _write(self, records: list[bytes], ns: int) -> None:
        """As many whole records as the bound leaves room for; then the one that says
        the log is full (the file ends at most that record past the bound)."""
        if not records or self.full:
            return
        room = self.max_bytes - self.written
        kept = 0
        for record in records:
            if len(record) > room:
                break
            room -= len(record)
            kept += 1
        data = b"".join(records[:kept])
        if kept < len(records):
            self.full = True
            data += cri_line(
                ns,
                b"stderr",
                b"F",
                b"[hatchway: the log reached container_log_max_bytes (%d bytes);"
                b" later output of this container is not kept]" % self.max_bytes,
            )
        _write_all(self.fd, data)
        self.written += len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Client:
    """One attached connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.stdin = False
        self.hello = False
        self.closing = False


class Shim:
    def __init__(self, args: list[str]) -> None:
        (self.runc, self.state_root, self.bundle, self.cid, self.log_path) = args[:5]
        flags = args[5]
        self.tty, self.want_stdin, self.stdin_once = ("t" in flags, "i" in flags, "o" in flags)
        self.max_log = int(args[6])
        self.sel = Poller()
        self.clients: dict[int, Client] = {}
        self.outputs: dict[int, int] = {}  # fd → STDOUT/STDERR
        self.stdin_fd: int | None = None  # our end of the container's stdin
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        self.stdin_once_used = False
        self.init_pid = 0
        self.early: dict[int, int] = {}
        self.exit_code: int | None = None
        self.paused = False

    # --- start ------------------------------------------------------------------------

    def run(self) -> int:
        os.chdir(self.bundle)
        with open("shim.pid", "w") as f:
            f.write(f"{os.getpid()}\n")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        logfd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.log = CriWriter(logfd, self.max_log, os.fstat(logfd).st_size)
        listener = _listen("attach.sock")
        code = self._create()
        if code:
            return self._finish(code)
        code = self._reap_runc(self._spawn([*self._runc_argv(), "start", self.cid]))
        if code:
            self._kill_init()
        self.sel.register(wake_r, EVENT_READ, "wake")
        self.sel.register(listener, EVENT_READ, "listen")
        for fd in self.outputs:
            self.sel.register(fd, EVENT_READ, "output")
        self._loop(wake_r)
        return self._finish(self.exit_code if self.exit_code is not None else 255)

    def _create(self) -> int:
        """``runc create`` with the container's stdio; its exit code."""
        argv = [*self._runc_argv(), "create", "--bundle", self.bundle, "--pid-file", "init.pid"]
        console = None
        child_fds: list[int] = []
        if self.tty:
            console = _listen("console.sock")
            argv += ["--console-socket", "console.sock"]
            stdio = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)] * 3
            child_fds.append(stdio[0])
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if self.want_stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                self.stdin_fd = in_w
            else:
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            stdio = [in_r, out_w, err_w]
            child_fds += stdio
            self.outputs = {out_r: STDOUT, err_r: STDERR}
        code = self._reap_runc(self._spawn([*argv, self.cid], stdio))
        for fd in set(child_fds):
            os.close(fd)
        if code == 0 and console is not None:
            master = _receive_fd(console)
            if master is None:
                code = 1
            else:
                os.set_inheritable(master, False)
                self.outputs = {master: STDOUT}
                # A descriptor of its own for input (the same pty master): it is watched
                # for writing while input waits, the other for reading.
                self.stdin_fd = os.dup(master)
        if console is not None:
            console.close()
            _unlink("console.sock")
        if code == 0:
            with open("init.pid") as f:
                self.init_pid = int(f.read().strip())
            if self.init_pid in self.early:  # it ran and ended before runc did
                self._reaped(self.init_pid, self.early[self.init_pid])
            self.early.clear()
        for fd in (*self.outputs, self.stdin_fd):
            if fd is not None:
                os.set_blocking(fd, False)
        return code

    def _runc_argv(self) -> list[str]:
        return [self.runc, "--root", self.state_root, "--log", "runc.log", "--log-format", "json"]

    def _spawn(self, argv: list[str], stdio: list[int] | None = None) -> int:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        fds = stdio or [null, null, null]
        actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)]
        try:
            return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions)
        finally:
            os.close(null)

    def _reap_runc(self, pid: int) -> int:
        """Wait for runc; the container's init may be reaped on the way (it ran fast)."""
        while True:
            try:
                got, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 255
            if got == pid:
                return os.waitstatus_to_exitcode(status)
            self._reaped(got, status)

    def _reaped(self, pid: int, status: int) -> None:
        """A child's end: the init's is the container's exit code (128+N for signal N).
        Until ``init.pid`` is read, what is reaped is kept to be looked at then."""
        if not self.init_pid:
            self.early[pid] = status
        elif pid == self.init_pid:
            code = os.waitstatus_to_exitcode(status)
            self.exit_code = 128 - code if code < 0 else code

    def _kill_init(self) -> None:
        if self.init_pid and self.exit_code is None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- the loop ---------------------------------------------------------------------

    def _loop(self, wake_r: int) -> None:
        """Until the init is gone and its output read to the end (at most
        :data:`DRAIN_AFTER_EXIT` more: with ``hostPID`` a leftover process may hold it)."""
        deadline: float | None = None
        while self.outputs or self.exit_code is None:
            timeout = None
            if self.exit_code is not None:
                now = time.monotonic()
                deadline = deadline or now + DRAIN_AFTER_EXIT
                if now >= deadline:
                    break
                timeout = deadline - now
            for key, mask in self.sel.select(timeout):
                self._event(key, mask, wake_r)

    def _event(self, key: SelectorKey, mask: int, wake_r: int) -> None:
        what = key.data
        if what == "wake":
            _drain(wake_r)
            self._reap()
        elif what == "listen":
            self._accept(key.fileobj)  # type: ignore[arg-type]
        elif what == "output":
            self._output(key.fd)
        elif what == "stdin":
            self._flush_stdin()
        elif isinstance(what, Client):
            if mask & EVENT_READ:
                self._client_input(what)
            if mask & EVENT_WRITE and what.sock.fileno() >= 0:
                self._client_output(what)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            self._reaped(pid, status)

    def _output(self, fd: int) -> None:
        kind = self.outputs[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the pty's last slave closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        stream = _STREAMS[kind]
        if not data:
            self.sel.unregister(fd)
            del self.outputs[fd]
            self.log.finish(stream)
            os.close(fd)
            return
        self.log.feed(stream, data)
        frame = FRAME_HEADER.pack(kind, len(data)) + data
        for client in list(self.clients.values()):
            if client.hello:
                self._send(client, frame)
        self._pace()

    def _pace(self) -> None:
        """Stop reading the container while a client has too much unsent."""
        backed_up = any(len(c.outbuf) > HIGH_WATER for c in self.clients.values())
        if backed_up == self.paused:
            return
        self.paused = backed_up
        for fd in self.outputs:
            if backed_up:
                self.sel.unregister(fd)
            else:
                self.sel.register(fd, EVENT_READ, "output")

    # --- clients ----------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            fd, _ = listener._accept()
        except BlockingIOError:
            return
        sock = socket.socket(fileno=fd)
        if len(self.clients) >= MAX_CLIENTS or self.exit_code is not None:
            sock.close()
            return
        sock.setblocking(False)
        client = Client(sock)
        self.clients[sock.fileno()] = client
        self.sel.register(sock, EVENT_READ, client)

    def _events(self, client: Client) -> int:
        events = 0 if len(self.stdin_buf) > HIGH_WATER or client.closing else EVENT_READ
        return events | (EVENT_WRITE if client.outbuf else 0)

    def _update(self, client: Client) -> None:
        events = self._events(client)
        key = self.sel.get_map().get(client.sock.fileno())
        if events and key is None:
            self.sel.register(client.sock, events, client)
        elif events and key is not None:
            self.sel.modify(client.sock, events, client)
        elif key is not None:
            self.sel.unregister(client.sock)

    def _client_input(self, client: Client) -> None:
        try:
            data = client.sock.recv(MAX_FRAME + FRAME_HEADER.size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        while len(client.inbuf) >= FRAME_HEADER.size:
            kind, size = FRAME_HEADER.unpack_from(client.inbuf)
            if size > MAX_FRAME:
                self._drop(client)
                return
            if len(client.inbuf) < FRAME_HEADER.size + size:
                break
            payload = bytes(client.inbuf[FRAME_HEADER.size : FRAME_HEADER.size + size])
            del client.inbuf[: FRAME_HEADER.size + size]
            self._frame(client, kind, payload)
            if client.sock.fileno() < 0:
                return

    def _frame(self, client: Client, kind: int, payload: bytes) -> None:
        if kind == HELLO:
            client.hello = True
            client.stdin = payload == b"1" and self.stdin_fd is not None
        elif kind == STDIN and client.stdin and not self.stdin_closing:
            self.stdin_buf += payload
            self._flush_stdin()
        elif kind == STDIN_EOF:
            self._stdin_done(client)
        elif kind == RESIZE and self.tty and self.stdin_fd is not None and len(payload) == 4:
            cols, rows = struct.unpack("!HH", payload)
            try:
                fcntl.ioctl(
                    self.stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0)
                )
            except OSError:
                pass

    def _stdin_done(self, client: Client) -> None:
        """A client's stdin ended: with stdinOnce, so does the container's."""
        if client.stdin and self.stdin_once and not self.stdin_once_used:
            self.stdin_once_used = True
            if self.tty:
                self.stdin_buf += b"\x04"
                self._flush_stdin()
            self.stdin_closing = True
            self._flush_stdin()
        client.stdin = False

    def _flush_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            self.stdin_buf.clear()
            return
        while self.stdin_buf:
            try:
                n = os.write(fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the container closed its stdin
                self.stdin_buf.clear()
                self._close_container_stdin()
                return
            del self.stdin_buf[:n]
        registered = fd in self.sel.get_map() and self.sel.get_map()[fd].data == "stdin"
        if self.stdin_buf and not registered:
            self.sel.register(fd, EVENT_WRITE, "stdin")
        elif not self.stdin_buf and registered:
            self.sel.unregister(fd)
        if not self.stdin_buf and self.stdin_closing and not self.tty:
            self._close_container_stdin()
        for client in self.clients.values():
            self._update(client)

    def _close_container_stdin(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is None:
            return
        if fd in self.sel.get_map() and self.sel.get_map()[fd].data == "stdin":
            self.sel.unregister(fd)
        os.close(fd)

    def _send(self, client: Client, frame: bytes) -> None:
        client.outbuf += frame
        self._client_output(client)

    def _client_output(self, client: Client) -> None:
        while client.outbuf:
            try:
                n = client.sock.send(client.outbuf)
            except BlockingIOError:
                break
            except OSError:
                self._drop(client)
                return
            del client.outbuf[:n]
        if client.closing and not client.outbuf:
            self._drop(client)
            return
        self._update(client)
        if self.paused:
            self._pace()

    def _drop(self, client: Client) -> None:
        if client.sock.fileno() < 0:
            return
        self._stdin_done(client)
        if client.sock.fileno() in self.sel.get_map():
            self.sel.unregister(client.sock)
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()
        if self.paused:
            self._pace()

    # --- the end ----------------------------------------------------------------------

    def _say_exit(self, code: bytes, linger: float = 2.0) -> None:
        """Send each client what it has not got yet and ``EXIT``, then wait (at most
        ``linger``) for it to close: closing with its input unread would reset the
        connection, and the client could lose output it had not read yet."""
        clients = list(self.clients.values())
        for client in clients:
            self._drop_registration(client)
            client.sock.setblocking(True)
            client.sock.settimeout(linger)
            try:
                client.sock.sendall(
                    bytes(client.outbuf) + FRAME_HEADER.pack(EXIT, len(code)) + code
                )
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                client.sock.close()
            client.sock.setblocking(False)
        deadline = time.monotonic() + linger
        open_ = [c.sock for c in clients if c.sock.fileno() >= 0]
        while open_ and (left := deadline - time.monotonic()) > 0:
            ready = Poller()
            for sock in open_:
                ready.register(sock, EVENT_READ)
            for key, _ in ready.select(left):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    open_.remove(sock)  # type: ignore[arg-type]
                    sock.close()  # type: ignore[union-attr]
            ready.close()
        for sock in open_:
            sock.close()

    def _drop_registration(self, client: Client) -> None:
        if client.sock.fileno() in self.sel.get_map():
            self.sel.unregister(client.sock)

    def _finish(self, code: int) -> int:
        for stream in (b"stdout", b"stderr"):
            self.log.finish(stream)
        os.close(self.log.fd)
        _unlink("attach.sock")
        self._say_exit(b"%d" % code)
        for path in (
            f"/sys/fs/cgroup/memory/hatchway/{self.cid}/memory.oom_control",
            f"/sys/fs/cgroup/hatchway/{self.cid}/memory.events",
        ):
            if _oom_killed(path):
                open("oom", "w").close()
        with open("exit.tmp", "w") as f:
            f.write(f"{code}\n")
        os.replace("exit.tmp", "exit")
        return 0


def _listen(name: str) -> socket.socket:
    _unlink(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(name)
    os.chmod(name, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _receive_fd(console: socket.socket, timeout: float = 10) -> int | None:
    """The pty master runc sends over the console socket (SCM_RIGHTS)."""
    console.settimeout(timeout)
    try:
        fd, _ = console._accept()
    except OSError:
        return None
    conn = socket.socket(fileno=fd)
    fds: list[int] = []
    try:
        conn.settimeout(timeout)
        _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(_INT.size))
    except OSError:
        return None
    finally:
        conn.close()
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += (n for (n,) in _INT.iter_unpack(data[: len(data) - len(data) % _INT.size]))
    return fds[0] if fds else None


def _oom_killed(path: str) -> bool:
    try:
        with open(path) as f:
            return any(line.startswith("oom_kill ") and line.split()[1] != "0" for line in f)
    except (OSError, IndexError):
        return False


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def main(argv: list[str]) -> int:
    """``runtime_shim.py RUNC STATE_ROOT BUNDLE ID LOG FLAGS MAX_LOG``; FLAGS holds ``t``
    (tty), ``i`` (stdin), ``o`` (stdinOnce), or is ``-``."""
    if os.fork():
        return 0  # the launcher: the shim lives on without it
    os.setsid()
    try:
        return Shim(argv).run()
    except Exception as exc:  # nowhere else to say it: the runtime reads shim-error
        bundle = argv[2]
        try:
            with open(os.path.join(bundle, "shim-error"), "w") as f:
                f.write(f"shim failed: {type(exc).__name__}: {exc}\n")
            if not os.path.exists(os.path.join(bundle, "exit")):
                with open(os.path.join(bundle, "exit.tmp"), "w") as f:
                    f.write("255\n")
                os.replace(os.path.join(bundle, "exit.tmp"), os.path.join(bundle, "exit"))
        except OSError:
            pass
        return 1


def boot() -> None:
    """The program's entry point: ``main`` with its arguments, then exit."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    boot()
