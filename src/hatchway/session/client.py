"""The client side of one exec/attach session over an upgraded Connection.

Streams are created one at a time in the order client-go uses (error, stdin, stdout,
stderr, resize), each waiting for its SYN_REPLY over SPDY (protocol.md 3.5). The status is read
from the error stream to EOF and decoded by the rules of the negotiated version
(protocol.md 4.2).
"""

from __future__ import annotations

import asyncio
import contextlib

from hatchway.errors import ConnectionClosedError, RemoteCommandError
from hatchway.protocol import channel
from hatchway.session.streams import expected_streams
from hatchway.transport.base import Connection, Stream
from hatchway.types import ExecOptions

#: The status is small; anything bigger than this on the error stream is hostile.
MAX_STATUS = 64 * 1024
#: The error when the connection ended without the session's status: its output may be
#: incomplete. (A server cuts a client only when it read nothing for the server's idle
#: timeout; the node or the API server going away ends it the same way.)
SESSION_CUT = (
    "connection closed by the server before the output was delivered: "
    "the session ended before the server sent its status"
)


class ClientSession:
    """Streams of one session, and its status once it ends."""

    def __init__(self, conn: Connection, options: ExecOptions) -> None:
        self.conn = conn
        self.options = options.normalised()
        self.version = conn.protocol
        self.streams: dict[str, Stream] = {}
        self._status: asyncio.Task[int] | None = None

    async def start(self) -> None:
        for name in expected_streams(self.options, self.version):
            self.streams[name] = await self.conn.open_stream({"streamtype": name})
        self._status = asyncio.get_running_loop().create_task(self._read_status())
        # A session dropped without wait() must not log "exception never retrieved".
        self._status.add_done_callback(
            lambda task: task.cancelled() or task.exception()  # type: ignore[func-returns-value]
        )

    @property
    def stdin(self) -> Stream | None:
        return self.streams.get("stdin")

    @property
    def stdout(self) -> Stream | None:
        return self.streams.get("stdout")

    @property
    def stderr(self) -> Stream | None:
        return self.streams.get("stderr")

    async def write_stdin(self, data: bytes) -> None:
        if self.stdin is None:
            raise ConnectionClosedError("stdin was not requested")
        await self.stdin.write(data)

    async def close_stdin(self) -> None:
        if self.stdin is not None:
            with contextlib.suppress(ConnectionClosedError):
                await self.stdin.write_eof()

    async def resize(self, width: int, height: int) -> None:
        stream = self.streams.get("resize")
        if stream is not None:
            with contextlib.suppress(ConnectionClosedError):
                await stream.write(channel.encode_resize(width, height))

    async def _read_status(self) -> int:
        raw = await self.streams["error"].read_all(MAX_STATUS)
        if not raw and channel.capabilities(self.version).status_json:
            # v4/v5 servers always write a Status, Success included (protocol.md 4.2), so an
            # empty error stream means the session was cut: reporting exit 0 (as
            # client-go does) would turn a lost connection into a success.
            raise ConnectionClosedError(SESSION_CUT)
        outcome = channel.parse_status(self.version, raw)
        if outcome.exit_code is None:
            raise RemoteCommandError(outcome.message or "unknown error")
        return outcome.exit_code

    async def wait(self) -> int:
        """The remote exit code; raises RemoteCommandError for a failure without one."""
        assert self._status is not None, "start() first"
        return await asyncio.shield(self._status)

    async def close(self) -> None:
        status = self._status
        if status is not None:
            if not status.done():
                status.cancel()
            # Retrieve the outcome either way: a failure nobody asked for is not an error
            # of close(), and must not be logged from a finaliser later.
            with contextlib.suppress(BaseException):
                await status
        await self.conn.close()


__all__ = ["ClientSession", "RemoteCommandError"]
