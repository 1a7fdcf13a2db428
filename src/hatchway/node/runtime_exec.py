"""``runc exec`` as an asyncio process: pipes or a pty, backpressure, exit codes, kill.

``runc exec -d`` passes its stdio straight to the process (our pipes are the process's
pipes) or, with a TTY, hands out the pty master over ``--console-socket`` (it arrives here
by SCM_RIGHTS). runc is started by the node's long-lived exec helper
(:mod:`hatchway.node.runtime_execshim`, a child subreaper), which collects the process's
exit status (128+N when killed by signal N). In containers that have the exec init (see
:mod:`hatchway.node.runtime_tree`), the command runs as ``tini -s -- argv`` and ``pid``
is tini's; ``kill()`` kills the whole tree, background and setsid'd children included,
leaving no zombie in the container, and the helper holds a copy of stdin so that only
the agent's ``close_stdin()`` ends it. Given a cgroup of its own (``cgroup=``, made by the
runtime: :func:`runtime_tree.make_exec_cgroup`), the exec runs in it (``runc exec
--cgroup``), the kill takes everything in it too, and it is removed once empty: at the
exit, or after a kill. Background processes that outlive a normal exit keep it (and the
exec record says ``ended``), as Kubernetes leaves them running.

Reading semantics (what the exec endpoint relies on):

* ``read_stdout``/``read_stderr`` return data as it comes, ``b""`` at EOF. Once the
  process has exited they return what is immediately readable and then ``b""``, even if a
  background child still holds the pipe open (``sh -c 'sleep 100 & echo hi'``).
* ``wait()`` returns the exit code only after the process exited **and** what it wrote
  has been read: while a stream still holds unread bytes, ``wait()`` waits for its reader
  (so read stdout/stderr concurrently, until ``b""``). Streams not asked for
  (``ExecOptions.stdout`` false) go to /dev/null. ``close()`` releases fds and temporary files.
* A command that cannot be started (not found, not executable) is not an exception: the
  process reports 127 (not found) or 126 (not executable) and ``error_message`` holds
  runc's message, so the endpoint can put it on stderr or in the status. Its output
  streams are empty. Other runtime failures raise ContainerRuntimeError.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import posixpath
import shutil
import socket
import stat
import struct
import tempfile
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence

from hatchway.errors import ContainerRuntimeError
from hatchway.node.runtime_execshim import ExecHelper, ExecHelperError
from hatchway.node.runtime_host import runc_error
from hatchway.node.runtime_tree import (
    ExecCgroup,
    Root,
    kill_step,
    process_tree,
    remove_exec_cgroup,
)
from hatchway.node.runtime_tree import stat as _stat  # noqa: F401  (tests use it)
from hatchway.types import ExecOptions

__all__ = ["ExecProcess", "process_tree", "resolves_in", "start_exec", "start_exec_helper"]

log = logging.getLogger(__name__)

#: PATH directories :func:`resolves_in` looks in at most (more: exec without tini).
MAX_PATH_DIRS = 64
#: Rounds of the kill order (runtime_tree.kill_step) before giving up on a tree.
KILL_ROUNDS = 2000
TTY_DRAIN_GRACE = 0.05  # pty output reaches the master through a kernel work queue
#: Buffers one ``write_stdin_nowait`` hands to ``writev`` at most (more: the slow path).
MAX_WRITEV = 64


def _read_once(fd: int, max_bytes: int) -> bytes | None:
    """One read of a non-blocking pipe or pty: the bytes, ``None`` while it is empty,
    ``b""`` at its end (EIO: a pty whose other side is closed)."""
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno != errno.EIO:
            raise
        return b""


class _Reader:
    """Async reads from a non-blocking fd, which stop at EOF or once the process exited
    and nothing is immediately readable."""

    def __init__(self, fd: int | None, exited: _Exited, grace: float = 0.0) -> None:
        self.fd = fd
        self.exited = exited
        self.grace = grace
        self.eof = asyncio.Event()
        self.busy = False
        #: While :meth:`pump` waits with the fd registered: ends that wait (see close).
        self._unwatch: Callable[[], None] | None = None
        if fd is None:
            self.eof.set()
        else:
            os.set_blocking(fd, False)

    async def read(self, max_bytes: int) -> bytes:
        self.busy = True
        try:
            return await self._read(max_bytes)
        finally:
            self.busy = False

    async def _read(self, max_bytes: int) -> bytes:
        while self.fd is not None:
            data = _read_once(self.fd, max_bytes)
            if data:
                return data
            if data is None and not self.exited.is_set():
                await _readable(self.fd, self.exited)
                continue
            if data is None and self.grace and await _readable(self.fd, None, self.grace):
                continue
            self.close()
        return b""

    async def pump(
        self,
        max_bytes: int,
        push: Callable[[bytes], bool],
        drain: Callable[[], Awaitable[None]],
    ) -> None:
        """Hand everything :meth:`read` would return to ``push``, until it would return
        ``b""``. While the fd is idle it is watched with a callback that reads it and
        pushes what it has at once, in the loop iteration that saw it readable: no task
        wake-up, no future and no fd (un)registration per chunk, and no read that finds
        the fd empty after each one (a TTY's keystroke echo is one chunk). ``push``
        returns False when the consumer's buffer is full: no more is read until
        ``drain()`` returns. What ``push`` raises ends the pump with it."""
        self.busy = True
        try:
            while self.fd is not None:
                data = _read_once(self.fd, max_bytes)
                if data:
                    if not push(data):
                        await drain()
                    continue
                if data is None and not self.exited.is_set():
                    if await self._push_when_readable(max_bytes, push):
                        await drain()
                    continue
                if data is None and self.grace and await _readable(self.fd, None, self.grace):
                    continue
                self.close()
        finally:
            self.busy = False

    async def _push_when_readable(self, max_bytes: int, push: Callable[[bytes], bool]) -> bool:
        """Watch the fd and push what it has from the readable callback, until ``push``
        wants a drain (True), or the fd reaches EOF or an error, the process exits or
        the reader is closed (False: :meth:`pump` reads on and decides)."""
        fd = self.fd
        assert fd is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def readable() -> None:
            if done.done():
                return
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.EIO:
                    done.set_exception(e)
                    return
                data = b""
            if not data:  # EOF (or EIO): the pump's own read sees it again
                done.set_result(False)
                return
            try:
                more = push(data)
            except Exception as exc:  # handed to the pump, which raises it
                done.set_exception(exc)
                return
            if not more:
                done.set_result(True)

        def stop() -> None:
            if not done.done():
                done.set_result(False)

        def unwatch() -> None:
            # From close(), before the fd is closed: its number may be reused at once.
            self._unwatch = None
            loop.remove_reader(fd)
            stop()

        if self.exited.is_set():
            return False
        self.exited.add_callback(stop)
        loop.add_reader(fd, readable)
        self._unwatch = unwatch
        try:
            return await done
        finally:
            if self._unwatch is unwatch:
                self._unwatch = None
                loop.remove_reader(fd)
            self.exited.remove_callback(stop)

    def pending(self) -> int:
        """Bytes waiting in the pipe/pty (FIONREAD)."""
        if self.fd is None:
            return 0
        try:
            buf = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return struct.unpack("i", buf)[0]

    def close(self) -> None:
        if self._unwatch is not None:  # never close an fd the loop still watches
            self._unwatch()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.eof.set()


class _Exited(asyncio.Event):
    """The process's exit: an Event that also runs callbacks when set, so that a reader
    waiting for its fd is woken by the exit from the same callback -- no task and no
    ``asyncio.wait`` per wait on the output path (each pipe or pty read that finds it
    empty waits once; a TTY waits once per keystroke echoed)."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], object]] = []

    def set(self) -> None:
        super().set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callable[[], object]) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


