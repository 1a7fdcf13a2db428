"""The exec proxy's splice over real TLS on both hops, under asyncio and uvloop: every
byte of a large transfer both ways at once, the audit's byte counts and end reasons,
abrupt close of either side, the idle timeout, and a slow reader."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hatchway import pki
from hatchway.apiserver.proxy import SpliceStats, splice
from hatchway.transport import bytestream
from hatchway.transport.bytestream import ByteStream, Server

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 20 * SCALE
MIB = 1024 * 1024
#: What a spliced connection may hold: its high watermark, plus the one read that crossed
#: it, plus TLS framing (about 1/500).
BOUND = bytestream.SPLICE_SEND_HIGH + bytestream.READ_CHUNK + 16 * 1024
LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca = pki.create_ca(directory)
    pki.issue_certificate(
        ca, directory / "srv", common_name="localhost", ip_addresses=["127.0.0.1"], server=True
    )
    return directory


def run(loop: str, coro: Awaitable[Any]) -> Any:
    if loop == "uvloop":
        return pytest.importorskip("uvloop").run(coro)
    return asyncio.run(coro)  # type: ignore[arg-type]


@dataclass
class Session:
    client: ByteStream  # the client's end
    node: ByteStream  # the node's end
    task: asyncio.Task[str]  # the API server's splice()
    stats: SpliceStats
    inner: tuple[ByteStream, ByteStream]  # the API server's two connections


Body = Callable[[Session], Awaitable[None]]


async def through_proxy(certs: Path, idle: float, body: Body) -> None:
    """client end -> [API server side | splice | node side] -> node end, TLS hops."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "srv.crt", certs / "srv.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(certs / "ca.crt")
    loop = asyncio.get_running_loop()
    node_end: asyncio.Future[ByteStream] = loop.create_future()
    spliced: asyncio.Future[tuple[asyncio.Task[str], ByteStream, ByteStream]]
    spliced = loop.create_future()
    stats = SpliceStats()

    async def node_handler(stream: ByteStream) -> None:
        node_end.set_result(stream)
        await stream.wait_closed()

    async def proxy_handler(client: ByteStream) -> None:
        node = await ByteStream.connect("127.0.0.1", node_server.port, ssl=client_ctx)
        task = asyncio.ensure_future(splice(client, node, stats, idle))
        spliced.set_result((task, client, node))
        await task

    node_server, proxy_server = Server(node_handler), Server(proxy_handler)
    await node_server.start("127.0.0.1", 0, ssl=server_ctx)
    await proxy_server.start("127.0.0.1", 0, ssl=server_ctx)
    try:
        async with asyncio.timeout(T):
            client = await ByteStream.connect("127.0.0.1", proxy_server.port, ssl=client_ctx)
            node, (task, inner_client, inner_node) = await node_end, await spliced
        await body(Session(client, node, task, stats, (inner_client, inner_node)))
    finally:
        await proxy_server.close()
        await node_server.close()


