"""Attach to a container's main process: its output from now on, and its stdin.

The runtime keeps the main process's stdout and stderr in one log file (interleaved, raw
bytes), so attach follows that file from its current end and delivers everything on the
stdout stream; the stderr stream ends at once. When the container spec has
``stdin: true`` the runtime gives the main process a FIFO as stdin (held open read-write
by its shim, so the process never sees EOF between attaches, as with ``stdinOnce:
false``); attach writes the client's stdin into that FIFO.

The session ends with Success when the container exits (protocol.md 6.1, no exit code for
attach). ``kill()`` only detaches: a client that goes away never stops the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from typing import BinaryIO

from hatchway.errors import ContainerRuntimeError
from hatchway.node.runtime import ContainerNotFoundError, RuncRuntime
from hatchway.types import ExecOptions

#: How often the log and the container's state are looked at while nothing happens.
POLL_INTERVAL = 0.05


class AttachedProcess:
    """The :class:`~hatchway.session.runner.Process` of one attach session."""

    error_message: str | None = None

    def __init__(self, runtime: RuncRuntime, container_id: str, options: ExecOptions) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.options = options
        self._log: BinaryIO | None = None
        self._stdin_fd: int | None = None
        self._exited = asyncio.Event()  # the container's main process is gone
        self._done = asyncio.Event()  # exited or detached
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start following: the log from its current end, the stdin FIFO if wanted."""
        try:
            path = self.runtime.log_path(self.container_id)
        except ContainerNotFoundError as exc:
            raise ContainerRuntimeError(f"error attaching to container: {exc}") from exc
        if self.options.stdout or self.options.stderr:
            self._log = _open_at_end(path)
        fifo = self.runtime.stdin_path(self.container_id) if self.options.stdin else None
        if fifo is not None:
            try:
                self._stdin_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:  # ENXIO: no reader, the container is going away
                self.close()
                raise ContainerRuntimeError(f"error attaching to container: {exc}") from exc
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while not self._done.is_set():
            try:
                running = (await self.runtime.state(self.container_id)).running
            except ContainerNotFoundError:
                running = False
            if not running:
                self._exited.set()
                self._done.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), POLL_INTERVAL)

    # --- I/O --------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Into the main process's stdin (dropped when the container has none)."""
        view = memoryview(data)
        while view and self._stdin_fd is not None and not self._done.is_set():
            try:
                view = view[os.write(self._stdin_fd, view) :]
            except BlockingIOError:
                await self._writable(self._stdin_fd)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self._close_stdin()

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_writer(fd)
            ready.cancel()
            done.cancel()

    async def close_stdin(self) -> None:
        """The client's stdin ended. The container's stdin stays open for the next attach
        (``stdinOnce`` is not implemented)."""
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd is not None:
            os.close(self._stdin_fd)
            self._stdin_fd = None

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        """New log output; ``b""`` once the container exited and the log is drained, or
        after a detach."""
        while self._log is not None:
            data = self._log.read(max_bytes)
            if data:
                return data
            if self._exited.is_set():
                # The shim writes the exit status after runc ended: the log is complete.
                data = self._log.read(max_bytes)
                if data:
                    return data
            if self._done.is_set():
                self._log.close()
                self._log = None
                return b""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), POLL_INTERVAL)
        return b""

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        """The log interleaves both streams; everything goes to stdout."""
        return b""

    def resize(self, width: int, height: int) -> None:
        """The main process has no pty (containers run with ``terminal: false``)."""

    # --- lifetime ---------------------------------------------------------------------

    async def wait(self) -> int:
        """0 once the container exited (or we detached): attach has no exit code."""
        await self._done.wait()
        self._close_stdin()
        return 0

    async def kill(self) -> None:
        """Detach. The container keeps running."""
        self._done.set()
        self._close_stdin()

    def close(self) -> None:
        self._done.set()
        self._close_stdin()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._watcher is not None:
            self._watcher.cancel()


def _open_at_end(path: str) -> BinaryIO:
    """The log, positioned at its end (closed by the reader at its end, or by close())."""
    f = open(path, "rb")
    f.seek(0, os.SEEK_END)
    return f


async def attach(runtime: RuncRuntime, container_id: str, options: ExecOptions) -> AttachedProcess:
    """Attach to the main process of a running container."""
    process = AttachedProcess(runtime, container_id, options)
    await process.open()
    return process