async def _readable(fd: int, unless: _Exited | None, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (True), ``unless`` is set or ``timeout`` passed."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(True)

    def exited() -> None:
        if not ready.done():
            ready.set_result(False)

    if unless is not None:
        if unless.is_set():
            return False
        unless.add_callback(exited)
    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            return await ready
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        if unless is not None:
            unless.remove_callback(exited)


async def _writable(fd: int, unless: _Exited) -> None:
    """Wait until ``fd`` takes more (a full stdin pipe or pty drained) or ``unless``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if unless.is_set():
        return
    unless.add_callback(wake)
    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
        unless.remove_callback(wake)


class ExecProcess:
    """One command running in a container. Created by :func:`start_exec`."""

    def __init__(self, argv: list[str], tty: bool, init: bool = False) -> None:
        self.argv = list(argv)
        self.tty = tty
        self.init = init  # run under the exec init (tini -s): pid is tini's
        self.pid = 0  # host PID of the exec root (tini, or the command); 0: never started
        self.error_message: str | None = None
        self.returncode: int | None = None
        self._exited = _Exited()
        self._stdout = _Reader(None, self._exited)
        self._stderr = _Reader(None, self._exited)
        self._stdin_fd: int | None = None
        self._master: int | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._started: asyncio.Future[int] | None = None
        self._cleanup: list[str] = []
        self._killed = False
        self._lost = False  # the helper died before the exit: the status is unknown
        self._start_time = 0  # of the exec'd process, in clock ticks (see process_tree)
        self._root: Root | None = None  # what kill() kills (runtime_tree)
        self._report: socket.socket | None = None  # the helper's job socket (runtime_execshim)
        #: A file that says the exec runs, removed once it exited (RuncRuntime's records).
        self.record: str | None = None
        #: The exec's own cgroup directory (runtime_tree.make_exec_cgroup), or None.
        self.cgroup: str | None = None

    # --- I/O --------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data``; waits while the pipe/pty is full (backpressure). Data
        for a process that is gone or closed its stdin is dropped."""
        view = memoryview(data)
        while view and self._stdin_fd is not None:
            try:
                n = os.write(self._stdin_fd, view)
                view = view[n:]
            except BlockingIOError:
                if self._exited.is_set():
                    return
                await _writable(self._stdin_fd, self._exited)
            except (BrokenPipeError, OSError):
                self._close_stdin_fd()
                return

    def write_stdin_nowait(self, parts: Sequence[bytes | memoryview]) -> int:
        """Write what the pipe/pty takes at once (one ``writev``), without waiting: the
        number of bytes taken, 0 when it is full (the caller then goes through
        :meth:`write_stdin` with the rest). Data for a process that is gone or closed its
        stdin is dropped, as by :meth:`write_stdin`: counted as taken."""
        total = sum(len(part) for part in parts)
        if self._stdin_fd is None:
            return total
        if len(parts) > MAX_WRITEV:
            return 0
        try:
            return os.writev(self._stdin_fd, parts)
        except BlockingIOError:
            return 0
        except OSError:  # BrokenPipeError among them
            self._close_stdin_fd()
            return total

    async def close_stdin(self) -> None:
        """EOF on stdin: close the pipe (and have the helper close its copy); with a TTY,
        send ^D (the pty stays open)."""
        if self.tty:
            await self.write_stdin(b"\x04")
        else:
            self._close_stdin_fd()
            self._tell_helper(b"eof\n")

    def _tell_helper(self, message: bytes, fds: list[int] | None = None) -> None:
        if self._report is not None:
            with contextlib.suppress(OSError):
                socket.send_fds(self._report, [message], fds or [])

    def _close_stdin_fd(self) -> None:
        if self._stdin_fd is not None and self._stdin_fd != self._master:
            os.close(self._stdin_fd)
        self._stdin_fd = None

    def _close_master(self) -> None:
        if self._master is not None:
            os.close(self._master)
            self._master = None

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        """Output (the pty's with a TTY); ``b""`` at EOF or once exited and drained."""
        return await self._stdout.read(max_bytes)

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        """Standard error; ``b""`` at once with a TTY."""
        return await self._stderr.read(max_bytes)

    async def pump_stdout(
        self, max_bytes: int, push: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]
    ) -> None:
        """What ``read_stdout`` would return, handed to ``push`` as it comes, from the
        fd's callback while it can (:meth:`_Reader.pump`); returns where ``read_stdout``
        would return ``b""``."""
        await self._stdout.pump(max_bytes, push, drain)

    async def pump_stderr(
        self, max_bytes: int, push: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]
    ) -> None:
        """As :meth:`pump_stdout`, for standard error."""
        await self._stderr.pump(max_bytes, push, drain)

    def resize(self, width: int, height: int) -> None:
        """Set the pty's size (columns, rows); the process gets SIGWINCH. No-op without TTY."""
        if self._master is None:
            return
        with contextlib.suppress(OSError):
            size = struct.pack("HHHH", max(0, height), max(0, width), 0, 0)
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, size)

    # --- lifetime ---------------------------------------------------------------------

    async def wait(self) -> int:
        """The exit code, once the process exited and what it wrote was read: a stream
        with unread bytes is waited for until its reader took them (or reached EOF)."""
        await self._exited.wait()
        for reader in (self._stdout, self._stderr):
            while not self._killed and not reader.eof.is_set() and reader.pending():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader.eof.wait()), 0.01)
        for reader in (self._stdout, self._stderr):
            if not reader.busy:  # nothing left to read: a later read returns b""
                reader.close()
        self._release()
        assert self.returncode is not None
        return self.returncode

    async def kill(self) -> None:
        """SIGKILL the exec'd process and everything it started (background and setsid
        children too), in the order that leaves no zombie (:mod:`runtime_tree`). Also
        right after the process exited: what it left behind is killed. Unread output is
        then dropped: ``wait()`` does not wait for a reader."""
        self._killed = True
        if self._root is not None or self.cgroup is not None:
            for attempt in range(KILL_ROUNDS):
                if kill_step(self._root, attempt, self.cgroup):
                    break
                await asyncio.sleep(0.005)
            else:
                log.warning("exec %d: processes of its tree survived SIGKILL", self.pid)
        if self._watcher is not None and not self._exited.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited.wait()), 0.5)
            if not self._exited.is_set():  # the helper is stuck or gone: stop listening
                self._watcher.cancel()
                self._set_exit(137)
        await self._exited.wait()

    async def close(self) -> None:
        """Kill if still running and release every fd and file."""
        if not self._exited.is_set():
            await self.kill()
        self._stdout.close()
        self._stderr.close()
        self._release()

    def _release(self) -> None:
        self._close_stdin_fd()
        self._close_master()
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup.clear()
        gone = self.cgroup is None or remove_exec_cgroup(self.cgroup)
        if self.record is not None and not gone and self._lost:
            # Not an end: the helper died and the tree may run on. The record stays as it
            # is, so the next agent's sweep kills what is left in the cgroup.
            self.record = None
        elif self.record is not None and not gone and not self._killed:
            # A normal end that left background processes: they keep their cgroup, and
            # the record says the session ended (a restarted agent leaves them alone).
            with contextlib.suppress(OSError, ValueError):
                with open(self.record) as f:
                    doc = json.load(f)
                doc["ended"] = True
                with open(self.record, "w") as f:
                    json.dump(doc, f)
                self.record = None
        if self.record is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.record)
            self.record = None

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._exited.set()

    def _fail(self, message: str) -> None:
        """The command could not be started: map runc's message to 127/126."""
        low = message.lower()
        if "executable file not found" in low or "no such file or directory" in low:
            code = 127
        elif "permission denied" in low or "exec format error" in low:
            code = 126
        else:
            raise ContainerRuntimeError(f"exec failed: {message}", stderr=message)
        self.error_message = message
        self.returncode = code
        self._stdout.close()
        self._stderr.close()
        self._close_stdin_fd()
        self._exited.set()


