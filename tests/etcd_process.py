"""A real etcd for tests: its own process, data dir and free loopback ports.

Never the system etcd a Debian package may have started on 2379. ``EtcdProcess(base,
tls=True)`` mints a CA, a server certificate (also usable as a client: etcd's JSON
gateway dials etcd's own gRPC port with it) and a client certificate with
:mod:`hatchway.pki`, and requires client certificates.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

from hatchway import pki

ETCD = shutil.which("etcd")
SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdProcess:
    def __init__(self, base: pathlib.Path, *, tls: bool = False, args: tuple[str, ...] = ()):
        self.base = base
        self.tls = tls
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.peer_port = 0
        if tls:
            ca = pki.create_ca(base / "pki", "etcd-ca")
            self.ca = ca.cert
            server = pki.issue_certificate(
                ca, base / "pki" / "server", common_name="etcd", ip_addresses=["127.0.0.1"],
                dns_names=["localhost"], server=True, client=True,
            )  # fmt: skip
            client = pki.issue_certificate(ca, base / "pki" / "client", common_name="hatchway")
            self.server_cert, self.server_key = server.cert, server.key
            self.client_cert, self.client_key = client.cert, client.key

    def start(self) -> EtcdProcess:
        return self.start_on(*_free_ports(2))

    def start_on(self, client_port: int, peer_port: int | None = None) -> EtcdProcess:
        """Start (again: same data dir) with these ports."""
        assert ETCD, "etcd is not installed"
        peer_port = peer_port or self.peer_port
        self.peer_port = peer_port
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        cmd = [
            ETCD, "--name", "t", "--data-dir", str(self.base / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"t={peer}", "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.tls:
            cmd += [
                "--cert-file", str(self.server_cert), "--key-file", str(self.server_key),
                "--trusted-ca-file", str(self.ca), "--client-cert-auth",
            ]  # fmt: skip
        self.log = open(self.base / "etcd.log", "wb")
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=self.log, stderr=self.log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20 * SCALE
        body = json.dumps({"key": "AA=="}).encode()
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {(self.base / 'etcd.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                request = urllib.request.Request(self.url + "/v3/kv/range", data=body)
                with urllib.request.urlopen(request, timeout=2, context=self.ssl_context()):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("etcd did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10 * SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
