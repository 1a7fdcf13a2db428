"""A TCP proxy on loopback that can lose an answer: armed, it forwards the next request
whose bytes name ``trigger`` to the server, lets the server answer, drops that answer
and cuts the client's connection. The write happened; the client never hears of it."""

from __future__ import annotations

import asyncio
import contextlib


class CutProxy:
    def __init__(self, host: str, port: int, trigger: bytes = b"/v3/kv/txn") -> None:
        self.target = (host, port)
        self.trigger = trigger
        self.armed = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    def cut_next(self, count: int = 1) -> None:
        self.armed += count

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        doomed = asyncio.Event()  # this connection carries a request whose answer we drop

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.armed and self.trigger in data and not doomed.is_set():
                    self.armed -= 1
                    doomed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if doomed.is_set():
                    self.cuts += 1
                    return  # the answer goes nowhere
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for w in (writer, up_writer):
                w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()
