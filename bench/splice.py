"""The API server's exec splice alone: client end -> proxy -> node end, TLS on both hops.

Three processes: this one is the client end, ``proxy`` runs
:func:`hatchway.apiserver.proxy.splice` on a :class:`ByteStream` server (asyncio or
uvloop), ``node`` is the far end. The ends use blocking TLS sockets (``sendall`` of a
1 MiB buffer, ``recv_into`` a preallocated one), so the proxy is what is measured.

    .venv/bin/python bench/splice.py                       # 1 GiB each way, in turn
    .venv/bin/python bench/splice.py --mib 256 --both      # both directions at once
    .venv/bin/python bench/splice.py --loop asyncio
    .venv/bin/python bench/splice.py --idle 200            # proxy RSS per idle session
    .venv/bin/python bench/splice.py --impl relay splice   # side by side, taking turns

``--impl relay`` is the splice as it was before the protocol-level one: a task per
direction, ``read()``, ``write()``, ``await drain()``; kept here for comparison.

Prints GB/s (10^9 bytes/s) from the first byte sent to the last byte received, and the
proxy's CPU seconds; with ``--idle N`` the proxy's RSS growth per open session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BUF = 1024 * 1024
HERE = Path(__file__).resolve()


# -- certificates ------------------------------------------------------------------------
def make_certs(directory: Path) -> None:
    from hatchway import pki

    ca = pki.create_ca(directory)
    pki.issue_certificate(
        ca, directory / "server", common_name="localhost", ip_addresses=["127.0.0.1"],
        server=True, client=True,
    )  # fmt: skip


def server_ctx(d: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "server.crt", d / "server.key")
    return ctx


def client_ctx(d: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(d / "ca.crt")
    return ctx


# -- the ends ----------------------------------------------------------------------------
def _send(sock: ssl.SSLSocket, total: int, out: dict) -> None:
    view = memoryview(bytearray(b"x" * BUF))
    out["send_start"] = time.monotonic()
    left = total
    while left > 0:
        n = min(left, BUF)
        sock.sendall(view[:n])
        left -= n
    out["send_end"] = time.monotonic()


def _recv(sock: ssl.SSLSocket, total: int, out: dict) -> None:
    buf = memoryview(bytearray(BUF))
    got = 0
    while got < total:
        n = sock.recv_into(buf, BUF)
        if not n:
            break
        got += n
    out["recv_end"] = time.monotonic()
    out["received"] = got


def exchange(sock: ssl.SSLSocket, send: int, recv: int) -> dict:
    """Send ``send`` bytes while receiving ``recv``; close after both."""
    out: dict = {}
    sender = threading.Thread(target=_send, args=(sock, send, out)) if send else None
    if sender:
        sender.start()
    if recv:
        _recv(sock, recv, out)
    if sender:
        sender.join()
    # close_notify first: an EOF without it loses what asyncio's and uvloop's TLS
    # transports still buffer beyond one read (they flush a single buffer on EOF).
    try:
        sock.settimeout(10)
        sock.unwrap()
    except (OSError, ValueError):
        pass
    sock.close()
    return out


def node_main(args: argparse.Namespace) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    ctx = server_ctx(Path(args.certs))
    if args.idle:
        return _node_idle(listener, ctx, args.idle)
    raw, _ = listener.accept()
    sock = ctx.wrap_socket(raw, server_side=True)
    print(json.dumps(exchange(sock, args.down, args.up)), flush=True)


def _node_idle(listener: socket.socket, ctx: ssl.SSLContext, count: int) -> None:
    held = []
    for _ in range(count):
        raw, _ = listener.accept()
        sock = ctx.wrap_socket(raw, server_side=True)
        sock.sendall(sock.recv(16))  # one exchange each way, then idle
        held.append(sock)
    sys.stdin.read()  # until the client end is done


# -- the proxy ---------------------------------------------------------------------------
async def relay(client, node) -> None:
    """The previous splice: one task per direction through ByteStream reads and writes."""

    async def pump(src, dst) -> None:
        while data := await src.read(256 * 1024):
            dst.write(data)
            await dst.drain()

    tasks = [asyncio.ensure_future(pump(client, node)), asyncio.ensure_future(pump(node, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(client.aclose(), node.aclose(), return_exceptions=True)


def proxy_main(args: argparse.Namespace) -> None:
    (loop,), (impl,) = args.loop, args.impl  # one of each in this role
    from hatchway.apiserver.proxy import SpliceStats, splice
    from hatchway.transport import bytestream
    from hatchway.transport.bytestream import ByteStream, Server

    high = args.splice_high[0]
    if high:  # an experiment: the splice's send watermarks (low = high / 4)
        bytestream.SPLICE_SEND_HIGH, bytestream.SPLICE_SEND_LOW = high * 1024, high * 256

    if args.mmap_threshold:  # as the API server runs (ApiServerConfig.mmap_threshold)
        from hatchway.apiserver.server import fix_mmap_threshold

        fix_mmap_threshold(args.mmap_threshold * 1024)
    certs = Path(args.certs)

    async def handler(client: ByteStream) -> None:
        node = await ByteStream.connect("127.0.0.1", args.node_port, ssl=client_ctx(certs))
        if impl == "relay":
            await relay(client, node)
        else:
            await splice(client, node, SpliceStats(), 3600.0)

    async def main() -> None:
        server = Server(handler)
        await server.start("127.0.0.1", 0, ssl=server_ctx(certs))
        print(server.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.close()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- the orchestrator (client end) -------------------------------------------------------
def _spawn(role: str, *extra: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE), role, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


def _proc_stat(pid: int) -> tuple[float, int, int]:
    """CPU seconds, RSS KiB and minor page faults of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return cpu, rss, int(fields[7])


