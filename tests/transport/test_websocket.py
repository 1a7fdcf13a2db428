"""WebSocketConnection over real TLS on 127.0.0.1: data, backpressure, close semantics,
close signal, ping/pong, base64, fragmentation, hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side

from hatchway.errors import ConnectionClosedError, ProtocolError
from hatchway.protocol import channel as ch
from hatchway.transport.bytestream import ByteStream, start_server
from hatchway.transport.websocket import WebSocketConnection

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
T = 10 * SCALE  # default deadline for one step


# -- throwaway PKI ----------------------------------------------------------------------


def _cert(subject, issuer, pub, key, *, ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = _cert(name, ca_name, key.public_key(), ca_key, ca=False)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "srv.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "srv.key").write_bytes(_pem_key(key))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "srv.pem", d / "srv.key")
    client = ssl.create_default_context(cafile=str(d / "ca.pem"))
    return server, client


# -- connection pairs -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stream_pair(tls):
    """Two connected ByteStreams over TLS on loopback: (client, server)."""
    server_ctx, client_ctx = tls
    accepted: asyncio.Queue[ByteStream] = asyncio.Queue()
    release = asyncio.Event()

    async def handler(stream: ByteStream) -> None:
        await accepted.put(stream)
        await release.wait()

    server = await start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    try:
        client = await ByteStream.connect("127.0.0.1", server.port, ssl=client_ctx, timeout=T)
        async with asyncio.timeout(T):
            served = await accepted.get()
        try:
            yield client, served
        finally:
            client.abort()
            served.abort()
    finally:
        release.set()
        await server.close()


@contextlib.asynccontextmanager
async def ws_pair(tls, protocol=ch.V5, **kwargs):
    async with stream_pair(tls) as (cbs, sbs):
        cli = WebSocketConnection(cbs, client=True, protocol=protocol, **kwargs).start()
        srv = WebSocketConnection(sbs, client=False, protocol=protocol, **kwargs).start()
        try:
            yield cli, srv
        finally:
            cli.abort()
            srv.abort()
            await cli.wait_closed()
            await srv.wait_closed()


class RawPeer:
    """A bare-frames peer: send exactly the frames a test wants, parse what comes back."""

    def __init__(self, stream: ByteStream, side: Side) -> None:
        self.stream = stream
        self.side = side
        self.proto = Protocol(side, max_size=None)
        self.pending: list[Frame] = []

    def send(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        self.stream.write(Frame(opcode, data, fin).serialize(mask=self.side is Side.CLIENT))

    async def frame(self) -> Frame | None:
        """Next frame from the peer, None at EOF."""
        async with asyncio.timeout(T):
            while not self.pending:
                data = await self.stream.read()
                if not data:
                    return None
                self.proto.receive_data(data)
                self.pending += self.proto.events_received()
        return self.pending.pop(0)


async def read_exactly(stream, n: int) -> bytes:
    buf = b""
    async with asyncio.timeout(T):
        while len(buf) < n:
            chunk = await stream.read()
            assert chunk, f"EOF after {len(buf)} of {n} bytes"
            buf += chunk
    return buf


# -- bulk data --------------------------------------------------------------------------

PATTERN_LEN = (1 << 20) + 13  # not a multiple of the chunk size: lost chunks shift the hash
CHUNK = 256 * 1024


def _pattern() -> memoryview:
    base = os.urandom(PATTERN_LEN)
    return memoryview(base + base)


async def _send_bulk(stream, total: int, pattern: memoryview) -> str:
    h = hashlib.sha256()
    sent = 0
    while sent < total:
        off = sent % PATTERN_LEN
        piece = pattern[off : off + min(CHUNK, total - sent)]
        h.update(piece)
        await stream.write(piece)
        sent += len(piece)
    return h.hexdigest()


async def _recv_bulk(stream) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := await stream.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


@pytest.mark.slow
async def test_256mib_each_way_on_several_channels(tls):
    total = 256 << 20
    pattern = _pattern()
    async with ws_pair(tls) as (cli, srv):
        c_stdin = await cli.open_stream({"streamtype": "stdin"})
        c_out = await cli.open_stream({"streamtype": "stdout"})
        c_err = await cli.open_stream({"streamtype": "stderr"})
        s_stdin = await srv.open_stream({"streamtype": "stdin"})
        s_out = await srv.open_stream({"streamtype": "stdout"})
        s_err = await srv.open_stream({"streamtype": "stderr"})
        s_error = await srv.open_stream({"streamtype": "error"})
        c_error = await cli.open_stream({"streamtype": "error"})

        async def client_side():
            digest = await _send_bulk(c_stdin, total, pattern)
            await c_stdin.write_eof()  # v5 close signal -> EOF on the server's stdin
            return digest

        async def server_side():
            # Like a session: pump both outputs and stdin, then status and close 1000
            # (the only way a WebSocket server ends its output channels).
            digests = await asyncio.gather(
                _send_bulk(s_out, total // 2, pattern[7:]),
                _send_bulk(s_err, total // 2, pattern[11:]),
                _recv_bulk(s_stdin),
            )
            await s_error.write(ch.status_success())
            await srv.close()
            return digests

        start = time.perf_counter()
        async with asyncio.timeout(120 * SCALE):
            results = await asyncio.gather(
                client_side(),
                server_side(),
                _recv_bulk(c_out),
                _recv_bulk(c_err),
                c_error.read_all(),
            )
        elapsed = time.perf_counter() - start
        sent_in, (sent_out, sent_err, got_in), got_out, got_err, status = results
        assert got_in == (total, sent_in)
        assert got_out == (total // 2, sent_out)
        assert got_err == (total // 2, sent_err)
        assert ch.parse_status(cli.protocol, status).success
        await cli.wait_closed()
        assert cli.close_code == 1000 and srv.close_code == 1000
        mbps = 2 * total / elapsed / 1e6
        print(f"\n256 MiB each way over TLS in {elapsed:.2f}s: {mbps:.0f} MB/s both directions")


async def test_slow_reader_makes_writer_wait(tls):
    bound = 256 * 1024
    async with ws_pair(tls, channel_buffer=bound) as (cli, srv):
        out = await srv.open_stream({"streamtype": "stdout"})
        c_out = await cli.open_stream({"streamtype": "stdout"})
        written = 0
        block = os.urandom(64 * 1024)

        async def writer():
            nonlocal written
            for _ in range(1024):  # 64 MiB if nobody slowed us down
                await out.write(block)
                written += len(block)

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.5 * SCALE)
        plateau = written
        await asyncio.sleep(0.3 * SCALE)
        assert not task.done()
        assert written == plateau, "writer kept going while the reader was stalled"
        # Receiver-side buffering stays bounded: channel bound plus one socket read.
        assert c_out.buffered <= bound + 1024 * 1024 + len(block) + 1
        assert written < 24 << 20
        got = 0
        async with asyncio.timeout(30 * SCALE):
            while got < 1024 * len(block):
                got += len(await c_out.read(1 << 20))
        await task
        assert written == got == 1024 * len(block)


async def test_close_signal_gives_eof_on_stdin(tls):
    async with ws_pair(tls) as (cli, srv):
        c_in = await cli.open_stream({"streamtype": "stdin"})
        s_in = await srv.open_stream({"streamtype": "stdin"})
        await c_in.write(b"foo\nbar\n")
        await c_in.write_eof()
        assert await read_exactly(s_in, 8) == b"foo\nbar\n"
        async with asyncio.timeout(T):
            assert await s_in.read() == b""
        # the connection is still open: other channels work
        s_out = await srv.open_stream({"streamtype": "stdout"})
        await s_out.write(b"still here")
        c_out = await cli.open_stream({"streamtype": "stdout"})
        assert await read_exactly(c_out, 10) == b"still here"


async def test_close_signal_wire_bytes_and_v4_has_none(tls):
    for protocol, expect in ((ch.V5, b"\xff\x00"), (ch.V4, None)):
        async with stream_pair(tls) as (cbs, sbs):
            cli = WebSocketConnection(cbs, client=True, protocol=protocol).start()
            peer = RawPeer(sbs, Side.SERVER)
            stdin = await cli.open_stream({"streamtype": "stdin"})
            await stdin.write_eof()
            await stdin.write(b"x")
            frame = await peer.frame()
            if expect is not None:
                assert frame.opcode is Opcode.BINARY and frame.data == expect
                frame = await peer.frame()
            assert frame.data == b"\x00x"
            cli.abort()


async def test_initial_message_bytes(tls):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5).start()
        await srv.send_initial_message("stdout")
        assert await cbs.readexactly(3) == bytes.fromhex("820101")  # protocol.md 5.9 vector
        srv.abort()


async def test_ping_is_answered_and_pings_are_sent(tls):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5).start()
        peer = RawPeer(cbs, Side.CLIENT)
        peer.send(Opcode.PING, b"")
        peer.send(Opcode.PING, b"abc")
        f1, f2 = await peer.frame(), await peer.frame()
        assert (f1.opcode, f1.data, f2.opcode, f2.data) == (Opcode.PONG, b"", Opcode.PONG, b"abc")
        srv.abort()
    async with ws_pair(tls, ping_interval=0.05) as (cli, srv):
        await asyncio.sleep(0.3 * SCALE)
        assert cli.last_pong is not None and srv.last_pong is not None


async def test_no_unsolicited_pongs(tls):
    async with stream_pair(tls) as (cbs, sbs):
        cli = WebSocketConnection(cbs, client=True, protocol=ch.V5, ping_interval=0.05).start()
        peer = RawPeer(sbs, Side.SERVER)
        for _ in range(3):
            frame = await peer.frame()
            assert frame.opcode is Opcode.PING
        cli.abort()


async def test_clean_close_1000(tls):
    async with ws_pair(tls) as (cli, srv):
        s_err = await srv.open_stream({"streamtype": "error"})
        c_err = await cli.open_stream({"streamtype": "error"})
        c_out = await cli.open_stream({"streamtype": "stdout"})
        await s_err.write(ch.status_success())
        async with asyncio.timeout(T):
            await srv.close()
            assert await c_err.read_all() == ch.status_success()
            assert await c_out.read() == b""
            await cli.wait_closed()
        assert cli.close_code == 1000 and srv.close_code == 1000
        assert cli.error is None
        with pytest.raises(ConnectionClosedError):
            await c_out.write(b"late")


async def test_abrupt_close_is_1006_and_1011_is_kept(tls):
    async with ws_pair(tls) as (cli, srv):
        c_out = await cli.open_stream({"streamtype": "stdout"})
        srv.abort()
        async with asyncio.timeout(T):
            assert await c_out.read() == b""
            await cli.wait_closed()
        assert cli.close_code == 1006
    async with ws_pair(tls) as (cli, srv):
        async with asyncio.timeout(T):
            await srv.close(1011)
            await cli.wait_closed()
        assert cli.close_code == 1011


async def test_client_close(tls):
    async with ws_pair(tls) as (cli, srv):
        s_in = await srv.open_stream({"streamtype": "stdin"})
        async with asyncio.timeout(T):
            await cli.close()
            assert await s_in.read() == b""
            await srv.wait_closed()
        assert srv.close_code == 1000 and cli.close_code == 1000


async def test_base64_end_to_end(tls):
    async with ws_pair(tls, protocol=ch.BASE64_V4) as (cli, srv):
        c_in = await cli.open_stream({"streamtype": "stdin"})
        s_in = await srv.open_stream({"streamtype": "stdin"})
        payload = os.urandom(100_000)
        await c_in.write(payload)
        assert await read_exactly(s_in, len(payload)) == payload
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.BASE64_V1).start()
        peer = RawPeer(cbs, Side.CLIENT)
        await srv.send_initial_message(ch.STDOUT)
        out = await srv.open_stream({"streamtype": "stdout"})
        await out.write(b"\n")
        f1, f2 = await peer.frame(), await peer.frame()
        assert (f1.opcode, f1.data) == (Opcode.TEXT, b"1")
        assert (f2.opcode, f2.data) == (Opcode.TEXT, b"1Cg==")  # protocol.md 5.5
        peer.send(Opcode.TEXT, b"0Zm9vCg==")
        s_in = await srv.open_stream({"streamtype": "stdin"})
        assert await read_exactly(s_in, 4) == b"foo\n"
        srv.abort()


async def test_fragmented_and_text_messages_reassembled(tls):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5).start()
        s_in = await srv.open_stream({"streamtype": "stdin"})
        peer = RawPeer(cbs, Side.CLIENT)
        peer.send(Opcode.BINARY, b"\x00foo", fin=False)
        peer.send(Opcode.CONT, b"bar", fin=False)
        peer.send(Opcode.PING, b"mid")  # control frames may interleave
        peer.send(Opcode.CONT, b"baz", fin=True)
        peer.send(Opcode.TEXT, b"\x00 and text")  # the Python client's str data
        assert await read_exactly(s_in, 18) == b"foobarbaz and text"
        pong = await peer.frame()
        assert (pong.opcode, pong.data) == (Opcode.PONG, b"mid")
        srv.abort()


async def test_unknown_channel_discarded_and_bytes_past_upgrade_kept(tls):
    async with stream_pair(tls) as (cbs, sbs):
        peer = RawPeer(cbs, Side.CLIENT)
        # Bytes the HTTP layer read past the 101 are pushed back before the driver starts.
        early = Frame(Opcode.BINARY, b"\x00early ").serialize(mask=True)
        sbs.unread(early)
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5).start()
        peer.send(Opcode.BINARY, b"\x09ignored")
        peer.send(Opcode.BINARY, b"\x00")  # zero-length data
        peer.send(Opcode.BINARY, b"\x00late")
        s_in = await srv.open_stream({"streamtype": "stdin"})
        assert await read_exactly(s_in, 10) == b"early late"
        assert srv.error is None and not srv.closed
        with pytest.raises(ConnectionClosedError):
            await srv.accept_stream()
        srv.abort()


@pytest.mark.parametrize(
    ("protocol", "opcode", "payload", "code"),
    [
        (ch.V5, Opcode.BINARY, b"\xff\x00\x00", 1002),  # close signal of wrong length
        (ch.V5, Opcode.BINARY, b"\xff\x07", 1002),  # close signal for a channel out of range
        (ch.BASE64_V4, Opcode.TEXT, b"0!!!!", 1007),  # bad base64
    ],
)
async def test_hostile_messages_fail_the_connection(tls, protocol, opcode, payload, code):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=protocol).start()
        s_in = await srv.open_stream({"streamtype": "stdin"})
        peer = RawPeer(cbs, Side.CLIENT)
        peer.send(opcode, payload)
        frame = await peer.frame()
        assert frame.opcode is Opcode.CLOSE and Close.parse(frame.data).code == code
        async with asyncio.timeout(T):
            assert await s_in.read() == b""
            await srv.wait_closed()
        assert isinstance(srv.error, ProtocolError)


async def test_oversize_message_closes_1009(tls):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5, max_message=1024).start()
        peer = RawPeer(cbs, Side.CLIENT)
        peer.send(Opcode.BINARY, b"\x00" + b"x" * 2000)
        frame = await peer.frame()
        assert frame.opcode is Opcode.CLOSE and Close.parse(frame.data).code == 1009
        async with asyncio.timeout(T):
            await srv.wait_closed()
        assert srv.error is not None and srv.error.code == 1009


async def test_async_context_manager_owns_tasks(tls):
    async with stream_pair(tls) as (cbs, sbs):
        srv = WebSocketConnection(sbs, client=False, protocol=ch.V5)
        async with WebSocketConnection(cbs, client=True, protocol=ch.V5, ping_interval=1) as cli:
            srv.start()
            tasks = list(cli._tasks)
            assert len(tasks) == 2
        assert all(t.done() for t in tasks)
        assert cli.close_code == 1000
        srv.abort()


async def test_a_peer_that_dies_while_our_channels_are_full_ends_the_connection(tls):
    """As for SPDY: a reader that stopped reading (full channel buffers) must still see
    the peer go, or the session (and its process) waits for ever."""
    async with ws_pair(tls, channel_buffer=256 * 1024) as (cli, srv):
        c_in = await cli.open_stream({"streamtype": "stdin"})
        await srv.open_stream({"streamtype": "stdin"})  # and never read
        block, written = os.urandom(64 * 1024), [0]

        async def writer() -> None:
            with contextlib.suppress(ConnectionClosedError, OSError):
                while True:
                    await c_in.write(block)
                    written[0] += len(block)

        task = asyncio.create_task(writer())
        plateau = -1
        async with asyncio.timeout(30 * SCALE):
            while plateau != written[0]:
                plateau = written[0]
                await asyncio.sleep(0.3 * SCALE)
        assert srv._gate.paused  # the server's reader has stopped reading
        sock = cli._stream.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cli._stream.abort()  # a killed process with unread data: a reset
        async with asyncio.timeout(10 * SCALE):
            await srv.wait_closed()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_keystroke_reaches_the_stdin_sink_from_the_socket_callback(tls):
    """Server side, connection open and not paused: each message goes to its channel --
    here through a stdin sink, as the session's -- from the callback that read the
    socket (no task runs it: not the read loop's), in order; a sink that takes nothing
    leaves the bytes queued for read(), and the gate bounds them as before."""
    bound = 64 * 1024
    async with ws_pair(tls, channel_buffer=bound) as (cli, srv):
        c_in = await cli.open_stream({"streamtype": "stdin"})
        s_in = await srv.open_stream({"streamtype": "stdin"})
        got: list[tuple[bytes, asyncio.Task[object] | None]] = []
        room = [True]

        def sink(parts) -> int:  # type: ignore[no-untyped-def]
            if not room[0]:
                return 0
            data = b"".join(bytes(p) for p in parts)
            got.append((data, asyncio.current_task()))
            return len(data)

        assert s_in.set_sink(sink)
        async with asyncio.timeout(T):
            for i, key in enumerate(b"keys"):
                await c_in.write(bytes((key,)))
                while len(got) <= i:
                    await asyncio.sleep(0.005)
        assert [d for d, _ in got] == [b"k", b"e", b"y", b"s"]
        assert [t for _, t in got] == [None] * 4, "delivered from a task, not the callback"
        room[0] = False
        block = b"z" * 16384
        writer = asyncio.ensure_future(_write_n(c_in, block, 64))
        async with asyncio.timeout(T):
            while s_in.buffered < bound:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.2 * SCALE)
        # The channel bound plus what the socket buffers hold: the reader stopped.
        assert s_in.buffered <= bound + 1024 * 1024 + len(block)
        total = 0
        async with asyncio.timeout(30 * SCALE):
            while total < 64 * len(block):
                total += len(await s_in.read(1 << 20))
            await writer
        assert total == 64 * len(block)


async def _write_n(stream, block: bytes, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        await stream.write(block)
