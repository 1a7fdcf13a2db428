"""The client side of the exec upgrade (``session/upgrade.py``) against a server, over
memory pipes (``transport/memory.py``), that reads each request's head as bytes and
answers what a test scripts: the request lines on the wire are the handshake builders'
output, the fallback is kubectl's (protocol.md 5.8), and a refusal reads as the one rule says
(protocol.md 3.1, 5.2). The server side is tested where it runs, on the node
(tests/node/test_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable

import pytest

from hatchway.errors import ApiError
from hatchway.protocol import channel, handshake
from hatchway.rest import RestClient
from hatchway.session import upgrade
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.memory import MemoryPipe
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
PATH = "/api/v1/namespaces/default/pods/p/exec"
NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'pods "p" not found',
    "reason": "NotFound",
    "code": 404,
}

#: Answers one request head (bytes) with the bytes to send back.
Answer = Callable[[bytes], bytes]


def answer(status: str, body: bytes = b"", content_type: str = "text/plain") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def refuse_all(body: bytes = b"", status: str = "403 Forbidden") -> Answer:
    return lambda head: answer(status, body)


def websocket_101(head: bytes, protocol: str | None = None) -> bytes:
    """The 101 to a WebSocket request, with ``protocol`` (None: the first offered)."""
    key = _header(head, "sec-websocket-key")
    if protocol is None:
        protocol = _header(head, "sec-websocket-protocol").split(",")[0].strip()
    return handshake.websocket_response_bytes(key, protocol)


def _header(head: bytes, name: str) -> str:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.lower() == name:
            return v.strip()
    return ""


class Recorder:
    """A scripted server: each connection (a memory pipe) has its request head recorded
    and answered; an upgraded connection is then held open (silent) until the client
    closes it."""

    def __init__(self, script: Answer) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, host: str, port: int, ctx: object, timeout: float | None) -> ByteStream:
        client, server = MemoryPipe().streams()
        self.tasks.append(asyncio.get_running_loop().create_task(self._serve(server)))
        return client

    async def _serve(self, stream: ByteStream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.read()
                if not chunk:
                    return
                head += chunk
            head = head[: head.index(b"\r\n\r\n") + 4]
            self.heads.append(head)
            reply = self.script(head)
            stream.write(reply)
            await stream.drain()
            if reply.startswith(b"HTTP/1.1 101"):
                while await stream.read(65536):
                    pass
        except ConnectionError:
            pass
        finally:
            await stream.aclose()

    @property
    def methods(self) -> list[str]:
        return [h.split(b" ", 1)[0].decode() for h in self.heads]


@contextlib.asynccontextmanager
async def recorder(script: Answer) -> AsyncIterator[tuple[Recorder, RestClient]]:
    rec = Recorder(script)
    try:
        yield (
            rec,
            RestClient(
                "http://127.0.0.1:6443", ssl_context=None, timeout=10 * SCALE, connect=rec.connect
            ),
        )
    finally:
        for task in rec.tasks:
            task.cancel()
        await asyncio.gather(*rec.tasks, return_exceptions=True)


def builder_lines(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)


async def dial(rest: RestClient, options: ExecOptions, transport: str = "auto"):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(20 * SCALE):
        return await upgrade.dial(rest, PATH, options, transport=transport)


# -- what goes on the wire ----------------------------------------------------------------


@pytest.mark.parametrize("stdin", [False, True])
async def test_the_request_lines_are_the_builders_output(stdin: bool) -> None:
    options = ExecOptions(("true",), stdin=stdin)
    async with recorder(refuse_all(json.dumps(NOT_FOUND).encode())) as (rec, rest):
        with pytest.raises(ApiError):
            await dial(rest, options)
    assert rec.methods == ["GET", "POST"]
    websocket, spdy = rec.heads
    key = _header(websocket, "sec-websocket-key")
    offer = upgrade.websocket_offer(options)
    # The builders' lines, in the builders' order and spelling, one block on the wire.
    assert builder_lines(handshake.websocket_request_headers(key, offer)) in websocket
    assert builder_lines(handshake.spdy_request_headers(channel.SPDY_CLIENT_PROTOCOLS)) in spdy
    # The query is the options in the API server's spelling, as kubectl sends it.
    query = "command=true&stderr=true" + ("&stdin=true" if stdin else "") + "&stdout=true"
    assert websocket.startswith(f"GET {PATH}?{query} HTTP/1.1\r\n".encode())
    assert spdy.startswith(f"POST {PATH}?{query} HTTP/1.1\r\n".encode())
    assert len(key) == 24 and key != handshake.new_websocket_key()


def test_the_websocket_offer_comes_from_the_channel_tables() -> None:
    assert upgrade.websocket_offer(ExecOptions(("cat",), stdin=True)) == (channel.V5,)
    assert upgrade.websocket_offer(ExecOptions(("ls",))) == channel.WEBSOCKET_CLIENT_PROTOCOLS


# -- the fallback -------------------------------------------------------------------------


async def test_websocket_first() -> None:
    async with recorder(websocket_101) as (rec, rest):
        conn = await dial(rest, ExecOptions(("true",)))
        assert isinstance(conn, WebSocketConnection) and conn.protocol == channel.V5
        conn.abort()
    assert rec.methods == ["GET"]


def _bare_403_then_spdy(head: bytes) -> bytes:
    if head.startswith(b"GET "):
        return b"HTTP/1.1 403 Forbidden\r\n\r\n"  # a pre-1.30 kubelet refusing v5
    return handshake.spdy_response_bytes(channel.V4)


async def test_a_refused_websocket_falls_back_to_spdy() -> None:
    async with recorder(_bare_403_then_spdy) as (rec, rest):
        conn = await dial(rest, ExecOptions(("cat",), stdin=True))
        assert isinstance(conn, SpdyConnection) and conn.protocol == channel.V4
        conn.abort()
    assert rec.methods == ["GET", "POST"]


async def test_a_101_without_the_offered_subprotocol_falls_back_to_spdy() -> None:
    def script(head: bytes) -> bytes:
        if head.startswith(b"GET "):
            return websocket_101(head, protocol="")  # protocol.md 5.2: an upgrade failure
        return handshake.spdy_response_bytes(channel.V4)

    async with recorder(script) as (rec, rest):
        conn = await dial(rest, ExecOptions(("true",)))
        assert isinstance(conn, SpdyConnection)
        conn.abort()
    assert rec.methods == ["GET", "POST"]


@pytest.mark.parametrize(("transport", "methods"), [("websocket", ["GET"]), ("spdy", ["POST"])])
async def test_a_chosen_transport_never_falls_back(transport: str, methods: list[str]) -> None:
    async with recorder(_bare_403_then_spdy if transport == "websocket" else refuse_all()) as (
        rec,
        rest,
    ):
        with pytest.raises(handshake.UpgradeFailedError) as info:
            await dial(rest, ExecOptions(("true",)), transport)
    assert rec.methods == methods
    assert (info.value.status, str(info.value)) == (403, "unable to upgrade connection: Forbidden")


async def test_an_unknown_transport_sends_nothing() -> None:
    async with recorder(refuse_all()) as (rec, rest):
        with pytest.raises(ValueError, match="unknown transport 'carrier-pigeon'"):
            await dial(rest, ExecOptions(("true",)), "carrier-pigeon")
    assert rec.heads == []


# -- the refusal rule -----------------------------------------------------------------------


async def test_a_status_body_is_the_servers_error() -> None:
    status = {k: v for k, v in NOT_FOUND.items() if k != "code"}
    body = json.dumps(status).encode()
    async with recorder(lambda head: answer("404 Not Found", body, "application/json")) as (
        _,
        rest,
    ):
        with pytest.raises(ApiError) as info:
            await dial(rest, ExecOptions(("true",)), "spdy")
    # The HTTP status stands in for a code the Status leaves out.
    assert (info.value.code, info.value.reason, info.value.message) == (
        404,
        "NotFound",
        'pods "p" not found',
    )


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'container not found ("main")\n', 'container not found ("main")'),
        (b'{"kind": "Pod"}', '{"kind": "Pod"}'),  # JSON, but no Status
        # A peer's nested brackets are no Status either (they raised RecursionError).
        (b"[" * 60000, "[" * 60000),
    ],
)
async def test_any_other_body_is_unable_to_upgrade(body: bytes, text: str) -> None:
    async with recorder(refuse_all(body, "500 Internal Server Error")) as (rec, rest):
        with pytest.raises(handshake.UpgradeFailedError) as info:
            await dial(rest, ExecOptions(("true",)))
    assert rec.methods == ["GET", "POST"]
    assert str(info.value) == f"unable to upgrade connection: {text}"
    assert (info.value.status, info.value.body) == (500, body)
