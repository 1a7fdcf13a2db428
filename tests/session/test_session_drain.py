"""A session whose client stops reading the tail (issue 10, item 1): the server waits for
the drain idle timeout, then cuts, and says so on both sides -- the node's outcome
records the undelivered output, Hatchway's client raises instead of reporting a
status it never got. Over WebSocket and SPDY on loopback TCP, the client's socket
receive buffer shrunk so that the tail stays on the server's side."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from hatchway.errors import ConnectionClosedError
from hatchway.session.client import SESSION_CUT, ClientSession
from hatchway.session.server import UNDELIVERED, ServerSession
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
#: Fits in the client's channel buffer plus the server's send buffer, so the process
#: exits and the session reaches its close with output still queued.
OUTPUT = 2048 * 1024
IDLE = 1.0 * SCALE


class BulkProcess:
    """Writes OUTPUT bytes to stdout and exits 0."""

    error_message: str | None = None

    def __init__(self) -> None:
        self._left = OUTPUT

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        n = min(self._left, max_bytes)
        self._left -= n
        return b"o" * n

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        return b""

    async def wait(self) -> int:
        return 0

    async def write_stdin(self, data: bytes) -> None:
        pass

    async def close_stdin(self) -> None:
        pass

    def resize(self, width: int, height: int) -> None:
        pass

    async def kill(self) -> None:
        pass


class BulkRunner:
    async def start(self, options: ExecOptions) -> BulkProcess:
        return BulkProcess()


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_a_client_that_stops_reading_is_cut_and_both_sides_say_so(transport: str) -> None:
    version = "v5.channel.k8s.io" if transport == "websocket" else "v4.channel.k8s.io"
    options = ExecOptions(("bulk",), "main", stdout=True, stderr=False)
    outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    conn_type = WebSocketConnection if transport == "websocket" else SpdyConnection

    async def handler(stream: ByteStream) -> None:
        stream.drain_idle_timeout = IDLE
        conn = conn_type(stream, client=False, protocol=version)
        conn.start()
        session = ServerSession(conn, options, BulkRunner())
        outcome.set_result(await session.run())

    server = Server(handler)
    await server.start("127.0.0.1", 0)
    stream = await ByteStream.connect("127.0.0.1", server.port)
    stream.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    stream.set_recv_limit(64 * 1024)
    client_conn = conn_type(stream, client=True, protocol=version)
    client_conn.start()
    session = ClientSession(client_conn, options)
    try:
        async with asyncio.timeout(20 * SCALE):
            await session.start()
            result = await outcome  # the client has read nothing yet
            assert result.exit_code == 0  # type: ignore[attr-defined]
            assert result.error == UNDELIVERED  # type: ignore[attr-defined]
            assert session.stdout is not None
            got = len(await session.stdout.read_all(OUTPUT))
            assert 0 < got <= OUTPUT  # the status, queued behind it, is what was lost
            with pytest.raises(ConnectionClosedError) as info:
                await session.wait()
            assert str(info.value) == SESSION_CUT
    finally:
        client_conn.abort()
        await server.close()
