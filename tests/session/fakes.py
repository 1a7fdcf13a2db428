"""Shared fakes for session tests: an in-process runner, and a client and a server
session joined by a :class:`~hatchway.transport.memory.MemoryPipe` (no socket), whose
directions carry the faults a test injects."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hatchway.errors import HatchwayError
from hatchway.protocol import exec_options
from hatchway.rest import encode_query
from hatchway.session import upgrade
from hatchway.session.client import ClientSession
from hatchway.session.server import ServerSession, SessionOutcome
from hatchway.transport.base import Connection
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.http import HttpServer
from hatchway.transport.httpclient import ClientResponse, HttpClient
from hatchway.transport.httpmessage import Request, Response
from hatchway.transport.memory import MemoryPipe
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))

#: (transport, version) for every channel version each transport carries.
CASES = [
    ("spdy", "v4.channel.k8s.io"),
    ("spdy", "v5.channel.k8s.io"),
    ("spdy", "v3.channel.k8s.io"),
    ("spdy", "v2.channel.k8s.io"),
    ("websocket", "v5.channel.k8s.io"),
    ("websocket", "v4.channel.k8s.io"),
    ("websocket", "v4.base64.channel.k8s.io"),
]
#: One case per transport, the versions kubectl 1.32 negotiates.
CURRENT = [("spdy", "v4.channel.k8s.io"), ("websocket", "v5.channel.k8s.io")]


class FakeProcess:
    """``cat`` (echo stdin), ``exit N`` (print and exit), ``sleep`` (until killed),
    ``size`` (print the last resize on exit), ``bulk N`` (N bytes of stdout, exit 0)."""

    def __init__(self, options: ExecOptions) -> None:
        self.options = options
        self.error_message: str | None = None
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self.err: asyncio.Queue[bytes] = asyncio.Queue()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.killed = False
        self.size: tuple[int, int] | None = None
        self.stdin = bytearray()
        self.bulk_left = 0
        self.bulk_sent = 0
        cmd = options.command
        if cmd[0] == "exit":
            self.out.put_nowait(b"out\n")
            self.err.put_nowait(b"err\n")
            self._exit(int(cmd[1]))
        elif cmd[0] == "bulk":
            self.bulk_left = int(cmd[1])

    def _exit(self, code: int) -> None:
        if not self.exited.done():
            if self.options.command[0] == "size":
                self.out.put_nowait(f"{self.size}\n".encode())
            self.exited.set_result(code)
            self.out.put_nowait(b"")
            self.err.put_nowait(b"")

    async def write_stdin(self, data: bytes) -> None:
        self.stdin += data
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
        if self.options.command[0] == "bulk" and not self.killed:
            n = min(self.bulk_left, max_bytes)
            self.bulk_left -= n
            if not n:
                self._exit(0)
            chunk = bulk_bytes(n, self.bulk_sent)
            self.bulk_sent += n
            return chunk
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


_CYCLE = bytes(range(251))


def bulk_bytes(n: int, offset: int = 0) -> bytes:
    """What ``bulk`` writes, from byte ``offset`` on: a pattern in which a lost,
    doubled or reordered piece shows."""
    start = offset % len(_CYCLE)
    return (_CYCLE * ((start + n) // len(_CYCLE) + 1))[start : start + n]


class FakeRunner:
    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []
        self.started = asyncio.Event()

    async def start(self, options: ExecOptions) -> FakeProcess:
        if options.command[0] == "missing":
            raise HatchwayError('exec: "missing": executable file not found in $PATH')
        process = FakeProcess(options)
        self.processes.append(process)
        self.started.set()
        return process


def make_connection(
    stream: ByteStream, transport: str, version: str, *, client: bool
) -> Connection:
    conn_type = SpdyConnection if transport == "spdy" else WebSocketConnection
    conn = conn_type(stream, client=client, protocol=version)
    conn.start()
    return conn


@dataclass
class SessionPair:
    """A client session and a server session over one memory pipe (client = end a)."""

    pipe: MemoryPipe
    client_stream: ByteStream
    server_stream: ByteStream
    client_conn: Connection
    session: ClientSession
    runner: FakeRunner
    #: The server session's outcome, once its connection is closed.
    done: asyncio.Future[SessionOutcome]
    server: asyncio.Task[None]

    async def aclose(self) -> None:
        """End both sides whatever state they are in: the client hangs up, and the
        server, reset, ends (cancelled only if it does not within seconds)."""
        self.client_conn.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.server), 5 * SCALE)
        if not self.server.done():
            self.server.cancel()
        with contextlib.suppress(BaseException):
            await self.server


async def open_pair(
    transport: str,
    version: str,
    options: ExecOptions,
    *,
    faults: Callable[[MemoryPipe], None] | None = None,
    start: bool = True,
    idle_timeout: float | None = None,
    client_recv_limit: int | None = None,
) -> SessionPair:
    """Both sessions over a new pipe; ``faults`` sets the pipe's faults before a byte
    crosses it. The server side runs as the node's does (``Server`` closes the stream
    after the handler); ``start=False`` leaves the client's streams unopened.
    ``idle_timeout``: the server stream's drain idle timeout; ``client_recv_limit``: the
    client stream's receive bound (``ByteStream.set_recv_limit``)."""
    pipe = MemoryPipe()
    if faults is not None:
        faults(pipe)
    client_stream, server_stream = pipe.streams()
    if idle_timeout is not None:
        server_stream.drain_idle_timeout = idle_timeout
    if client_recv_limit is not None:
        client_stream.set_recv_limit(client_recv_limit)
    runner = FakeRunner()
    done: asyncio.Future[SessionOutcome] = asyncio.get_running_loop().create_future()
    # A test that never awaits the outcome must not log "exception never retrieved".
    done.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def serve() -> None:
        try:
            conn = make_connection(server_stream, transport, version, client=False)
            done.set_result(await ServerSession(conn, options, runner).run())
        except asyncio.CancelledError:
            server_stream.abort()
            done.cancel()
            raise
        except Exception as exc:
            server_stream.abort()
            if not done.done():
                done.set_exception(exc)
            raise
        await server_stream.aclose()

    server = asyncio.get_running_loop().create_task(serve())
    client_conn = make_connection(client_stream, transport, version, client=True)
    session = ClientSession(client_conn, options)
    if start:
        await session.start()
    return SessionPair(
        pipe, client_stream, server_stream, client_conn, session, runner, done, server
    )


