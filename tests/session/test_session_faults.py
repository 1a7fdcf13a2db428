"""Sessions over SPDY and WebSocket through a faulty link (``transport/memory.py``):
delay, trickle (frames split anywhere, one byte at a time), a cut mid-stdout and during
the streams' handshake, a client that stops reading. Whatever the fault, the output is
intact or the client reports the cut, the server session ends, nothing hangs."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.errors import ConnectionClosedError, RemoteCommandError
from hatchway.session import upgrade
from hatchway.session.client import SESSION_CUT, ClientSession
from hatchway.session.server import UNDELIVERED
from hatchway.transport.memory import MemoryPipe
from hatchway.types import ExecOptions

from .fakes import CASES, CURRENT, SCALE, ExecEndpoint, bulk_bytes, open_pair

BULK = 1024 * 1024
#: WebSocket v4 cannot carry stdin's EOF (protocol.md 5.1): ``cat`` would never end.
STDIN_CASES = [c for c in CASES if c[0] == "spdy" or c[1].startswith("v5")]
CAT = ExecOptions(("cat",), "main", stdin=True, stdout=True, stderr=True)
BULK_OUT = ExecOptions(("bulk", str(BULK)), "main", stdout=True, stderr=True)


async def echo(session: ClientSession, payload: bytes, piece: int = 50_000) -> bytes:
    """Feed ``payload`` to ``cat`` and close stdin; what came back on stdout."""

    async def feed() -> None:
        for i in range(0, len(payload), piece):
            await session.write_stdin(payload[i : i + piece])
        await session.close_stdin()

    assert session.stdout is not None
    _, out = await asyncio.gather(feed(), session.stdout.read_all(1 << 30))
    return out


def both_ways(**faults: object) -> object:
    def configure(pipe: MemoryPipe) -> None:
        for direction in pipe.directions:
            for name, value in faults.items():
                setattr(direction, name, value)

    return configure


@pytest.mark.parametrize(("transport", "version"), CURRENT)
async def test_a_delayed_link_changes_nothing(transport: str, version: str) -> None:
    pair = await open_pair(transport, version, CAT, faults=both_ways(delay=0.05))
    payload = bulk_bytes(300_001)
    try:
        async with asyncio.timeout(20 * SCALE):
            assert await echo(pair.session, payload) == payload
            assert await pair.session.wait() == 0
            await pair.session.close()
            outcome = await pair.done
        assert outcome.exit_code == 0 and outcome.bytes_in == len(payload)
        assert not outcome.client_gone
    finally:
        await pair.aclose()
    assert pair.pipe.a_to_b.dropped == 0


@pytest.mark.parametrize(("transport", "version"), STDIN_CASES)
async def test_one_byte_at_a_time_both_ways(transport: str, version: str) -> None:
    """Every frame header and payload split at every byte: the parsers wait for more."""
    pair = await open_pair(transport, version, CAT, faults=both_ways(trickle=1))
    payload = b"split me anywhere\n" * 20
    try:
        async with asyncio.timeout(30 * SCALE):
            assert await echo(pair.session, payload, piece=7) == payload
            if version.startswith(("v4", "v5")):
                assert await pair.session.wait() == 0
    finally:
        await pair.session.close()
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), CASES)
async def test_status_and_streams_one_byte_at_a_time(transport: str, version: str) -> None:
    """Every version's status, stdout and stderr through a one-byte-per-turn link."""
    options = ExecOptions(("exit", "42"), "main", stdout=True, stderr=True)
    pair = await open_pair(transport, version, options, faults=both_ways(trickle=1))
    session = pair.session
    try:
        async with asyncio.timeout(30 * SCALE):
            assert session.stdout is not None and session.stderr is not None
            out = await asyncio.gather(session.stdout.read_all(), session.stderr.read_all())
            assert out == [b"out\n", b"err\n"]
            if version.startswith(("v4", "v5")):
                assert await session.wait() == 42
            else:
                with pytest.raises(RemoteCommandError, match="exit code 42"):
                    await session.wait()
    finally:
        await session.close()
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), CURRENT)
async def test_the_exit_code_comes_after_a_trickled_tail(transport: str, version: str) -> None:
    """Server to client at 4 KiB per tick: all of stdout, then the status, in order."""

    def faults(pipe: MemoryPipe) -> None:
        pipe.b_to_a.trickle = 4096
        pipe.b_to_a.tick = 0.001

    options = ExecOptions(("bulk", str(256 * 1024)), "main", stdout=True, stderr=True)
    pair = await open_pair(transport, version, options, faults=faults)
    try:
        async with asyncio.timeout(30 * SCALE):
            assert pair.session.stdout is not None
            out = await pair.session.stdout.read_all(1 << 30)
            assert out == bulk_bytes(256 * 1024)
            assert await pair.session.wait() == 0
            await pair.session.close()
            outcome = await pair.done
        assert outcome.exit_code == 0 and outcome.bytes_out == 256 * 1024
        assert not outcome.error
    finally:
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), CURRENT)
@pytest.mark.parametrize("one_way", [False, True], ids=["reset", "half-open"])
async def test_a_cut_mid_stdout_is_reported(transport: str, version: str, one_way: bool) -> None:
    def faults(pipe: MemoryPipe) -> None:
        pipe.b_to_a.cut_after = 600_000
        pipe.b_to_a.cut_one_way = one_way

    # More than the link and the buffers hold: the server is still writing at the cut.
    options = ExecOptions(("bulk", str(16 * BULK)), "main", stdout=True, stderr=True)
    pair = await open_pair(transport, version, options, faults=faults)
    try:
        async with asyncio.timeout(20 * SCALE):
            assert pair.session.stdout is not None
            out = await pair.session.stdout.read_all(1 << 30)
            assert 0 < len(out) < 600_000
            assert bulk_bytes(len(out)) == out  # what came is right, only short
            with pytest.raises(ConnectionClosedError) as info:
                await pair.session.wait()
            assert str(info.value) == SESSION_CUT
            # The server learns of it too (at once, or at its next write) and ends.
            outcome = await pair.done
        assert outcome.client_gone
    finally:
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), CURRENT)
@pytest.mark.parametrize("cut_after", [0, 1, 20])
async def test_a_cut_during_the_stream_handshake(
    transport: str, version: str, cut_after: int
) -> None:
    """Cut while the streams are being set up (SPDY's SYN_STREAM/SYN_REPLY, WebSocket's
    first empty message): the client fails at once, the server ends without a command."""

    def faults(pipe: MemoryPipe) -> None:
        pipe.b_to_a.cut_after = cut_after

    pair = await open_pair(transport, version, BULK_OUT, faults=faults, start=False)
    try:
        async with asyncio.timeout(20 * SCALE):
            try:
                await pair.session.start()
            except ConnectionClosedError:
                pass  # SPDY: the SYN_REPLY never came
            else:  # WebSocket opens its channels without a word
                with pytest.raises(ConnectionClosedError):
                    await pair.session.wait()
            outcome = await pair.done
        assert outcome.exit_code is None or outcome.client_gone
        assert all(p.killed for p in pair.runner.processes)
    finally:
        await pair.session.close()
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), CURRENT)
async def test_a_client_that_stops_reading_blocks_the_server_and_loses_nothing(
    transport: str, version: str
) -> None:
    """The client reads nothing for a while: the server's writes block (its process is
    not read to the end), and once the client reads, every byte and the status arrive."""
    options = ExecOptions(("bulk", str(16 * BULK)), "main", stdout=True, stderr=True)
    pair = await open_pair(transport, version, options)
    try:
        async with asyncio.timeout(30 * SCALE):
            await pair.runner.started.wait()
            process = pair.runner.processes[0]
            for _ in range(100):
                await asyncio.sleep(0)
            left = process.bulk_left
            assert left > 8 * BULK  # the server stopped reading its process...
            assert pair.pipe.b.get_write_buffer_size() > 0  # ...with its writes held
            for _ in range(100):
                await asyncio.sleep(0)
            assert process.bulk_left == left  # and it stays blocked
            assert not pair.done.done()
            assert pair.session.stdout is not None
            out = await pair.session.stdout.read_all(1 << 30)
            assert out == bulk_bytes(16 * BULK)
            assert await pair.session.wait() == 0
            await pair.session.close()
            outcome = await pair.done
        assert outcome.exit_code == 0 and not outcome.error
    finally:
        await pair.aclose()
    assert pair.pipe.b_to_a.dropped == 0


