"""ServerSession over SPDY against a hostile raw client, with a real process (a host
subprocess, so it runs without runc), over memory pipes: the connection's reader
survives what the client sends, and the process is killed when the client leaves;
streams the session does not use are refused or freed."""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.protocol import spdy_frame as fr
from hatchway.protocol.spdy import StreamReplied, StreamReset
from hatchway.session.server import ServerSession
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.memory import MemoryPipe
from hatchway.transport.spdy import SpdyConnection
from hatchway.types import ExecOptions
from hostile import RawSpdyClient

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
#: The sessions' stream-creation timeout (a test may shorten it).
SETTINGS = {"stream_timeout": 30.0 * SCALE}


class SubprocessProcess:
    """A real host process behind the session's Process protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.error_message: str | None = None

    async def write_stdin(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(max_bytes)

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        assert self.proc.stderr is not None
        return await self.proc.stderr.read(max_bytes)

    def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class SubprocessRunner:
    def __init__(self) -> None:
        self.started: asyncio.Queue[SubprocessProcess] = asyncio.Queue()

    async def start(self, options: ExecOptions) -> SubprocessProcess:
        proc = await asyncio.create_subprocess_exec(
            *options.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        process = SubprocessProcess(proc)
        self.started.put_nowait(process)
        return process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def spdy_node():
    """A ServerSession per connection with the subprocess runner, each connection a
    memory pipe (``transport/memory.py``): one write of the client is one read of the
    node, as the hostile frame sequences here need."""
    runner = SubprocessRunner()
    done: asyncio.Queue[object] = asyncio.Queue()
    conns: list[SpdyConnection] = []

    async def handler(stream: ByteStream) -> None:
        conn = SpdyConnection(stream, client=False, protocol="v4.channel.k8s.io")
        conns.append(conn)
        async with conn:
            options = ExecOptions(("sleep", "1000"), "main", stdout=True, stderr=False)
            session = ServerSession(
                conn, options, runner, stream_timeout=SETTINGS["stream_timeout"]
            )
            done.put_nowait(await session.run())

    server = Server(handler)
    tasks: list[asyncio.Task[None]] = []

    async def connect() -> RawSpdyClient:
        client, node = MemoryPipe().streams()
        tasks.append(asyncio.get_running_loop().create_task(server.serve(node)))
        return RawSpdyClient(client)

    try:
        yield connect, runner, done, conns
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_syn_and_rst_of_one_stream_in_one_read_then_disconnect_kills(spdy_node) -> None:
    connect, runner, done, conns = spdy_node
    client = await connect()
    _, error = client.syn("error")
    _, stdout = client.syn("stdout")
    client.send(error, stdout)
    async with asyncio.timeout(10 * SCALE):
        process = await runner.started.get()
        assert _alive(process.proc.pid)
        # The hostile pair: a stream opened and reset in the same read.
        sid, syn = client.syn("stdin")
        client.send(syn, client.rst(sid))
        # The reader survives it: a PING sent after the pair is still answered.
        client.send(client.ping(7))
        answered = b""
        while fr.PingFrame(7).serialize() not in answered:
            chunk = await client.stream.read()
            assert chunk, "the node closed the connection"
            answered += chunk
        assert not conns[0].closed and conns[0].error is None
        client.stream.abort()
        outcome = await done.get()
    assert outcome.client_gone
    assert process.proc.returncode is not None
    assert not _alive(process.proc.pid)


async def test_streams_the_session_does_not_use_are_reset(spdy_node) -> None:
    connect, runner, done, conns = spdy_node
    client = await connect()
    frames = []
    for name in ("error", "bogus", "stdout", "stderr"):
        frames.append(client.syn(name)[1])
    client.send(*frames)
    async with asyncio.timeout(10 * SCALE):
        process = await runner.started.get()
        resets: dict[int, int] = {}
        while len(resets) < 2:
            chunk = await client.stream.read()
            assert chunk, "the node closed the connection"
            for event in client.proto.receive_data(chunk):
                if isinstance(event, StreamReset):
                    resets[event.stream_id] = event.status
        # "bogus" (3) is of no use to the session, nor is "stderr" (7) without stderr:
        # one was taken and reset, the other was still queued when the session started.
        assert resets == {3: fr.RstStatus.CANCEL, 7: fr.RstStatus.REFUSED_STREAM}
        # ... and no longer held by the connection, only the two it runs on.
        assert sorted(conns[0]._streams) == [1, 5]
        # A stream opened after the session started is refused too, never queued.
        sid, syn = client.syn("stdin")
        client.send(syn)
        while True:
            chunk = await client.stream.read()
            assert chunk
            events = client.proto.receive_data(chunk)
            if any(isinstance(e, StreamReset) and e.stream_id == sid for e in events):
                break
            assert not any(isinstance(e, StreamReplied) and e.stream_id == sid for e in events)
        assert sorted(conns[0]._streams) == [1, 5] and not conns[0]._accepted
        client.stream.abort()
        await done.get()
    assert process.proc.returncode is not None


async def test_a_client_gone_before_its_streams_is_told_apart_from_a_slow_one(
    spdy_node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome says which: a client that hung up (it is gone, nothing was started)
    is not one that took too long to create its streams."""
    connect, runner, done, _ = spdy_node
    client = await connect()
    client.send(client.syn("error")[1])  # stdout never comes
    await asyncio.sleep(0.05)
    client.stream.abort()
    async with asyncio.timeout(10 * SCALE):
        gone = await done.get()
    assert (gone.error, gone.client_gone) == (
        "the client went away before creating its streams",
        True,
    )
    monkeypatch.setitem(SETTINGS, "stream_timeout", 0.2)
    slow = await connect()
    slow.send(slow.syn("error")[1])
    async with asyncio.timeout(10 * SCALE):
        late = await done.get()
    assert (late.error, late.client_gone) == (
        "timed out waiting for client to create streams",
        False,
    )
    slow.stream.abort()
    assert runner.started.empty()  # no process for either