class ExecEndpoint:
    """An exec endpoint as the node serves one (``HttpServer``, ``upgrade.accept``, a
    ``ServerSession`` on the fake runner), reached through memory pipes: each
    connection the client makes is a new pipe (``faults`` applied first), and this is
    also the :class:`~hatchway.session.upgrade.Upgrader` that ``upgrade.dial`` takes."""

    def __init__(self, faults: Callable[[MemoryPipe], None] | None = None) -> None:
        self.faults = faults
        self.runner = FakeRunner()
        self.pipes: list[MemoryPipe] = []
        self.outcomes: asyncio.Queue[SessionOutcome] = asyncio.Queue()
        self.http = HttpServer(self._app)
        self._client = HttpClient(pool=False, connect=self._connect)
        self._tasks: list[asyncio.Task[None]] = []

    async def _connect(self, host: str, port: int, ctx: Any, timeout: float | None) -> ByteStream:
        pipe = MemoryPipe()
        if self.faults is not None:
            self.faults(pipe)
        self.pipes.append(pipe)
        client, server = pipe.streams()
        self._tasks.append(asyncio.get_running_loop().create_task(self.http.serve(server)))
        return client

    async def _app(self, request: Request) -> Response:
        options = exec_options.decode(request.query, "exec", container="main").normalised()

        async def serve(conn: Connection) -> None:
            self.outcomes.put_nowait(await ServerSession(conn, options, self.runner).run())

        return upgrade.accept(request, serve)

    async def upgrade(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        *,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[ClientResponse, ByteStream | None]:
        url = f"http://memory{path}?{encode_query(params)}"
        all_headers = [*headers.items(), *extra_headers]
        return await self._client.upgrade(method, url, headers=all_headers, timeout=10 * SCALE)

    async def aclose(self) -> bool:
        """Wait a little for the server's connections to end, then cancel them;
        whether they had all ended by themselves."""
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5 * SCALE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return not pending

    async def __aenter__(self) -> ExecEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