async def start_exec(
    runc: list[str],
    container_id: str,
    options: ExecOptions,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    start_timeout: float = 30,
    init: str | None = None,
    cgroup: ExecCgroup | None = None,
) -> ExecProcess:
    """Start ``options.command`` in the container with the streams and TTY ``options``
    asks for; returns once it runs (``pid`` set) or failed to start (``error_message``
    set, 127/126). ``runc`` is the command prefix with --root. ``init``: the path of tini
    in the container, to run the command as ``init -s -- argv`` (a subreaper in the
    container's PID namespace: see :mod:`runtime_tree`). ``cgroup``: the exec's own
    (empty) cgroup, to run it in; the process removes it once empty."""
    argv, tty = list(options.command), options.tty
    if not argv:
        raise ContainerRuntimeError("exec: no command given")
    # In /tmp: the console socket path must stay under 108 bytes.
    tmp = tempfile.mkdtemp(prefix="hwx-")
    proc = ExecProcess(argv, tty, init=bool(init))
    proc._cleanup.append(tmp)
    proc.cgroup = cgroup.path if cgroup is not None else None
    cmd = [*runc, "--log", os.path.join(tmp, "runc.log"), "--log-format", "json", "exec", "-d"]
    cmd += ["--pid-file", os.path.join(tmp, "pid")]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    if cwd:
        cmd += ["--cwd", cwd]
    server = None
    if tty:
        server = _console_socket(os.path.join(tmp, "console.sock"))
        cmd += ["--tty", "--console-socket", os.path.join(tmp, "console.sock")]
    if cgroup is not None:
        cmd += ["--cgroup", cgroup.arg]
    cmd += [container_id, *([init, "-s", "--"] if init else []), *argv]
    try:
        async with asyncio.timeout(start_timeout):
            if server is not None:
                stdio = await _spawn(proc, tmp, cmd, [-1, -1, -1])
                await _take_console(proc, server)
            else:
                stdio = _pipes(proc, options.stdin, options.stdout, options.stderr)
                await _spawn(proc, tmp, cmd, stdio)
            await _await_start(proc, tmp)
    except BaseException:
        await proc.close()
        raise
    finally:
        if server is not None:
            server.close()
    # The pid file, runc's log and the console socket have served their purpose.
    shutil.rmtree(tmp, ignore_errors=True)
    proc._cleanup.remove(tmp)
    return proc


