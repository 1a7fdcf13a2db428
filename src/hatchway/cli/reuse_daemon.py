"""``hatchway exec-reuse-daemon``: the warm side of ``hatchway exec --reuse``.

Started by :mod:`hatchway.cli.reuse` (never by hand), for one user and one credential
source. It reads the kubeconfig once, keeps the :class:`~hatchway.client.api.Client`
(its pooled TLS connections to the API server) and serves each request on its unix
socket with the exec code of ``hatchway exec`` itself, on the descriptors the client
passed. A request whose peer is another uid is dropped unread; one whose credential
source (recomputed from its argv, cwd and environment) is not the daemon's, or that
wants a terminal (resizes are the client's signals), is answered "direct". When the
client goes away mid-session (killed, Ctrl-C), the session is aborted, as a direct
run's connection would be: the node kills the command. One daemon per socket (a lock
file); it exits after ``--idle`` seconds without a session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
from collections.abc import Sequence
from typing import Any

from hatchway.cli import exec_args, exec_async, reuse
from hatchway.cli.errors import describe
from hatchway.cli.escape import escape_control
from hatchway.cli.terminal import is_terminal
from hatchway.cli.timing import Phases

#: Sessions at once; beyond, clients run directly.
MAX_SESSIONS = 64
_UCRED = struct.Struct("3i")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def parse_request(data: bytes) -> tuple[str, str, str, list[str]] | None:
    """``(cwd, KUBECONFIG, HOME, argv)`` of a request, or None if it is not one."""
    if not data.startswith(reuse.MAGIC):
        return None
    values = data[len(reuse.MAGIC) :].decode("utf-8", "surrogateescape").split("\0")
    if len(values) < 3:
        return None
    return values[0], values[1], values[2], values[3:]


class Daemon:
    def __init__(self, client: Any, source: list[str], idle: float) -> None:
        self.client = client
        self.source = source
        self.idle = idle
        self.sessions = 0
        self._idle_since = asyncio.get_running_loop().time()

    def accepts(self, args: exec_args.ExecArgs, cwd: str, kubeconfig_env: str, home: str) -> bool:
        wanted = reuse.credential_source(args.kubeconfig, args.context, kubeconfig_env, home, cwd)
        return wanted == self.source

    async def serve(self, sock: socket.socket) -> None:
        fds: list[int] = []
        try:
            if peer_uid(sock) != os.getuid():
                return  # never read what another user sends
            loop = asyncio.get_running_loop()
            await _readable(loop, sock)
            data, fds, flags, _ = socket.recv_fds(sock, reuse.MAX_REQUEST, 3)
            request = parse_request(data)
            truncated = flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
            if request is None or truncated or len(fds) != 3:
                return
            code = await self._run(sock, request, exec_async.Io(*fds))
            sock.sendall(reuse.DIRECT if code is None else reuse.EXIT_PREFIX + b"%d" % code)
        except OSError:
            pass  # the client went away; its session, if any, was aborted
        finally:
            for fd in fds:
                os.close(fd)
            sock.close()

    async def _run(
        self, sock: socket.socket, request: tuple[str, str, str, list[str]], io: exec_async.Io
    ) -> int | None:
        cwd, kubeconfig_env, home, argv = request
        try:
            args = exec_args.parse_exec_args(argv)
        except exec_args.ExecUsageError:
            return None  # the direct run prints kubectl's usage text
        tty = args.tty and args.stdin and is_terminal(io.stdin)
        if args.help or tty or self.sessions >= MAX_SESSIONS:
            return None
        if not self.accepts(args, cwd, kubeconfig_env, home):
            return None
        self.sessions += 1
        stop_r, stop_w = os.pipe()
        try:
            return await self._exec(sock, args, io._replace(stop=stop_r))
        finally:
            os.close(stop_w)  # wakes the stdin reader, which then returns
            os.close(stop_r)
            self.sessions -= 1
            self._idle_since = asyncio.get_running_loop().time()

    async def _exec(self, sock: socket.socket, args: exec_args.ExecArgs, io: exec_async.Io) -> int:
        loop = asyncio.get_running_loop()
        processes: list[Any] = []
        task = asyncio.ensure_future(
            exec_async.exec_with(self.client, args, Phases(False), io, processes.append)
        )
        gone = asyncio.ensure_future(_readable(loop, sock))  # EOF: the client is gone
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                for process in processes:
                    process.terminate()  # the node kills the command
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                return 1
            return task.result()
        except Exception as exc:
            exec_async._write_out(io.stderr, (escape_control(describe(exc)) + "\n").encode())
            return 1
        finally:
            gone.cancel()

    async def idle_out(self) -> None:
        loop = asyncio.get_running_loop()
        # A deadline that moves with every session end: polled, not an Event.
        while self.sessions or loop.time() - self._idle_since < self.idle:  # noqa: ASYNC110
            await asyncio.sleep(min(self.idle, 5.0))


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        loop.remove_reader(fd)


async def _main(args: argparse.Namespace) -> int:
    from hatchway.client.api import Client

    source = reuse.credential_source(
        args.kubeconfig, args.context, os.environ.get("KUBECONFIG", ""),
        os.environ.get("HOME", ""), os.getcwd(),
    )  # fmt: skip
    lock = os.open(args.socket + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another daemon serves this socket
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())  # who serves it, for whoever must stop it
    client = Client.from_kubeconfig(args.kubeconfig, context=args.context)
    os.chdir("/")
    daemon = Daemon(client, source, args.idle)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.socket)  # a dead daemon's (we hold the lock)
    old_umask = os.umask(0o177)
    try:
        listener.bind(args.socket)  # 0600
    finally:
        os.umask(old_umask)
    listener.listen(16)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def accept() -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            conn, _ = listener.accept()
            conn.setblocking(False)
            task = asyncio.ensure_future(daemon.serve(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    loop.add_reader(listener.fileno(), accept)
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, main_task.cancel)  # the socket is removed
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await daemon.idle_out()
    finally:
        loop.remove_reader(listener.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)
        listener.close()
        await client.close()
        os.close(lock)
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hatchway exec-reuse-daemon")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--idle", type=float, default=reuse.IDLE_SECONDS)
    args = parser.parse_args(argv)
    return asyncio.run(_main(args))