@pytest.mark.parametrize(("transport", "version"), CURRENT)
async def test_a_client_that_never_reads_is_cut_after_the_idle_timeout(
    transport: str, version: str
) -> None:
    """tests/session/test_session_drain.py without a socket: the process's output fits
    in the buffers, so it exits, but the client reads none of it; the server gives up
    after its drain idle timeout and says so, and the client, with part of the output,
    reports the cut."""
    output = 2 * BULK
    options = ExecOptions(("bulk", str(output)), "main", stdout=True, stderr=False)
    pair = await open_pair(
        transport, version, options, idle_timeout=0.5 * SCALE, client_recv_limit=64 * 1024
    )
    try:
        async with asyncio.timeout(30 * SCALE):
            outcome = await pair.done  # the client has read nothing yet
            assert outcome.exit_code == 0
            assert outcome.error == UNDELIVERED
            assert pair.session.stdout is not None
            out = await pair.session.stdout.read_all(1 << 30)
            assert 0 < len(out) < output and out == bulk_bytes(len(out))
            with pytest.raises(ConnectionClosedError) as info:
                await pair.session.wait()
            assert str(info.value) == SESSION_CUT
    finally:
        await pair.aclose()
    assert pair.pipe.b_to_a.dropped > 0  # what the cut dropped, counted