def resolves_in(root: str, argv0: str, path_env: str, cwd: str) -> bool:
    """Whether ``argv0`` names an executable regular file in the container whose root
    directory is ``root`` (``/proc/<init pid>/root``), looked up as runc and execvp do
    (in ``path_env``'s absolute directories when it has no slash). Symlinks are followed
    inside ``root``; only lstat and readlink, nothing of the container is opened.

    The runtime runs a command under tini only when this finds it: a command that cannot
    be started then fails in runc itself, with runc's message (127/126), as without tini.
    """
    if "/" in argv0:
        candidates = [posixpath.join(cwd or "/", argv0)]
    else:
        dirs = path_env.split(":")
        if len(dirs) > MAX_PATH_DIRS:
            return False  # the pod's PATH is the user's: bound the look-up, runc decides
        candidates = [posixpath.join(d, argv0) for d in dirs if d[:1] == "/"]
    for candidate in candidates:
        found = _lstat_in(root, candidate)
        if found is not None and stat.S_ISREG(found.st_mode) and found.st_mode & 0o111:
            return True
    return False


def _lstat_in(root: str, path: str) -> os.stat_result | None:
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 40  # ELOOP, as the kernel counts
    while parts:
        part = parts.pop(0)
        if part in (".", ".."):
            if part == ".." and done:
                done.pop()
            continue
        full = os.path.join(root, *done, part)
        try:
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                hops -= 1
                target = os.readlink(full)
                if hops < 0:
                    return None
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
        except OSError:
            return None
        done.append(part)
        if not parts:
            return info
    return None


