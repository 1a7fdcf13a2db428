"""``kubectl port-forward`` against Hatchway (protocol.md 6.3): every bundled kubectl over
SPDY (1.31+ with ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``) and 1.31+ over its default
SPDY-in-WebSocket tunnel; several ports, many concurrent connections, an unreachable
port's error, RBAC and the exec admission rule."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import re
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import SCALE, Cluster, nc_server
from interop.support import (
    VERSIONS,
    Kubectl,
    Pods,
    Users,
    container,
    kubectl_binary,
    pod_manifest,
)

TUNNEL_SINCE = (1, 31)
SERVERS = " ".join(
    (
        nc_server(8080, "cat"),
        nc_server(8081, "sha256sum"),
        nc_server(8082, "busybox", "echo", "hello-from-8082"),
        "wait",
    )
)


def _tunnels(version: str) -> bool:
    major, minor = (int(part) for part in version.split("."))
    return (major, minor) >= TUNNEL_SINCE


def _param(version: str, transport: str) -> Any:
    missing = kubectl_binary(version) is None
    mark = pytest.mark.skipif(missing, reason=f"kubectl.{version} is not installed")
    return pytest.param((version, transport), id=f"{version}-{transport}", marks=mark)


VARIANTS = [_param(v, t) for v in VERSIONS for t in (("ws", "spdy") if _tunnels(v) else ("spdy",))]


@pytest.fixture(params=VARIANTS)
def kubectl_pf(
    request: pytest.FixtureRequest, cluster: Cluster, kubectl_homes: dict[str, pathlib.Path]
) -> Kubectl:
    version, transport = request.param
    binary = kubectl_binary(version)
    assert binary is not None
    return Kubectl(version, transport, binary, cluster, kubectl_homes[version])


@pytest.fixture(scope="module")
def servers(cluster: Cluster) -> Iterator[str]:
    name = f"pf-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(
        pod_manifest(name, {"containers": [container("main", ["sh", "-c", SERVERS])]})
    )
    cluster.wait_phase(name)
    yield name
    cluster.kubectl("delete", "pod", "--wait=false", name)


def _env(kubectl: Kubectl) -> dict[str, str]:
    env = dict(kubectl.env)
    env.pop("KUBECTL_PORT_FORWARD_WEBSOCKETS", None)
    if kubectl.transport == "spdy" and _tunnels(kubectl.version):
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    return env


class PortForward:
    """A running ``kubectl port-forward``; ``local[remote]`` is the local port."""

    def __init__(self, kubectl: Kubectl, target: str, ports: list[int], **kw: Any) -> None:
        args = ("port-forward", "--address", "127.0.0.1", target, *[f":{p}" for p in ports])
        self.start(kubectl.argv(*args, **kw), _env(kubectl), ports)

    def start(self, argv: list[str], env: dict[str, str], ports: list[int]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.local: dict[int, int] = {}
        self.output = b""
        deadline = time.monotonic() + 30 * SCALE
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(self.local) < len(ports) and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 4096)  # not readline: select cannot see a file's buffer
            if not chunk:
                break
            self.output += chunk
            for found in re.finditer(rb"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", self.output):
                self.local[int(found.group(2))] = int(found.group(1))

    def stop(self) -> tuple[int, str]:
        """Interrupt it (as Ctrl-C does) and return its exit code and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
        try:
            rest, err = self.proc.communicate(timeout=20 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, err = self.proc.communicate()
        self.output += rest
        return self.proc.returncode, err.decode()


def exchange(port: int, payload: bytes) -> bytes:
    """Connect, send ``payload``, half-close, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


def test_several_ports_and_many_concurrent_connections(kubectl_pf: Kubectl, servers: str):
    pf = PortForward(kubectl_pf, f"pod/{servers}", [8080, 8081, 8082])
    try:
        assert sorted(pf.local) == [8080, 8081, 8082], pf.output

        def one(i: int) -> None:
            payload = os.urandom(1000 * (i + 1))
            remote = (8080, 8081, 8082)[i % 3]
            if remote == 8082:  # it reads nothing: what we sent could reset its answer
                payload = b""
            answer = exchange(pf.local[remote], payload)
            if remote == 8080:
                assert answer == payload
            elif remote == 8081:
                assert answer.split()[0].decode() == hashlib.sha256(payload).hexdigest()
            else:
                assert answer == b"hello-from-8082\n"

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            list(pool.map(one, range(48)))
    finally:
        _, err = pf.stop()
    assert "error" not in err.lower(), err


def test_an_unreachable_port_reports_the_kubelet_error(kubectl_pf: Kubectl, servers: str):
    pf = PortForward(kubectl_pf, f"pod/{servers}", [9999, 8080])
    try:
        assert sorted(pf.local) == [8080, 9999], pf.output
        assert exchange(pf.local[9999], b"hello") == b""
        time.sleep(0.5)  # kubectl prints the error stream's text once it has read it
    finally:
        _, err = pf.stop()
    local = pf.local[9999]
    assert f"an error occurred forwarding {local} -> 9999" in err, err
    assert "failed to connect to localhost:9999 inside namespace" in err, err
    assert "connection refused" in err, err


def test_a_viewer_may_not_port_forward(kubectl_pf: Kubectl, servers: str, users: Users):
    pf = PortForward(kubectl_pf, f"pod/{servers}", [8080], kubeconfig=users.viewer)
    code, err = pf.stop()
    assert code == 1
    assert not pf.local
    viewer = users.names["viewer"]
    assert (
        f'User "{viewer}" cannot create resource "pods/portforward" in API group "" '
        'in the namespace "default"'
    ) in err, err


def test_an_editor_may_not_port_forward_into_a_privileged_pod(
    kubectl_pf: Kubectl, pods: Pods, users: Users
):
    pf = PortForward(kubectl_pf, f"pod/{pods.privileged}", [8080], kubeconfig=users.editor)
    code, err = pf.stop()
    assert code == 1
    assert not pf.local
    assert "cannot exec into or attach to a privileged container" in err, err


def test_an_editor_may_port_forward(kubectl_pf: Kubectl, servers: str, users: Users):
    if kubectl_pf.version not in ("1.27", "1.33"):
        pytest.skip("the first and last kubectl are enough for this")
    pf = PortForward(kubectl_pf, f"pod/{servers}", [8082], kubeconfig=users.editor)
    try:
        assert exchange(pf.local[8082], b"") == b"hello-from-8082\n"
    finally:
        pf.stop()


class HatchwayPortForward(PortForward):
    """``hatchway port-forward`` run the same way."""

    def __init__(self, cluster: Cluster, target: str, ports: list[int]) -> None:
        args = ("port-forward", "--address", "127.0.0.1", target, *[f":{p}" for p in ports])
        self.start([sys.executable, "-m", "hatchway", *args], cluster.env, ports)


GIB = 1 << 30
BLOCK = 1 << 20


def _blocks(size: int = GIB) -> Iterator[bytes]:
    """``size`` bytes in 1 MiB blocks, each numbered, so that a lost, repeated or
    reordered block changes the hash."""
    base = os.urandom(BLOCK)
    for i in range(size // BLOCK):
        yield i.to_bytes(8, "big") + base[8:]


def test_hatchway_port_forward_moves_1gib_each_way(cluster: Cluster, servers: str):
    """1 GiB up and 1 GiB down at once through the pod's ``cat``, hashed on both ends."""
    pf = HatchwayPortForward(cluster, f"pod/{servers}", [8080, 8081])
    try:
        assert sorted(pf.local) == [8080, 8081], pf.output
        sent = hashlib.sha256()
        received = hashlib.sha256()
        count = [0]
        with socket.create_connection(("127.0.0.1", pf.local[8080]), timeout=60 * SCALE) as sock:

            def send() -> None:
                for block in _blocks():
                    sent.update(block)
                    sock.sendall(block)
                sock.shutdown(socket.SHUT_WR)

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                sending = pool.submit(send)
                while chunk := sock.recv(1 << 20):
                    received.update(chunk)
                    count[0] += len(chunk)
                sending.result()
        assert count[0] == GIB
        assert received.hexdigest() == sent.hexdigest()
        # And what the pod received, hashed there (64 MiB: the echo moved the GiB).
        upload = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", pf.local[8081]), timeout=60 * SCALE) as sock:
            for block in _blocks(64 * BLOCK):
                upload.update(block)
                sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.split()[0].decode() == upload.hexdigest()
    finally:
        _, err = pf.stop()
    assert b"Handling connection for 8080\n" in pf.output
    assert "error" not in err.lower(), err