async def send(stream: ByteStream, total: int, seed: int) -> str:
    digest = hashlib.sha256()
    data = memoryview(hashlib.sha256(str(seed).encode()).digest() * (MIB // 32))
    sent = 0
    while sent < total:
        piece = data[: min(total - sent, 200_000 + sent % 7919)]
        stream.write(piece)
        digest.update(piece)
        sent += len(piece)
        await stream.drain()
    return digest.hexdigest()


async def receive(stream: ByteStream, total: int, pause: float = 0.0) -> str:
    digest, count = hashlib.sha256(), 0
    while count < total:
        data = await stream.read()
        assert data, f"EOF after {count} of {total} bytes"
        digest.update(data)
        count += len(data)
        if pause:
            await asyncio.sleep(pause)
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("loop", LOOPS)
def test_256_mib_both_ways_at_once(loop: str, certs: Path) -> None:
    size = 256 * MIB + 777

    async def body(s: Session) -> None:
        client, node, task, stats = s.client, s.node, s.task, s.stats
        async with asyncio.timeout(12 * T):
            up, up_got, down, down_got = await asyncio.gather(
                send(client, size, 1), receive(node, size), send(node, size, 2),
                receive(client, size),
            )  # fmt: skip
            assert (up_got, down_got) == (up, down)
            client.close()
            assert await task == "client"
        assert (stats.bytes_to_node, stats.bytes_to_client) == (size, size)
        assert await node.read() == b""

    run(loop, through_proxy(certs, 3600.0, body))


@pytest.mark.parametrize("side", ["client", "node"])
@pytest.mark.parametrize("loop", LOOPS)
def test_abrupt_close_of_either_side_closes_the_other(loop: str, side: str, certs: Path) -> None:
    async def body(s: Session) -> None:
        client, node, task, stats = s.client, s.node, s.task, s.stats
        gone, other = (client, node) if side == "client" else (node, client)
        async with asyncio.timeout(T):
            gone.write(b"0123456789")
            assert await other.readexactly(10) == b"0123456789"
            sock = gone.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            gone.abort()  # a reset, no TLS close_notify
            assert await task == side
            assert await other.read() == b""
            await other.wait_closed()
        assert stats.bytes_to_node + stats.bytes_to_client == 10

    run(loop, through_proxy(certs, 3600.0, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_timeout_counts_from_the_last_byte(loop: str, certs: Path) -> None:
    idle = 0.4

    async def body(s: Session) -> None:
        client, node, task, stats = s.client, s.node, s.task, s.stats
        async with asyncio.timeout(T):
            for _ in range(8):  # 0.8 s of a byte every 0.1 s: longer than idle, not idle
                client.write(b"k")
                await asyncio.sleep(0.1 * SCALE)
                assert not task.done()
            assert await node.readexactly(8) == b"kkkkkkkk"
            assert await task == "idle"
            assert await client.read() == b""
            assert await node.read() == b""
        assert stats.bytes_to_node == 8
        assert stats.error == "idle timeout"

    run(loop, through_proxy(certs, idle * SCALE, body))


def _slow_socket(stream: ByteStream) -> None:
    """Keep what the client has not read on the API server's side."""
    stream.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    stream.set_recv_limit(64 * 1024)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_client_gets_the_tail_after_the_node_has_gone(loop: str, certs: Path) -> None:
    """The node sends its last bytes and closes; the API server's close of the client
    side waits for as long as the client keeps reading, and the audit has no error."""
    size = 2 * MIB

    async def body(s: Session) -> None:
        client, node, task, stats = s.client, s.node, s.task, s.stats
        _slow_socket(client)
        async with asyncio.timeout(3 * T):
            sending = asyncio.ensure_future(send(node, size, 4))
            got = await receive(client, size, pause=0.05)  # 64 KiB at a time: ~1.3 MiB/s
            sent = await sending
            await node.aclose()
            assert await task == "node"
            assert await client.read() == b""
        assert sent == got
        assert stats.error == ""

    run(loop, through_proxy(certs, 2.0 * SCALE, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_takes_nothing_is_cut_and_the_audit_says_so(loop: str, certs: Path) -> None:
    idle = 1.0 * SCALE

    async def body(s: Session) -> None:
        client, node, task, stats = s.client, s.node, s.task, s.stats
        _slow_socket(client)  # and it reads nothing
        async with asyncio.timeout(T):
            node.write(b"x" * (300 * 1024))  # fits in the API server's buffers
            await node.aclose()
            assert await task == "node"  # ended by the node, then the client side cut
            await s.inner[0].wait_closed()
        assert s.inner[0].cut
        assert stats.error == (
            "the client stopped reading: output not delivered "
            f"(no progress for {idle:.0f} s, connection cut)"
        )

    run(loop, through_proxy(certs, idle, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_keeps_the_proxy_bounded(loop: str, certs: Path) -> None:
    size = 24 * MIB

    async def body(s: Session) -> None:
        client, node = s.client, s.node
        proxy_side: list[int] = []

        async def watch() -> None:  # what the API server holds towards the client
            while True:
                proxy_side.append(max(x._transport.get_write_buffer_size() for x in s.inner))
                await asyncio.sleep(0.02)

        watcher = asyncio.ensure_future(watch())
        try:
            async with asyncio.timeout(6 * T):
                sent, got = await asyncio.gather(
                    send(node, size, 3), receive(client, size, pause=0.002)
                )
        finally:
            watcher.cancel()
        assert sent == got
        assert max(proxy_side) <= BOUND, proxy_side

    run(loop, through_proxy(certs, 3600.0, body))


def test_mmap_threshold_is_fixed_in_a_glibc_process() -> None:
    """Idle sessions' 256 KiB TLS read buffers stay untouched mappings (server.py)."""
    code = (
        "from hatchway.apiserver.server import fix_mmap_threshold as f;print(f(0), f(128 * 1024))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    expected = "False True" if libc and libc.startswith("glibc") else "False False"
    assert out.stdout.strip() == expected, out.stderr
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # glibc's own setting wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False False", out.stderr
