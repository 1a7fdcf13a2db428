"""Port-forward on the node endpoint with real runc pods (protocol.md 6.3): busybox
``nc`` servers listening on the pod's loopback only, reached over SPDY stream pairs and
the WebSocket channel form; the kubelet's errors; the bounds."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import pytest_asyncio

from cluster import nc_server
from hatchway.errors import ConnectionClosedError, StreamResetError
from hatchway.node.portforward import PortForwardLimits
from hatchway.protocol.portforward import parse_ports
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection

from .conftest import SCALE, needs_runc, pod_uid
from .endpoint_harness import Node, pod, running_node

pytestmark = [needs_runc, pytest.mark.runc]
module_loop = pytest.mark.asyncio(loop_scope="module")

# Servers in the pod's own network namespace: only a connect made inside it reaches them.
SERVERS = " ".join(
    (
        nc_server(8080, "cat"),
        nc_server(8081, "sha256sum"),
        nc_server(8082, "busybox", "echo", "hello-from-8082"),
        "wait",
    )
)
PF = pod("pf", [{"name": "main", "image": "busybox", "command": ["sh", "-c", SERVERS]}])
TARGET = f"/portForward/default/pf/{pod_uid('pf')}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory):
    async with running_node(str(tmp_path_factory.mktemp("node")), [PF]) as n:
        conn = await spdy(n)
        try:  # the container runs: wait for its servers to listen
            async with asyncio.timeout(30 * SCALE):
                for i in range(1000):
                    if await forward(conn, 8082, i, b"") == (b"hello-from-8082\n", ""):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()
        yield n


async def spdy(node: Node) -> SpdyConnection:
    response, conn = await node.upgrade(TARGET, protocols=("portforward.k8s.io",))
    assert conn is not None, (response.status, response.body)
    assert response.header("x-stream-protocol-version") == "portforward.k8s.io"
    assert isinstance(conn, SpdyConnection)
    return conn


async def read_all(stream) -> bytes:  # type: ignore[no-untyped-def]
    chunks = []
    while chunk := await stream.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def forward(conn: SpdyConnection, port: int, request_id: int, payload: bytes):  # type: ignore[no-untyped-def]
    """One connection as kubectl makes it: error stream (half-closed at once), then the
    data stream; send ``payload``, half-close, read the answer and the error text."""
    headers = {"port": str(port), "requestid": str(request_id)}
    error = await conn.open_stream({"streamtype": "error", **headers})
    await error.write_eof()
    data = await conn.open_stream({"streamtype": "data", **headers})

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 1 << 18):
            await data.write(view[i : i + (1 << 18)])
        await data.write_eof()

    async with asyncio.timeout(60 * SCALE):
        _, answer, text = await asyncio.gather(send(), read_all(data), read_all(error))
    return answer, text.decode()


@module_loop
async def test_echo_with_half_close_over_spdy(node: Node):
    conn = await spdy(node)
    try:
        answer, error = await forward(conn, 8080, 0, b"ping\n" * 1000)
        assert (answer, error) == (b"ping\n" * 1000, "")
        # The pod's answer after our half-close: sha256sum prints once it read EOF.
        payload = bytes(range(256)) * 4096
        answer, error = await forward(conn, 8081, 1, payload)
        assert answer.split()[0].decode() == hashlib.sha256(payload).hexdigest()
        assert error == ""
    finally:
        await conn.close()


@module_loop
async def test_many_concurrent_connections_to_several_ports(node: Node):
    conn = await spdy(node)
    try:

        async def one(i: int) -> None:
            port = (8080, 8081, 8082)[i % 3]
            payload = f"connection {i}\n".encode() * (i + 1)
            if port == 8082:  # it reads nothing: what we sent could reset its answer
                payload = b""
            answer, error = await forward(conn, port, i, payload)
            assert error == ""
            if port == 8080:
                assert answer == payload
            elif port == 8081:
                assert answer.split()[0].decode() == hashlib.sha256(payload).hexdigest()
            else:
                assert answer == b"hello-from-8082\n"

        await asyncio.gather(*(one(i) for i in range(60)))
    finally:
        await conn.close()


@module_loop
async def test_an_unreachable_port_gets_the_kubelet_error(node: Node):
    conn = await spdy(node)
    try:
        answer, error = await forward(conn, 9999, 0, b"x")
        assert answer == b""
        assert error.startswith(
            "error forwarding port 9999: failed to connect to localhost:9999 inside namespace"
        ), error
        assert "dial tcp4 127.0.0.1:9999: connect: connection refused" in error
        # The session goes on: the next connection works.
        assert await forward(conn, 8080, 1, b"after\n") == (b"after\n", "")
    finally:
        await conn.close()


@module_loop
async def test_streams_with_bad_headers_are_reset(node: Node):
    conn = await spdy(node)
    try:
        for headers in (
            {"streamtype": "data", "port": "0", "requestid": "1"},
            {"streamtype": "data", "port": "65536", "requestid": "1"},
            {"streamtype": "data", "port": "http", "requestid": "1"},
            {"streamtype": "stdin", "port": "8080", "requestid": "1"},
            {"streamtype": "data", "port": "8080", "requestid": "r" * 65},
        ):
            stream = await conn.open_stream(headers)
            async with asyncio.timeout(10 * SCALE):
                assert await stream.read() == b""
            with pytest.raises((StreamResetError, ConnectionClosedError)):
                await stream.write(b"x")
        assert await forward(conn, 8080, 2, b"still\n") == (b"still\n", "")
    finally:
        await conn.close()


@module_loop
async def test_spdy_needs_the_port_forward_protocol(node: Node):
    response, conn = await node.upgrade(TARGET, protocols=("v4.channel.k8s.io",))
    assert conn is None
    assert response.status == 403
    assert response.header_values("x-accepted-stream-protocol-versions") == ["portforward.k8s.io"]


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/portForward/default/nope", 404, "pod does not exist\n"),
        (f"/portForward/default/pf/{pod_uid('other')}", 409, None),
        ("/portForward/default/pf/not-a-uid", 400, None),
        ("/portForward/Bad_NS/pf", 400, None),
    ],
)
@module_loop
async def test_errors_before_the_upgrade(node: Node, target, status, body):
    response, conn = await node.upgrade(target, protocols=("portforward.k8s.io",))
    assert conn is None
    assert response.status == status
    if body is not None:
        assert response.body.decode() == body


@module_loop
async def test_websocket_channels_as_the_python_client_uses_them(node: Node):
    for query, message in (("", 'query parameter "port" is required'), ("?ports=x", "unable")):
        response, conn = await node.upgrade(
            TARGET + query, transport="websocket", protocols=("v4.channel.k8s.io",)
        )
        assert conn is None and response.status == 400
        assert response.body.decode().startswith(message)
    response, conn = await node.upgrade(
        TARGET + "?ports=8082,9999", transport="websocket", protocols=("v4.channel.k8s.io",)
    )
    assert conn is not None, (response.status, response.body)
    assert isinstance(conn, WebSocketConnection)
    try:
        async with asyncio.timeout(30 * SCALE):
            data0, error0 = conn.channel(0), conn.channel(1)
            data1, error1 = conn.channel(2), conn.channel(3)
            received = b""
            while len(received) < 2 + len(b"hello-from-8082\n"):
                received += await data0.read()
            assert received == (8082).to_bytes(2, "little") + b"hello-from-8082\n"
            assert await error0.read() == (8082).to_bytes(2, "little")
            assert await data1.read() == (9999).to_bytes(2, "little")
            port, text = await error1.read(2), b""
            assert port == (9999).to_bytes(2, "little")
            while b"refused" not in text:
                text += await error1.read()
            assert text.startswith(b"error forwarding port 9999: failed to connect")
            # Both forwards are over: the node closes the connection.
            await conn.wait_closed()
    finally:
        conn.abort()


def test_parse_ports():
    assert parse_ports(["80,8080", "9000"]) == [80, 8080, 9000]
    for bad in ([], [""], ["0"], ["65536"], ["-1"], ["1" * 6], [",".join(["80"] * 65)]):
        with pytest.raises(ValueError):
            parse_ports(bad)


@pytest_asyncio.fixture(loop_scope="module")
async def tight(node: Node):  # type: ignore[no-untyped-def]
    """The node endpoint with small port-forward bounds, restored afterwards."""
    endpoint = node.agent._endpoint
    assert endpoint is not None
    saved = endpoint.port_forward_limits
    endpoint.port_forward_limits = PortForwardLimits(
        max_connections=2, stream_creation_timeout=0.5 * SCALE
    )
    yield node
    endpoint.port_forward_limits = saved


@module_loop
async def test_a_half_made_pair_times_out_with_the_kubelet_text(tight: Node):
    conn = await spdy(tight)
    try:
        error = await conn.open_stream({"streamtype": "error", "port": "8080", "requestid": "7"})
        await error.write_eof()
        async with asyncio.timeout(10 * SCALE):  # no data stream comes
            assert await read_all(error) == b"timed out waiting for streams for request 7"
        assert await forward(conn, 8080, 8, b"later\n") == (b"later\n", "")
    finally:
        await conn.close()


@module_loop
async def test_connections_beyond_the_bound_are_reset(tight: Node):
    conn = await spdy(tight)
    try:
        held = []
        for i in range(2):  # two pairs to the echo, left open
            headers = {"port": "8080", "requestid": str(i)}
            error = await conn.open_stream({"streamtype": "error", **headers})
            data = await conn.open_stream({"streamtype": "data", **headers})
            held.append((error, data))
        extra = await conn.open_stream({"streamtype": "error", "port": "8080", "requestid": "9"})
        async with asyncio.timeout(10 * SCALE):
            assert await extra.read() == b""
        assert extra.reset_code is not None
        await held[0][1].write(b"still served\n")
        await held[0][1].write_eof()
        async with asyncio.timeout(10 * SCALE):
            assert await read_all(held[0][1]) == b"still served\n"
    finally:
        await conn.close()