# -- through the HTTP upgrade (session/upgrade.py on both sides, over the pipe) ----------


@pytest.mark.parametrize("transport", ["auto", "websocket", "spdy"])
async def test_an_exec_through_the_upgrade_over_a_slow_link(transport: str) -> None:
    def faults(pipe: MemoryPipe) -> None:
        for direction in pipe.directions:
            direction.delay = 0.01
            direction.trickle = 1500  # about a packet per turn: the 101 comes in pieces

    endpoint = ExecEndpoint(faults)
    payload = bulk_bytes(200_000)
    try:
        async with asyncio.timeout(30 * SCALE):
            conn = await upgrade.dial(endpoint, "/exec", CAT, transport=transport)
            expected = "v4.channel.k8s.io" if transport == "spdy" else "v5.channel.k8s.io"
            assert conn.protocol == expected
            session = ClientSession(conn, CAT)
            await session.start()
            assert await echo(session, payload) == payload
            assert await session.wait() == 0
            await session.close()
            outcome = await endpoint.outcomes.get()
        assert outcome.exit_code == 0 and outcome.bytes_in == len(payload)
    finally:
        assert await endpoint.aclose()
    assert len(endpoint.pipes) == 1  # no fallback was needed


@pytest.mark.parametrize("transport", ["auto", "spdy"])
@pytest.mark.parametrize(
    ("way", "cut_after"),
    [("request", 0), ("request", 40), ("answer", 0), ("answer", 15), ("answer", 90)],
)
async def test_a_cut_during_the_upgrade_handshake(transport: str, way: str, cut_after: int) -> None:
    """Cut in the upgrade request or in the 101: the dial fails with the connection's
    error (no fallback to SPDY: it is not a refusal), the server's connection ends by
    itself, and no command outlives it (over SPDY none starts: the client never opened
    its streams; over WebSocket the server starts it after its 101, then kills it)."""

    def faults(pipe: MemoryPipe) -> None:
        (pipe.a_to_b if way == "request" else pipe.b_to_a).cut_after = cut_after

    endpoint = ExecEndpoint(faults)
    try:
        async with asyncio.timeout(20 * SCALE):
            with pytest.raises((ConnectionClosedError, ConnectionError)):
                await upgrade.dial(endpoint, "/exec", CAT, transport=transport)
    finally:
        assert await endpoint.aclose()  # the server ended without being cancelled
    assert len(endpoint.pipes) == 1
    assert all(p.killed for p in endpoint.runner.processes)
    if transport == "spdy" or way == "request":
        assert not endpoint.runner.processes
