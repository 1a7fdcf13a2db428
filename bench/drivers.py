"""Micro-benchmark of the exec transport drivers alone: no API server, no runtime.

A server process (the node agent's side) and a client process (``hatchway exec``'s
side) talk over TLS on loopback through :class:`WebSocketConnection` (v5) or
:class:`SpdyConnection`, exactly as the session layer drives them, and move ``--size``
MiB one way:

* ``out``: the server writes ``session.server.READ_SIZE`` chunks on stdout (what the
  node's pump does with the pipe's reads); the client reads 256 KiB at a time (the CLI's
  stdout copy) until EOF. Rate from the first byte to EOF.
* ``in``: the client writes 64 KiB chunks on stdin (the CLI's stdin chunk) and half-closes;
  the server reads ``READ_SIZE`` at a time, counts, and answers the count on the error
  stream. Rate from the first write to the answer.

    .venv/bin/python bench/drivers.py                     # both transports, both ways
    .venv/bin/python bench/drivers.py --transport ws --direction out --size 1024 --rounds 3

Prints one line per run and the best of the rounds in GB/s and GiB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import ssl
import subprocess
import sys
import tempfile
import time

from hatchway import pki
from hatchway.session.server import READ_SIZE
from hatchway.transport.bytestream import ByteStream, start_server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection

CLIENT_READ = 256 * 1024
CLIENT_WRITE = 64 * 1024
PROTOCOL = "v5.channel.k8s.io"


def _contexts(directory: pathlib.Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = pki.create_ca(directory)
    srv = pki.issue_certificate(
        ca, directory / "srv", common_name="127.0.0.1", ip_addresses=["127.0.0.1"], server=True
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(srv.cert, srv.key)
    client = ssl.create_default_context(cafile=str(ca.cert))
    return server, client


def _connection(stream: ByteStream, transport: str, *, client: bool):  # type: ignore[no-untyped-def]
    if transport == "ws":
        return WebSocketConnection(stream, client=client, protocol=PROTOCOL).start()
    conn = SpdyConnection(stream, client=client, protocol=PROTOCOL)
    conn.start()
    return conn


async def _server_streams(conn, transport: str, names: list[str]):  # type: ignore[no-untyped-def]
    if transport == "ws":
        return {n: await conn.open_stream({"streamtype": n}) for n in names}
    streams = {}
    while len(streams) < len(names):
        stream = await conn.accept_stream()
        streams[stream.name] = stream
    return streams


async def serve(args: argparse.Namespace) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(args.cert, args.key)
    done = asyncio.Event()
    total = args.size * 1024 * 1024

    async def handler(bs: ByteStream) -> None:
        conn = _connection(bs, args.transport, client=False)
        names = ["error", "stdout" if args.direction == "out" else "stdin"]
        streams = await _server_streams(conn, args.transport, names)
        if args.direction == "out":
            chunk = bytes(READ_SIZE)
            left = total
            while left > 0:
                piece = chunk if left >= len(chunk) else chunk[:left]
                await streams["stdout"].write(piece)
                left -= len(piece)
            await streams["stdout"].write_eof()
        else:
            count = 0
            while data := await streams["stdin"].read(READ_SIZE):
                count += len(data)
            await streams["error"].write(str(count).encode())
        await streams["error"].write_eof()
        await conn.close()
        done.set()

    server = await start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    print(server.port, flush=True)
    await done.wait()
    await server.close()


async def run_client(args: argparse.Namespace, port: int, ctx: ssl.SSLContext) -> float:
    total = args.size * 1024 * 1024
    bs = await ByteStream.connect("127.0.0.1", port, ssl=ctx)
    conn = _connection(bs, args.transport, client=True)
    names = ["error", "stdout" if args.direction == "out" else "stdin"]
    streams = {n: await conn.open_stream({"streamtype": n}) for n in names}
    if args.direction == "out":
        stdout = streams["stdout"]
        first = await stdout.read(CLIENT_READ)
        start = time.perf_counter()
        count = len(first)
        while data := await stdout.read(CLIENT_READ):
            count += len(data)
        elapsed = time.perf_counter() - start
    else:
        stdin = streams["stdin"]
        chunk = bytes(CLIENT_WRITE)
        start = time.perf_counter()
        for _ in range(total // CLIENT_WRITE):
            await stdin.write(chunk)
        await stdin.write_eof()
        count = int(await streams["error"].read_all())
        elapsed = time.perf_counter() - start
    await conn.close()
    if count != total:
        raise SystemExit(f"moved {count} bytes, expected {total}")
    return total / elapsed


def one_run(args: argparse.Namespace, tmp: pathlib.Path, client_ctx: ssl.SSLContext) -> float:
    cmd = [sys.executable, __file__, "--serve", "--transport", args.transport]
    cmd += ["--direction", args.direction, "--size", str(args.size)]
    cmd += ["--cert", str(tmp / "srv.crt"), "--key", str(tmp / "srv.key")]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        rate = _run_loop(run_client(args, port, client_ctx), args.uvloop)
        proc.wait(timeout=60)
    return rate


def _run_loop(coro, use_uvloop: bool):  # type: ignore[no-untyped-def]
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", nargs="*", choices=["ws", "spdy"], default=["ws", "spdy"])
    parser.add_argument("--direction", nargs="*", choices=["out", "in"], default=["out", "in"])
    parser.add_argument("--size", type=int, default=1024, help="MiB per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uvloop", action="store_true", help="uvloop on both sides")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.transport, args.direction = args.transport[0], args.direction[0]
        _run_loop(serve(args), args.uvloop)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        _, client_ctx = _contexts(tmp_path)
        best: dict[tuple[str, str], float] = {}
        for rnd in range(args.rounds):
            for transport in args.transport:
                for direction in args.direction:
                    run = argparse.Namespace(**{**vars(args), "transport": transport})
                    run.direction = direction
                    rate = one_run(run, tmp_path, client_ctx)
                    key = (transport, direction)
                    best[key] = max(best.get(key, 0.0), rate)
                    print(f"round {rnd + 1} {transport:4} {direction:3} {rate / 1e9:.3f} GB/s")
        for (transport, direction), rate in best.items():
            print(
                f"best {transport:4} {direction:3} {rate / 1e9:.3f} GB/s "
                f"{rate / 2**30:.3f} GiB/s ({args.size} MiB)"
            )


if __name__ == "__main__":
    main()