def _console_socket(path: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.setblocking(False)
    return server


def _pipes(proc: ExecProcess, stdin: bool, stdout: bool, stderr: bool) -> list[int]:
    """Pipes for the wanted streams: ours go to ``proc``; theirs (or -1) are returned."""
    theirs = []
    for i, wanted in enumerate((stdin, stdout, stderr)):
        if not wanted:
            theirs.append(-1)
            continue
        r, w = os.pipe2(os.O_CLOEXEC)
        mine, child = (w, r) if i == 0 else (r, w)
        with contextlib.suppress(OSError):  # bigger pipes, fewer wake-ups
            fcntl.fcntl(child, fcntl.F_SETPIPE_SZ, 1 << 20)
        theirs.append(child)
        if i == 0:
            proc._stdin_fd = mine
            os.set_blocking(mine, False)
        elif i == 1:
            proc._stdout = _Reader(mine, proc._exited)
        else:
            proc._stderr = _Reader(mine, proc._exited)
    return theirs


_HELPER = ExecHelper()


def start_exec_helper() -> None:
    """Start the node's exec helper ahead of the first exec (the node agent may call this
    at start-up; otherwise the first exec starts it)."""
    try:
        _HELPER.start()
    except ExecHelperError as e:
        raise ContainerRuntimeError(str(e)) from e


async def _spawn(proc: ExecProcess, tmp: str, cmd: list[str], stdio: list[int]) -> list[int]:
    """Hand ``cmd`` (``runc exec -d``) to the node's exec helper, which reports the
    process's pid and, later, its exit status (see :mod:`runtime_execshim`)."""
    hold = proc._stdin_fd if proc._stdin_fd is not None else -1
    try:
        report = _HELPER.submit(
            cmd, os.path.join(tmp, "pid"), stdio, init=proc.init, hold=hold, cgroup=proc.cgroup
        )
    except ExecHelperError as e:
        raise ContainerRuntimeError(str(e)) from e
    finally:
        for fd in stdio:
            if fd >= 0:
                os.close(fd)
    proc._report = report
    proc._started = asyncio.get_running_loop().create_future()
    proc._watcher = asyncio.ensure_future(_watch(proc, report))
    return stdio


async def _watch(proc: ExecProcess, report: socket.socket) -> None:
    """Follow the helper's report: ``started PID`` then ``exit CODE``."""
    started = proc._started
    assert started is not None
    reader, writer = await asyncio.open_connection(sock=report)
    try:
        async for line in reader:
            word, _, value = line.decode().partition(" ")
            if word == "started" and not started.done():
                started.set_result(int(value))
            elif word == "exit":
                proc._set_exit(int(value))
    except OSError:  # the helper died with our report unread: a reset, not an EOF
        pass
    finally:
        writer.close()
        if not started.done():
            started.set_result(0)
        if not proc._exited.is_set():
            proc._lost = True
        proc._set_exit(255)  # the helper died: the status is unknown


async def _await_start(proc: ExecProcess, tmp: str) -> None:
    assert proc._started is not None
    pid = await proc._started
    if pid:
        proc.pid = pid
        proc._root = Root.of(pid, tini=proc.init)
        proc._start_time = proc._root.since if proc._root is not None else 0
        return
    proc.returncode = None
    proc._fail(runc_error(os.path.join(tmp, "runc.log")) or "runc exec failed")


async def _take_console(proc: ExecProcess, server: socket.socket) -> None:
    """Accept runc's connection on the console socket and take the pty master fd."""
    loop = asyncio.get_running_loop()
    assert proc._started is not None
    accept = asyncio.ensure_future(loop.sock_accept(server))
    await asyncio.wait([accept, proc._started], return_when=asyncio.FIRST_COMPLETED)
    if not accept.done() and proc._started.result() == 0:
        accept.cancel()  # runc failed before it got to the console
        return
    conn, _ = await accept
    with conn:
        conn.setblocking(True)
        conn.settimeout(10)
        _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, conn, 4096, 1)
    if not fds:
        raise ContainerRuntimeError("runc sent no pty master on the console socket")
    # Separate fds for reading (owned by the reader) and for stdin/resize (owned by the
    # process object), so that neither closes a number the other still uses.
    proc._master = os.dup(fds[0])
    os.set_blocking(proc._master, False)
    proc._tell_helper(b"hold\n", [fds[0]])  # the helper holds the pty open: see runtime_execshim
    proc._stdin_fd = proc._master
    proc._stdout = _Reader(fds[0], proc._exited, grace=TTY_DRAIN_GRACE)
