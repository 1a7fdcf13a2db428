"""Attach to a container's main process: a client of its shim's attach socket
(protocol.md 9.4).

The shim (:mod:`~hatchway.node.runtime_shim`) owns the main process's stdio, so attach
connects to ``attach.sock`` in the bundle and speaks its frames: ``HELLO`` (whether this
client brings stdin), stdin, stdin EOF and resizes one way; stdout, stderr (one stream
for a ``tty: true`` container: its pty) and the exit the other. Output is what the
container writes from the moment of attaching; a stream the client did not ask for is
read and dropped. ``stdinOnce``: the shim closes the container's stdin when the first
client that brought stdin ends it or goes away.

The session ends with Success when the container exits (protocol.md 6.1, no exit code for
attach). ``kill()`` only detaches: a client that goes away never stops the container.
Reading is bounded (a few frames of at most 64 KiB are queued), so a slow client slows
the shim, which then stops reading the container (backpressure to the container).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

from hatchway.errors import ContainerRuntimeError
from hatchway.node.runtime import ContainerNotFoundError, RuncRuntime
from hatchway.node.runtime_shim import (
    EXIT,
    FRAME_HEADER,
    HELLO,
    MAX_FRAME,
    RESIZE,
    STDERR,
    STDIN,
    STDIN_EOF,
    STDOUT,
)
from hatchway.types import ExecOptions

#: Frames queued per stream before the socket is no longer read.
QUEUE_FRAMES = 8


class AttachedProcess:
    """The :class:`~hatchway.session.runner.Process` of one attach session."""

    error_message: str | None = None

    def __init__(self, runtime: RuncRuntime, container_id: str, options: ExecOptions) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.options = options
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._queues = {
            STDOUT: asyncio.Queue[bytes](QUEUE_FRAMES),
            STDERR: asyncio.Queue[bytes](QUEUE_FRAMES),
        }
        self._done = asyncio.Event()  # the container exited, or we detached
        self._stdin_open = bool(options.stdin)
        self._pump: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect to the shim and say whether this client brings stdin."""
        try:
            path = self.runtime.attach_socket(self.container_id)
        except ContainerNotFoundError as exc:
            raise ContainerRuntimeError(f"error attaching to container: {exc}") from exc
        if path is None:
            running = (await self.runtime.state(self.container_id)).running
            why = (
                "it was started by an earlier node agent, without an attach socket"
                " (recreate the pod to attach)"
                if running
                else "it is not running"
            )
            raise ContainerRuntimeError(f"error attaching to container: {why}")
        # Through the directory's descriptor: a bundle's path may be longer than a unix
        # socket address can be (108 bytes).
        dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(
                f"/proc/self/fd/{dirfd}/{os.path.basename(path)}", limit=MAX_FRAME * 2
            )
        except OSError as exc:  # the shim went away between the check and the connect
            raise ContainerRuntimeError(f"error attaching to container: {exc}") from exc
        finally:
            os.close(dirfd)
        self._send(HELLO, b"1" if self.options.stdin else b"0")
        self._pump = asyncio.get_running_loop().create_task(self._read_frames())

    def _wants(self, kind: int) -> bool:
        if kind == STDOUT:
            return bool(self.options.stdout)
        return bool(self.options.stderr) and not self.options.tty

    async def _read_frames(self) -> None:
        assert self._reader is not None
        try:
            while True:
                header = await self._reader.readexactly(FRAME_HEADER.size)
                kind, size = FRAME_HEADER.unpack(header)
                if size > MAX_FRAME:
                    break
                payload = await self._reader.readexactly(size)
                if kind == EXIT:
                    break
                if kind in self._queues and self._wants(kind):
                    await self._queues[kind].put(payload)
        except (asyncio.IncompleteReadError, OSError):
            pass  # the shim is gone (its EXIT comes first when the container exits)
        finally:
            if self._writer is not None:
                self._writer.close()  # the shim waits for this before it closes its end
            self._done.set()
            for queue in self._queues.values():
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(b"")

    def _send(self, kind: int, payload: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(FRAME_HEADER.pack(kind, len(payload)) + payload)

    # --- I/O --------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Into the main process's stdin (the shim drops it when there is none)."""
        if not self._stdin_open or self._writer is None:
            return
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME):
            self._send(STDIN, bytes(view[start : start + MAX_FRAME]))
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def close_stdin(self) -> None:
        """The client's stdin ended (with ``stdinOnce``, the container's ends too)."""
        if self._stdin_open:
            self._stdin_open = False
            self._send(STDIN_EOF, b"")

    async def _read(self, kind: int) -> bytes:
        queue = self._queues[kind]
        if not self._wants(kind):
            return b""
        if self._done.is_set() and queue.empty():
            return b""
        data = await queue.get()
        if not data:
            queue.put_nowait(b"")  # the end stays the end
        return data

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        """The container's output from now on; ``b""`` once it exited, or on detach."""
        return await self._read(STDOUT)

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        """Its stderr (none for a tty container: the pty is both)."""
        return await self._read(STDERR)

    def resize(self, width: int, height: int) -> None:
        """The pty's window size (ignored by the shim for a container without one)."""
        if self.options.tty and 0 < width < 65536 and 0 < height < 65536:
            self._send(RESIZE, struct.pack("!HH", width, height))

    # --- lifetime ---------------------------------------------------------------------

    async def wait(self) -> int:
        """0 once the container exited (or we detached): attach has no exit code."""
        await self._done.wait()
        return 0

    async def kill(self) -> None:
        """Detach. The container keeps running."""
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
        self._done.set()
        for queue in self._queues.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")


async def attach(runtime: RuncRuntime, container_id: str, options: ExecOptions) -> AttachedProcess:
    """Attach to the main process of a running container."""
    process = AttachedProcess(runtime, container_id, options)
    await process.open()
    return process