def run_once(args: argparse.Namespace, up: int, down: int) -> dict:
    common = ["--certs", args.certs]
    node, node_port = _spawn("node", *common, "--up", str(up), "--down", str(down))
    proxy, proxy_port = _spawn(
        "proxy", *common, "--node-port", str(node_port), "--loop", args.loop, "--impl", args.impl,
        "--splice-high", str(args.splice_high), "--mmap-threshold", str(args.mmap_threshold),
    )  # fmt: skip
    spy = None
    if args.profile:  # py-spy's folded stacks of the proxy, native frames included
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--native", "-r", "250",
             "-f", "raw", "-o", args.profile, "-p", str(proxy.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
    try:
        cpu0, _, faults0 = _proc_stat(proxy.pid)
        raw = socket.create_connection(("127.0.0.1", proxy_port))
        sock = client_ctx(Path(args.certs)).wrap_socket(raw, server_hostname="127.0.0.1")
        mine = exchange(sock, up, down)
        theirs = json.loads(node.stdout.readline())
        cpu1, rss, faults1 = _proc_stat(proxy.pid)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        for proc in (node, proxy):
            proc.stdin.close()
            proc.wait(30)
    start = min(t for t in (mine.get("send_start"), theirs.get("send_start")) if t)
    end = max(t for t in (mine.get("recv_end"), theirs.get("recv_end")) if t)
    assert mine.get("received", down) == down and theirs.get("received", up) == up, (mine, theirs)
    return {"seconds": end - start, "gb_s": (up + down) / (end - start) / 1e9,
            "proxy_cpu": cpu1 - cpu0, "proxy_rss_kib": rss,
            "proxy_page_faults": faults1 - faults0}  # fmt: skip


async def _idle_clients(port: int, count: int, ctx: ssl.SSLContext) -> list:
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(b"hello")
        await reader.readexactly(5)
        held.append(writer)
    return held


def run_idle(args: argparse.Namespace) -> dict:
    common = ["--certs", args.certs]
    node, node_port = _spawn("node", *common, "--idle", str(args.idle))
    proxy, proxy_port = _spawn(
        "proxy", *common, "--node-port", str(node_port), "--loop", args.loop, "--impl", args.impl,
        "--splice-high", str(args.splice_high), "--mmap-threshold", str(args.mmap_threshold),
    )  # fmt: skip
    try:
        time.sleep(0.5)
        _, base, _ = _proc_stat(proxy.pid)

        async def main() -> int:
            held = await _idle_clients(proxy_port, args.idle, client_ctx(Path(args.certs)))
            await asyncio.sleep(1.0)
            rss = _proc_stat(proxy.pid)[1]
            for writer in held:
                writer.close()
            return rss

        rss = asyncio.run(main())
    finally:
        for proc in (node, proxy):
            proc.stdin.close()
            proc.wait(30)
    return {"sessions": args.idle, "base_kib": base, "rss_kib": rss,
            "kib_per_session": (rss - base) / args.idle}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", nargs="?", default="client", choices=["client", "node", "proxy"])
    parser.add_argument("--certs")
    parser.add_argument("--loop", nargs="+", default=["uvloop"], choices=["uvloop", "asyncio"])
    parser.add_argument("--impl", nargs="+", default=["splice"], choices=["splice", "relay"])
    parser.add_argument(
        "--splice-high", type=int, nargs="+", default=[0], help="KiB: the splice's send high water"
    )
    parser.add_argument(
        "--mmap-threshold", type=int, default=128,
        help="KiB: the proxy's fixed glibc mmap threshold, as the API server's (0: glibc's own)",
    )  # fmt: skip
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--both", action="store_true", help="both directions at once")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument("--up", type=int, default=0)
    parser.add_argument("--down", type=int, default=0)
    parser.add_argument("--node-port", type=int)
    parser.add_argument("--profile", help="py-spy the proxy into this file (folded stacks)")
    args = parser.parse_args()
    if args.role == "node":
        return node_main(args)
    if args.role == "proxy":
        return proxy_main(args)
    with tempfile.TemporaryDirectory() as tmp:
        args.certs = tmp
        make_certs(Path(tmp))
        size = args.mib * 1024 * 1024
        shapes = [(size, size)] if args.both else [(size, 0), (0, size)]
        combos = [(lp, im, hi) for lp in args.loop for im in args.impl for hi in args.splice_high]
        for _ in range(args.rounds):
            for loop, impl, high in combos:
                one = argparse.Namespace(
                    **{**vars(args), "loop": loop, "impl": impl, "splice_high": high}
                )
                head = {"loop": loop, "impl": impl, "splice_high": high}
                if args.idle:
                    print(json.dumps({**head, **run_idle(one)}), flush=True)
                    continue
                for up, down in shapes:
                    result = run_once(one, up, down)
                    print(json.dumps({**head, "up": up, "down": down, **result}), flush=True)


if __name__ == "__main__":
    main()
