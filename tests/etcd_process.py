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
    """One etcd member. Alone by default; ``name`` and ``cluster`` (etcd's
    ``--initial-cluster``) make it a member of a cluster (:class:`EtcdCluster`)."""

    def __init__(
        self,
        base: pathlib.Path,
        *,
        tls: bool = False,
        args: tuple[str, ...] = (),
        name: str = "t",
        cluster: str = "",
    ):
        self.base = base
        self.tls = tls
        self.args = args
        self.name = name
        self.cluster = cluster
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
        self.spawn(client_port, peer_port)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self, client_port: int, peer_port: int | None = None) -> None:
        """Start the process without waiting for it to serve (a cluster's members must
        all be up before any of them can)."""
        assert ETCD, "etcd is not installed"
        peer_port = peer_port or self.peer_port
        self.peer_port = peer_port
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        cmd = [
            ETCD, "--name", self.name, "--data-dir", str(self.base / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.cluster or f"{self.name}={peer}", "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.tls:
            cmd += [
                "--cert-file", str(self.server_cert), "--key-file", str(self.server_key),
                "--trusted-ca-file", str(self.ca), "--client-cert-auth",
            ]  # fmt: skip
        self.base.mkdir(parents=True, exist_ok=True)
        self.log = open(self.base / "etcd.log", "ab")
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=self.log, stderr=self.log)

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

    def status(self) -> dict:
        """``/v3/maintenance/status``: this member's ``header.member_id`` and the
        ``leader`` it knows."""
        request = urllib.request.Request(self.url + "/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=5, context=self.ssl_context()) as answer:
            return json.loads(answer.read())

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

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


class EtcdCluster:
    """``size`` members on loopback ports, each with its own data dir under ``base``."""

    def __init__(self, base: pathlib.Path, size: int = 3) -> None:
        ports = _free_ports(2 * size)
        self.client_ports = ports[:size]
        self.peer_ports = ports[size:]
        names = [f"m{i}" for i in range(size)]
        cluster = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, self.peer_ports, strict=True)
        )
        self.members = [
            EtcdProcess(base / name, name=name, cluster=cluster) for name in names
        ]  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.client_ports]

    def start(self) -> EtcdCluster:
        try:
            for index, member in enumerate(self.members):
                member.spawn(self.client_ports[index], self.peer_ports[index])
            for member in self.members:
                member._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, index: int) -> None:
        """Start a stopped member again on its ports and data dir: it rejoins."""
        member = self.members[index]
        member.start_on(self.client_ports[index], self.peer_ports[index])

    def leader(self) -> int:
        """The index of the member the others follow (asked of a live member)."""
        ids = {}
        leader = ""
        for index, member in enumerate(self.members):
            if member.proc is None:
                continue
            answer = member.status()
            ids[str(answer["header"]["member_id"])] = index
            leader = str(answer.get("leader") or leader)
        if leader not in ids:
            raise RuntimeError("no etcd leader among the live members")
        return ids[leader]

    def stop(self) -> None:
        for member in self.members:
            member.stop()
