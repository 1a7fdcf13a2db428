"""Python heap of idle exec sessions' transport objects, per session, by tracemalloc.

    .venv/bin/python bench/idle_streams.py [--sessions 200] [--transport spdy websocket]
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/idle_streams.py   # another tree

Each session is a loopback TCP connection carrying what an idle ``exec -i`` session holds
on the node agent (the serving side: ``accept_streams`` of error, stdin, stdout, stderr,
then nothing) and on its client (the four streams opened, the server's initial message
read for WebSocket). Both sides run in this process; the figure is the traced heap growth
from the baseline (one warm-up session open, so what is created once is not counted)
divided by the sessions -- both sides together, and the part allocated by
``hatchway/transport`` modules. Deterministic, unlike RSS: for a before/after of the
transport's own objects, where the RSS figures of ``bench/run.py --only idle`` are
within their noise. Not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tracemalloc
from typing import Any

from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection

NAMES = ["error", "stdin", "stdout", "stderr"]
PROTOCOL = "v5.channel.k8s.io"


class Bench:
    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.release = asyncio.Event()
        self.ready: asyncio.Queue[None] = asyncio.Queue()
        self.clients: list[Any] = []

    async def serve(self, bs: ByteStream) -> None:
        conn: Any
        if self.transport == "spdy":
            conn = SpdyConnection(bs, client=False, protocol=PROTOCOL)
        else:
            conn = WebSocketConnection(bs, client=False, protocol=PROTOCOL)
        async with conn:
            await conn.accept_streams(NAMES, timeout=30)
            self.ready.put_nowait(None)
            await self.release.wait()

    async def open(self, port: int) -> None:
        bs = await ByteStream.connect("127.0.0.1", port)
        conn: Any
        if self.transport == "spdy":
            conn = SpdyConnection(bs, client=True, protocol=PROTOCOL)
        else:
            conn = WebSocketConnection(bs, client=True, protocol=PROTOCOL)
        conn.start()
        streams = [await conn.open_stream({"streamtype": name}) for name in NAMES]
        await self.ready.get()
        self.clients.append((conn, streams))

    async def close(self) -> None:
        self.release.set()
        for conn, _ in self.clients:
            await conn.close()


async def measure(transport: str, sessions: int) -> dict[str, Any]:
    bench = Bench(transport)
    server = Server(bench.serve)
    await server.start("127.0.0.1", 0)
    try:
        await bench.open(server.port)  # warm-up: what is made once is in the baseline
        await asyncio.sleep(0.1)
        gc.collect()
        base = tracemalloc.take_snapshot()
        for _ in range(sessions):
            await bench.open(server.port)
        await asyncio.sleep(0.1)  # the empty initial messages and replies are read
        gc.collect()
        snap = tracemalloc.take_snapshot()
    finally:
        await bench.close()
        await server.close()
    stats = snap.compare_to(base, "filename")
    total = sum(s.size_diff for s in stats)
    ours = sum(s.size_diff for s in stats if "hatchway/transport/" in s.traceback[0].filename)
    top = sorted(stats, key=lambda s: -s.size_diff)[:6]
    by_file = {s.traceback[0].filename.rsplit("/", 2)[-1]: s.size_diff for s in top}
    return {
        "transport": transport,
        "sessions": sessions,
        "bytes_per_session": round(total / sessions),
        "transport_modules_bytes_per_session": round(ours / sessions),
        "top": {name: round(size / sessions) for name, size in by_file.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--transport", nargs="+", default=["spdy", "websocket"])
    args = p.parse_args()
    tracemalloc.start()
    out = [asyncio.run(measure(t, args.sessions)) for t in args.transport]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
