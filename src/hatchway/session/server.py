"""The server side of one exec/attach session over an upgraded Connection.

Choreography (protocol.md 4.5 and 5.2): get the streams the options call for from the
connection (``Connection.accept_streams``: SPDY accepts the client's SYN_STREAMs, each
replied to on arrival; WebSocket's channels exist at once and the server sends one empty
message on the lowest channel it writes to -- the session does not know which), start
the process, pump bytes both ways with backpressure, apply resizes, pass stdin EOF on,
and when the process exits: drain its output, write the status on the error stream,
end the output (``Connection.finish_output``) and close. If the client goes away first
(or before the status is written), the process tree is killed: an EOF on stdin that the
lost connection caused is never passed on (a command that ends at EOF would race the
kill), only the client's own close of stdin is. SPDY
streams the session has no use for are reset, and once it has its streams the connection
refuses any more, so a client cannot make the node hold streams nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hatchway.errors import ConnectionClosedError, HatchwayError
from hatchway.protocol import channel
from hatchway.session.runner import Process, Runner
from hatchway.session.streams import OUTPUT_STREAMS, expected_streams
from hatchway.transport import phases
from hatchway.transport.base import Connection, Stream
from hatchway.types import ExecOptions

log = logging.getLogger(__name__)

#: How long the client has to create its streams (the kubelet's 30 s).
STREAM_CREATION_TIMEOUT = 30.0
READ_SIZE = 256 * 1024
#: The outcome's error when closing gave up on a client that stopped reading.
UNDELIVERED = "the client stopped reading: output not delivered (connection cut)"
#: How long a TTY session waits for the client's first terminal size before starting.
FIRST_RESIZE_WAIT = 0.5


@dataclass
class SessionOutcome:
    """What a finished session did, for the audit log."""

    exit_code: int | None = None
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    client_gone: bool = False


class ServerSession:
    """Runs one command for one client connection."""

    def __init__(
        self,
        conn: Connection,
        options: ExecOptions,
        runner: Runner,
        *,
        stream_timeout: float = STREAM_CREATION_TIMEOUT,
        timed: Any = phases.OFF,
    ) -> None:
        self.conn = conn
        #: The request's :mod:`~hatchway.transport.phases` (its marks: streams, start,
        #: run, status).
        self.timed = timed
        self.options = options.normalised()
        self.runner = runner
        self.version = conn.protocol
        self.stream_timeout = stream_timeout
        self.outcome = SessionOutcome()
        self._resizes = channel.ResizeDecoder()

    async def run(self) -> SessionOutcome:
        names = expected_streams(self.options, self.version)
        try:
            streams = await self.conn.accept_streams(names, timeout=self.stream_timeout)
        except TimeoutError:
            log.info("client did not create its streams in %.0f s", self.stream_timeout)
            self.outcome.error = "timed out waiting for client to create streams"
            self.conn.abort()
            return self.outcome
        except ConnectionClosedError as exc:
            log.info("client went away before creating its streams: %s", exc)
            self.outcome.error = "the client went away before creating its streams"
            self.outcome.client_gone = True
            self.conn.abort()
            return self.outcome
        self.timed.mark("streams")
        first_size = await self._first_resize(streams.get("resize"))
        self.timed.mark("first resize")
        try:
            process = await self.runner.start(self.options)
            self.timed.mark("process start")
        except HatchwayError as exc:
            self.outcome.error = str(exc)
            await self._finish(streams, None, str(exc))
            return self.outcome
        if first_size is not None:
            with contextlib.suppress(OSError):
                process.resize(*first_size)
        await self._supervise(process, streams)
        return self.outcome

    async def _first_resize(self, stream: Stream | None) -> tuple[int, int] | None:
        """kubectl sends the terminal size right after creating its streams: wait a
        moment for it, so a TTY command does not start at 0x0 (it is applied the moment
        the process exists; the rest of the resize stream is pumped as usual)."""
        if stream is None:
            return None
        sizes: list[tuple[int, int]] = []
        try:
            async with asyncio.timeout(FIRST_RESIZE_WAIT):
                while not sizes:
                    chunk = await stream.read(4096)
                    if not chunk:
                        break
                    sizes = self._resizes.feed(chunk)
        except (TimeoutError, ConnectionClosedError, HatchwayError):
            pass
        return sizes[-1] if sizes else None

    async def _supervise(self, process: Process, streams: dict[str, Stream]) -> None:
        try:
            code = await self._pump(process, streams)
        except BaseException:
            # Cancelled (server shutting down) or a pump failed: no orphans either way.
            with contextlib.suppress(Exception):
                await asyncio.shield(process.kill())
            raise
        self.outcome.exit_code = code
        self.timed.mark("process run")
        if not self.outcome.client_gone:
            await self._finish(streams, code, process.error_message)

    async def _pump(self, process: Process, streams: dict[str, Stream]) -> int:
        """Copy bytes both ways until the process exits (or the client leaves)."""
        async with asyncio.TaskGroup() as group:
            outputs = [
                group.create_task(self._pump_out(process, name, streams[name]))
                if name in streams
                else None
                for name in ("stdout", "stderr")
            ]
            inputs = []
            # Resize first: kubectl sends the terminal size before any stdin (protocol.md 4.4),
            # and what is already buffered must reach the process in that order.
            if "resize" in streams:
                inputs.append(group.create_task(self._pump_resize(process, streams["resize"])))
            if "stdin" in streams:
                inputs.append(group.create_task(self._pump_in(process, streams["stdin"])))
            waiter = group.create_task(process.wait())
            gone = group.create_task(self.conn.wait_closed())
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                # The client went away: no orphans.
                self.outcome.client_gone = True
                await process.kill()
                code = await waiter
            else:
                code = waiter.result()
                await asyncio.gather(*(t for t in outputs if t is not None))
                if self.conn.closed:
                    # Gone before its status could go out: what the command left running
                    # (background children) is killed too, as if it had not exited yet.
                    self.outcome.client_gone = True
                    await process.kill()
            for task in (*inputs, gone):
                task.cancel()
        return code

    async def _pump_out(self, process: Process, name: str, stream: Stream) -> None:
        """The process's ``name`` output to ``stream``. Where both ends allow it (an exec
        process's ``pump_stdout``, a driver's ``write_nowait``), each chunk is written
        from the fd's readable callback: a keystroke's echo goes out in the loop
        iteration that saw it, with no task wake-up in between; a full send buffer
        stops the reading until it drained, as ``write()`` does."""
        pump = getattr(process, f"pump_{name}", None)
        with contextlib.suppress(ConnectionClosedError):
            if pump is not None and stream.writes_nowait:
                write = stream.write_nowait

                def push(chunk: bytes) -> bool:
                    self.outcome.bytes_out += len(chunk)
                    return write(chunk)

                await pump(READ_SIZE, push, stream.drain)
                return
            read = getattr(process, f"read_{name}")
            while chunk := await read(READ_SIZE):
                self.outcome.bytes_out += len(chunk)
                await stream.write(chunk)

    async def _pump_in(self, process: Process, stream: Stream) -> None:
        """stdin to the process. Only the client's own end of input (SPDY FIN, WebSocket
        v5 close signal) is passed on as EOF: the EOF of a reset or a lost connection is
        not, or a ``cat`` would exit 0 and the status would race the kill (the session
        sees the connection end and kills the tree instead).

        Where the process can take bytes without waiting (``write_stdin_nowait``), what
        arrives while nothing is queued is written from the driver's reader (the
        stream's sink): a keystroke reaches the pty in the loop iteration that received
        it. What the pipe or pty does not take at once is queued and written from here,
        with the sink off until the queue is empty again, so the order holds and a full
        pipe bounds the queue as before."""
        nowait = getattr(process, "write_stdin_nowait", None)
        sink = None
        if nowait is not None:

            def sink(parts: Sequence[bytes | memoryview]) -> int:
                taken: int = nowait(parts)
                self.outcome.bytes_in += taken
                return taken

        try:
            while True:
                direct = sink is not None and stream.set_sink(sink)
                chunk = await stream.read(READ_SIZE)
                if direct:
                    stream.set_sink(None)
                if not chunk:
                    break
                self.outcome.bytes_in += len(chunk)
                await process.write_stdin(chunk)
        except (ConnectionClosedError, OSError):
            pass  # the process closed its stdin
        else:
            if not stream.fin_received:
                return
        finally:
            stream.set_sink(None)
        with contextlib.suppress(OSError, ConnectionClosedError):
            await process.close_stdin()

    async def _pump_resize(self, process: Process, stream: Stream) -> None:
        """Resizes to the process. They are applied from the driver's reader as they
        arrive (the stream's sink) -- as stdin is written -- so that a resize and a
        keystroke sent after it in one read reach the process in that order."""
        decoder = self._resizes
        failed = False

        def apply(chunk: bytes) -> bool:
            try:
                sizes = decoder.feed(chunk)
            except HatchwayError as exc:
                log.info("bad resize message: %s", exc)
                return False
            for width, height in sizes:
                with contextlib.suppress(OSError):
                    process.resize(width, height)
            return True

        def sink(parts: Sequence[bytes | memoryview]) -> int:
            nonlocal failed
            if failed:
                return 0  # queued, and never read: as after a bad message before
            failed = not apply(b"".join(parts))
            return sum(len(part) for part in parts)

        try:
            with contextlib.suppress(ConnectionClosedError):
                while True:
                    stream.set_sink(sink)
                    chunk = await stream.read(4096)
                    stream.set_sink(None)
                    if not chunk or failed or not apply(chunk):
                        return
        finally:
            stream.set_sink(None)

    async def _finish(
        self, streams: dict[str, Stream], code: int | None, start_error: str | None
    ) -> None:
        """Write the status and end the connection cleanly (protocol.md 4.5 step 5)."""
        status = self._status(code, start_error)
        try:
            # The runtime's message goes where the user looks: stderr, or the terminal.
            target = streams.get("stderr") or (streams.get("stdout") if self.options.tty else None)
            if start_error and code is not None and target is not None:
                newline = b"\r\n" if self.options.tty else b"\n"
                await target.write(start_error.encode() + newline)
            if status:
                await streams["error"].write(status)
            self.timed.mark("status sent")
            # Over SPDY: FIN each, then wait for the client to hang up as long as it
            # reads (spdystream acts on a GOAWAY at once, protocol.md 3.5, 3.6).
            await self.conn.finish_output(streams[n] for n in OUTPUT_STREAMS if n in streams)
        except ConnectionClosedError:
            pass
        await self.conn.close()
        self.timed.mark("session close")
        if self.conn.cut:
            self.outcome.error = UNDELIVERED

    def _status(self, code: int | None, start_error: str | None) -> bytes:
        argv = " ".join(self.options.command)
        if code is None:
            text = start_error or "unknown error"
            if channel.capabilities(self.version).status_json:
                return channel.status_internal_error(text)
            return text.encode()
        json_status = channel.capabilities(self.version).status_json
        if code == 0:
            return channel.status_success() if json_status else b""
        if self.options.action == "attach":
            message = f"error attaching to container: exit code {code}"
        else:
            message = (
                "command terminated with non-zero exit code: "
                f"error executing command [{argv}], exit code {code}"
            )
        if json_status:
            return channel.status_exit_code(code, message)
        return message.encode()
