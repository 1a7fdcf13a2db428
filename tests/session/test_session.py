"""Client and server sessions against each other over real sockets, for every transport
and channel version. The runner here is an in-process stand-in; the node tests run the
same session against real runc containers."""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.errors import HatchwayError, RemoteCommandError
from hatchway.session.client import ClientSession
from hatchway.session.server import ServerSession
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


class FakeProcess:
    """``cat`` (echo stdin), ``exit N`` (print and exit), ``sleep`` (until killed),
    ``size`` (print the last resize on exit)."""

    def __init__(self, options: ExecOptions) -> None:
        self.options = options
        self.error_message: str | None = None
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self.err: asyncio.Queue[bytes] = asyncio.Queue()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.killed = False
        self.size: tuple[int, int] | None = None
        cmd = options.command
        if cmd[0] == "exit":
            self.out.put_nowait(b"out\n")
            self.err.put_nowait(b"err\n")
            self._exit(int(cmd[1]))

    def _exit(self, code: int) -> None:
        if not self.exited.done():
            if self.options.command[0] == "size":
                self.out.put_nowait(f"{self.size}\n".encode())
            self.exited.set_result(code)
            self.out.put_nowait(b"")
            self.err.put_nowait(b"")

    async def write_stdin(self, data: bytes) -> None:
        if self.options.command[0] == "cat":
            await self.out.put(data)

    async def close_stdin(self) -> None:
        if self.options.command[0] in {"cat", "size"}:
            self._exit(0)

    async def _read(self, queue: asyncio.Queue[bytes]) -> bytes:
        chunk = await queue.get()
        if not chunk:
            queue.put_nowait(b"")
        return chunk

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        return await self._read(self.out)

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        return await self._read(self.err)

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)

    async def wait(self) -> int:
        return await self.exited

    async def kill(self) -> None:
        self.killed = True
        self._exit(137)


class FakeRunner:
    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []

    async def start(self, options: ExecOptions) -> FakeProcess:
        if options.command[0] == "missing":
            raise HatchwayError('exec: "missing": executable file not found in $PATH')
        process = FakeProcess(options)
        self.processes.append(process)
        return process


async def session_pair(transport: str, version: str, options: ExecOptions):
    runner = FakeRunner()
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def handler(stream: ByteStream) -> None:
        if transport == "spdy":
            conn = SpdyConnection(stream, client=False, protocol=version)
        else:
            conn = WebSocketConnection(stream, client=False, protocol=version)
        conn.start()
        outcome = await ServerSession(conn, options, runner).run()
        done.set_result(outcome)

    server = Server(handler)
    await server.start("127.0.0.1", 0)
    stream = await ByteStream.connect("127.0.0.1", server.port)
    if transport == "spdy":
        client_conn = SpdyConnection(stream, client=True, protocol=version)
    else:
        client_conn = WebSocketConnection(stream, client=True, protocol=version)
    client_conn.start()
    session = ClientSession(client_conn, options)
    await session.start()
    return server, session, runner, done


CASES = [
    ("spdy", "v4.channel.k8s.io"),
    ("spdy", "v5.channel.k8s.io"),
    ("spdy", "v3.channel.k8s.io"),
    ("spdy", "v2.channel.k8s.io"),
    ("websocket", "v5.channel.k8s.io"),
    ("websocket", "v4.channel.k8s.io"),
    ("websocket", "v4.base64.channel.k8s.io"),
]


@pytest.mark.parametrize(("transport", "version"), CASES)
async def test_exit_code_and_separate_streams(transport: str, version: str) -> None:
    options = ExecOptions(("exit", "42"), "main", stdout=True, stderr=True)
    server, session, _, done = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            out, err = await asyncio.gather(session.stdout.read_all(), session.stderr.read_all())
            if version.startswith(("v4", "v5")):
                assert await session.wait() == 42
            else:
                with pytest.raises(RemoteCommandError, match="exit code 42"):
                    await session.wait()
        assert (out, err) == (b"out\n", b"err\n")
        await session.close()  # the client hangs up first, as kubectl does
        assert (await done).exit_code == 42
    finally:
        await session.close()
        await server.close()


@pytest.mark.parametrize(
    ("transport", "version"),
    [c for c in CASES if c[0] == "spdy" or c[1].startswith("v5")],
)
async def test_stdin_round_trip_with_eof(transport: str, version: str) -> None:
    options = ExecOptions(("cat",), "main", stdin=True, stdout=True, stderr=True)
    server, session, _, done = await session_pair(transport, version, options)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    try:
        async with asyncio.timeout(20 * SCALE):

            async def feed() -> None:
                for i in range(0, len(payload), 100_000):
                    await session.write_stdin(payload[i : i + 100_000])
                await session.close_stdin()

            _, out = await asyncio.gather(feed(), session.stdout.read_all(1 << 30))
            assert out == payload
            assert await session.wait() == 0
        await session.close()
        outcome = await done
        assert outcome.bytes_in == len(payload) == outcome.bytes_out
    finally:
        await session.close()
        await server.close()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_resize_reaches_the_process(transport: str, version: str) -> None:
    options = ExecOptions(("size",), "main", stdin=True, stdout=True, tty=True)
    server, session, _, _ = await session_pair(transport, version, options)
    try:
        assert "resize" in session.streams and "stderr" not in session.streams
        async with asyncio.timeout(10 * SCALE):
            await session.resize(100, 30)
            await session.resize(120, 40)
            await asyncio.sleep(0.2)
            await session.close_stdin()
            out = await session.stdout.read_all()
            assert out == b"(120, 40)\n"
            assert await session.wait() == 0
    finally:
        await session.close()
        await server.close()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_client_disconnect_kills_the_process(transport: str, version: str) -> None:
    options = ExecOptions(("sleep",), "main", stdout=True)
    server, session, runner, done = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            while not runner.processes:
                await asyncio.sleep(0.01)
            session.conn.abort()
            outcome = await done
        assert runner.processes[0].killed
        assert outcome.client_gone
    finally:
        await server.close()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_start_failure_is_reported(transport: str, version: str) -> None:
    options = ExecOptions(("missing",), "main", stdout=True)
    server, session, _, _ = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            with pytest.raises(RemoteCommandError, match="executable file not found"):
                await session.wait()
    finally:
        await session.close()
        await server.close()
