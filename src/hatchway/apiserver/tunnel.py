"""kubectl 1.31+'s port-forward over WebSocket: SPDY tunnelled in binary messages.

kubectl asks for the WebSocket subprotocol ``SPDY/3.1+portforward.k8s.io`` and then
speaks plain SPDY/3.1 inside the WebSocket, the frames cut into binary messages whose
boundaries mean nothing (protocol.md 6.5). As Kubernetes' API server does
(``pkg/util/proxy/streamtunnel.go``), the API server terminates the WebSocket and asks
the node for a SPDY upgrade (POST, ``X-Stream-Protocol-Version: portforward.k8s.io``);
only when the node switched does the client get its 101, naming the tunnel subprotocol.
Then :func:`relay` carries bytes: the payloads of the client's frames to the node as
they are, the node's bytes to the client as binary messages. The SPDY stream itself is
never parsed here; WebSocket pings are answered and the close handshake done by the
``websockets`` sans-I/O protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.apiserver.app import Call
from hatchway.apiserver.exec_handler import Dial
from hatchway.apiserver.proxy import ExecProxy, SpliceStats, forward_headers
from hatchway.protocol import channel, handshake
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.http import ClientResponse, Response

READ_CHUNK = 256 * 1024
#: Largest message the client may send: a SPDY frame is at most 16 MiB, and kubectl
#: sends each frame's header and payload as messages of their own (32 KiB payloads).
MAX_MESSAGE = 16 * 1024 * 1024 + 8
#: The client's headers that describe its WebSocket, not the node's SPDY upgrade.
_WEBSOCKET_HEADERS = frozenset({"connection", "upgrade", "x-stream-protocol-version"})


def requested(headers: Mapping[str, str] | list[tuple[str, str]]) -> bool:
    """Whether the request is a WebSocket upgrade offering the tunnel subprotocol."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    upgrade = ",".join(v for k, v in pairs if k.lower() == "upgrade").lower()
    if "websocket" not in upgrade:
        return False
    offered = ",".join(v for k, v in pairs if k.lower() == "sec-websocket-protocol")
    return channel.PORT_FORWARD_TUNNEL in channel.parse_websocket_protocols(offered)


class TunnelDial(Dial):
    """The node is asked for SPDY; the client gets a WebSocket 101 and :func:`relay`."""

    def __init__(self, key: str, idle_timeout: float) -> None:
        self.key = key
        self.idle_timeout = idle_timeout

    def request(self, call: Call) -> tuple[str, list[tuple[str, str]]]:
        kept = [
            (name, value)
            for name, value in call.request.headers
            if name.lower() not in _WEBSOCKET_HEADERS
            and not name.lower().startswith("sec-websocket-")
        ]
        headers = forward_headers(kept, call.source_address, call.request_id)
        return "POST", headers + handshake.spdy_request_headers(channel.PORT_FORWARD_SPDY_PROTOCOLS)

    def switch(
        self,
        proxy: ExecProxy,
        answer: ClientResponse,
        node: ByteStream,
        on_end: Callable[[SpliceStats], Awaitable[None]],
        on_abandon: Callable[[], None],
    ) -> Response:
        try:
            protocol = handshake.check_spdy_response(answer.status, answer.headers)
        except handshake.UpgradeFailedError:
            protocol = ""
        if protocol != channel.PORT_FORWARD:
            node.abort()
            raise StatusError(
                status.internal_error(f"invalid upgrade response: protocol {protocol!r}")
            )
        idle_timeout = self.idle_timeout

        def abandon() -> None:
            node.abort()
            on_abandon()

        async def upgrade(client: ByteStream) -> None:
            stats = SpliceStats()
            try:
                stats.reason = await relay(client, node, stats, idle_timeout)
            finally:
                stats.ended = time.monotonic()
                await on_end(stats)

        headers = handshake.websocket_response_headers(self.key, channel.PORT_FORWARD_TUNNEL)
        return Response(101, headers, upgrade=upgrade, abandon=abandon)


class _Activity:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


async def _client_to_node(
    client: ByteStream, node: ByteStream, ws: Protocol, stats: SpliceStats, act: _Activity
) -> str:
    while data := await client.read(READ_CHUNK):
        act.touch()
        ws.receive_data(data)
        for frame in ws.events_received():
            if frame.opcode in (Opcode.BINARY, Opcode.CONT, Opcode.TEXT) and frame.data:
                node.write(frame.data)
                stats.bytes_to_node += len(frame.data)
        out = ws.data_to_send()  # pongs, the answer to a close, a protocol error's close
        if out:
            client.writelines([b for b in out if b])
        if ws.state is not State.OPEN:
            return "client"
        await node.drain()
    return "client"


async def _node_to_client(
    client: ByteStream, node: ByteStream, ws: Protocol, stats: SpliceStats, act: _Activity
) -> str:
    while data := await node.read(READ_CHUNK):
        act.touch()
        if ws.state is not State.OPEN:
            break
        ws.send_binary(data)
        stats.bytes_to_client += len(data)
        client.writelines(ws.data_to_send())
        await client.drain()
    return "node"


async def relay(
    client: ByteStream, node: ByteStream, stats: SpliceStats, idle_timeout: float
) -> str:
    """Carry the tunnel until either side ends (or nothing moved for ``idle_timeout``);
    returns which (``client``, ``node``, ``idle``). The node's end closes the WebSocket
    with 1000 after what is queued; both connections are closed at the end."""
    ws = Protocol(Side.SERVER, state=State.OPEN, max_size=MAX_MESSAGE)
    act = _Activity()
    tasks = [
        asyncio.ensure_future(_client_to_node(client, node, ws, stats, act)),
        asyncio.ensure_future(_node_to_client(client, node, ws, stats, act)),
    ]
    reason = "idle"
    try:
        while True:
            remaining = act.last + idle_timeout - time.monotonic()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait(
                tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                task = done.pop()
                reason = task.result() if not task.exception() else "client"
                break
        if reason == "node" and ws.state is State.OPEN:
            ws.send_close(1000)
            client.writelines(ws.data_to_send())
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if reason == "idle":
            stats.error = "idle timeout"
            client.abort()
            node.abort()
        for stream in (client, node):
            stream.drain_idle_timeout = idle_timeout
        await asyncio.gather(client.aclose(), node.aclose(), return_exceptions=True)
    return reason
