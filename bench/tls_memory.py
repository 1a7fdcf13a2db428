"""OpenSSL's memory per idle TLS connection, as Python's ssl module sets it up.

    .venv/bin/python bench/tls_memory.py                 # every variant below, in turn
    .venv/bin/python bench/tls_memory.py --connections 500

Each connection is a real handshake between a server and a client ``SSLObject`` over
memory BIOs in this process (no socket, no event loop), then one small record each way,
then nothing: what an idle exec session's connection holds in OpenSSL. The figure is the
growth of this process's RSS per connection, keeping the server end, the client end or
both, for: server certificate only or mutual TLS (the node agent and the API server
verify client certificates), TLS 1.3 or 1.2, the server's session tickets (OpenSSL sends
2 by default; ``num_tickets``) and ``SSL_MODE_RELEASE_BUFFERS`` (CPython sets it on every
context; cleared here through ``SSL_CTX_ctrl`` to show what it saves). tracemalloc does
not see any of this: OpenSSL allocates with malloc. Not a timed test.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import pathlib
import ssl
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

from hatchway import pki

SSL_CTRL_MODE = 33
SSL_CTRL_CLEAR_MODE = 78
SSL_MODE_RELEASE_BUFFERS = 0x10
VARIANTS = [
    {"mutual": False},
    {"mutual": True},
    {"mutual": True, "tickets": 0},
    {"mutual": True, "tls12": True},
    {"mutual": True, "release_buffers": False},
]


def _ctrl() -> Any:
    ctrl = ctypes.CDLL(ssl._ssl.__file__).SSL_CTX_ctrl  # type: ignore[attr-defined]
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    return ctrl


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of a context: the first field after the object header."""
    return ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value or 0


def mode(ctx: ssl.SSLContext) -> int:
    return int(_ctrl()(_ssl_ctx(ctx), SSL_CTRL_MODE, 0, None))


def contexts(certs: pki.Pki, variant: dict[str, Any]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.apiserver.cert, certs.apiserver.key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certs.ca.cert)
    if variant.get("mutual"):
        server.load_verify_locations(certs.ca.cert)
        server.verify_mode = ssl.CERT_REQUIRED
        client.load_cert_chain(certs.admin.cert, certs.admin.key)
    if variant.get("tls12"):
        client.maximum_version = ssl.TLSVersion.TLSv1_2
    if "tickets" in variant:
        server.num_tickets = variant["tickets"]
    if not variant.get("release_buffers", True):
        for ctx in (server, client):
            _ctrl()(_ssl_ctx(ctx), SSL_CTRL_CLEAR_MODE, SSL_MODE_RELEASE_BUFFERS, None)
    return server, client


def connection(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[Any, ...]:
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(8):
        for end in (cli, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cli.write(b"x" * 100)
    s_in.write(c_out.read())
    srv.read(1000)
    srv.write(b"y" * 100)
    c_in.write(s_out.read())
    cli.read(1000)
    return (srv, s_in, s_out), (cli, c_in, c_out)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(certs: pki.Pki, variant: dict[str, Any], keep: str, count: int) -> float:
    server, client = contexts(certs, variant)
    held: list[Any] = []

    def one() -> None:
        srv, cli = connection(server, client)
        held.append({"server": (srv,), "client": (cli,), "both": (srv, cli)}[keep])

    for _ in range(8):  # what is made once
        one()
    gc.collect()
    before = rss_kib()
    for _ in range(count):
        one()
    gc.collect()
    return round((rss_kib() - before) / count, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--one", help=argparse.SUPPRESS)  # VARIANT-JSON KEEP PKI-DIR: one figure
    args = p.parse_args()
    if args.one:
        variant, keep, directory = json.loads(args.one)
        print(
            measure(pki.ensure_pki(directory, node_name="bench"), variant, keep, args.connections)
        )
        return
    with tempfile.TemporaryDirectory(prefix="hw-tls-") as tmp:
        pki.ensure_pki(tmp, node_name="bench")
        print(f"{ssl.OPENSSL_VERSION}; default mode {mode(ssl.create_default_context()):#x}")
        for variant in VARIANTS:
            row = {}
            for keep in ("server", "client"):  # each in a process of its own: no heap reuse
                argv = [sys.executable, __file__, "--connections", str(args.connections)]
                argv += ["--one", json.dumps([variant, keep, tmp])]
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                row[keep] = float(out.strip())
            print(json.dumps({**variant, "kib_per_connection": row}), flush=True)


if __name__ == "__main__":
    main()
