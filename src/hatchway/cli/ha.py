"""``hatchway up --ha``: etcd, API servers, HAProxy and node agents on one machine.

Three etcd members (client and peer mutual TLS, an etcd CA of their own), three API
servers on them sharing one PKI and service-account signing key, HAProxy in TCP mode in
front of them (the Kubernetes HA guides' setup: ``/readyz`` checks over TLS, a dead API
server out of rotation within ~2 s), and N node agents talking to the load balancer.
Each component is a process of this machine in a network namespace of its own, with an
address on a bridge this command creates (:mod:`hatchway.cli.netns`). The layout in
``DATA_DIR``: ``pki/`` (as ``hatchway pki`` issues it), ``etcd/<member>/``,
``apiserver-<i>/`` and ``node-<i>/`` (data dirs), ``haproxy/``, ``logs/<name>.log`` and
``cluster.json`` with a ``components`` list. Running it again restarts only the
components that died, with their data: a restarted etcd member rejoins its cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hatchway.cli import netns, pki_cmd
from hatchway.errors import ConfigError

SUBNET = netns.SUBNET
LB_PORT = 6443
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
NODE_PORT = 10250
MEMBERS = 3
MAX_NODES = 100


@dataclass(frozen=True)
class Component:
    role: str  # etcd, apiserver, loadbalancer, node
    name: str
    address: str
    port: int

    def record(self, pid: int) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "pid": pid,
            "address": self.address,
            "port": self.port,
        }


def cluster_id(data_dir: pathlib.Path) -> str:
    """Six hex digits naming the cluster's namespaces and interfaces."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]


def plan(nodes: int) -> list[Component]:
    """Every component, in start order."""
    if not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    etcd = [
        Component("etcd", f"etcd-{i}", f"{SUBNET}.{10 + i}", ETCD_CLIENT_PORT) for i in (1, 2, 3)
    ]
    api = [
        Component("apiserver", f"apiserver-{i}", f"{SUBNET}.{20 + i}", APISERVER_PORT)
        for i in (1, 2, 3)
    ]
    lb = Component("loadbalancer", "haproxy", f"{SUBNET}.10", LB_PORT)
    node = [
        Component("node", f"node-{i}", f"{SUBNET}.{100 + i}", NODE_PORT)
        for i in range(1, nodes + 1)
    ]
    return [*etcd, *api, lb, *node]


def server_url(components: Sequence[Component]) -> str:
    lb = next(c for c in components if c.role == "loadbalancer")
    return f"https://{lb.address}:{lb.port}"


# ---------------------------------------------------------------- what each one runs


class Layout:
    """The paths of one cluster's data directory."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data = data_dir
        self.pki = data_dir / "pki"
        self.etcd_ca = self.pki / "etcd" / "ca.crt"
        self.etcd_client = self.pki / "etcd" / "apiserver-etcd-client"
        self.haproxy = data_dir / "haproxy"

    def log(self, name: str) -> pathlib.Path:
        return self.data / "logs" / f"{name}.log"


def _etcd_argv(
    layout: Layout, me: Component, members: Sequence[Component], token: str
) -> list[str]:
    etcd = shutil.which("etcd") or "etcd"
    client = f"https://{me.address}:{ETCD_CLIENT_PORT}"
    peer = f"https://{me.address}:{ETCD_PEER_PORT}"
    initial = ",".join(f"{m.name}=https://{m.address}:{ETCD_PEER_PORT}" for m in members)
    cert = layout.pki / "etcd" / f"{me.name}.crt"
    key = layout.pki / "etcd" / f"{me.name}.key"
    return [
        etcd, "--name", me.name, "--data-dir", str(layout.data / "etcd" / me.name),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial, "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--cert-file", str(cert), "--key-file", str(key),
        "--trusted-ca-file", str(layout.etcd_ca), "--client-cert-auth",
        "--peer-cert-file", str(cert), "--peer-key-file", str(key),
        "--peer-trusted-ca-file", str(layout.etcd_ca), "--peer-client-cert-auth",
        "--log-outputs", "stderr",
    ]  # fmt: skip


def _apiserver_argv(
    layout: Layout, me: Component, members: Sequence[Component], extra: Sequence[str]
) -> list[str]:
    # Each API server tries "its" member first: the load spreads over the three.
    index = int(me.name.rsplit("-", 1)[1]) - 1
    ordered = [*members[index:], *members[:index]]
    pki = layout.pki
    return [
        sys.executable, "-m", "hatchway", "apiserver",
        "--data-dir", str(layout.data / me.name), "--host", me.address, "--port", str(me.port),
        "--etcd-servers", ",".join(f"https://{m.address}:{m.port}" for m in ordered),
        "--etcd-cafile", str(layout.etcd_ca),
        "--etcd-certfile", f"{layout.etcd_client}.crt",
        "--etcd-keyfile", f"{layout.etcd_client}.key",
        "--tls-cert-file", str(pki / "apiserver.crt"),
        "--tls-private-key-file", str(pki / "apiserver.key"),
        "--client-ca-file", str(pki / "ca.crt"),
        "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
        "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
        "--kubelet-certificate-authority", str(pki / "ca.crt"),
        "--service-account-key-file", str(pki / "service-account.key"),
        *extra,
    ]  # fmt: skip


def _node_argv(layout: Layout, me: Component, server: str, extra: Sequence[str]) -> list[str]:
    pki = layout.pki
    return [
        sys.executable, "-m", "hatchway", "node",
        "--data-dir", str(layout.data / me.name), "--host", me.address, "--port", str(me.port),
        "--address", me.address, "--apiserver", server, "--node-name", me.name,
        "--tls-cert-file", str(pki / "nodes" / f"{me.name}.crt"),
        "--tls-private-key-file", str(pki / "nodes" / f"{me.name}.key"),
        "--ca-file", str(pki / "ca.crt"), "--client-ca-file", str(pki / "node-client-ca.crt"),
        *extra,
    ]  # fmt: skip


def haproxy_config(layout: Layout, lb: Component, apiservers: Sequence[Component]) -> str:
    """TCP mode, TLS passed through to the API servers; ``/readyz`` checked every second
    over TLS with the load balancer's own client certificate, two failures take a server
    out (its sessions are shut), two successes put it back; a connection that cannot
    reach a server is redispatched to another (protocol.md 12.1)."""
    servers = "\n".join(f"    server {a.name} {a.address}:{a.port}" for a in apiservers)
    check = (
        f"check check-ssl verify required ca-file {layout.pki / 'ca.crt'} "
        f"crt {layout.pki / 'loadbalancer.pem'} inter 1s fall 2 rise 2 "
        "on-marked-down shutdown-sessions"
    )
    return f"""\
# Written by hatchway up --ha.
global
    maxconn 4096
    stats socket {layout.haproxy / "admin.sock"} mode 600 level admin

defaults
    mode tcp
    option dontlognull
    retries 3
    option redispatch
    timeout connect 3s
    # Exec sessions and watches are long-lived: the API server's own idle timeout (4 h)
    # applies, not the load balancer's.
    timeout client 4h
    timeout server 4h
    timeout check 2s

frontend apiserver
    bind {lb.address}:{lb.port}
    default_backend apiservers

backend apiservers
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {lb.address}
    http-check expect status 200
    default-server {check}
{servers}
"""


def mint(layout: Layout, components: Sequence[Component]) -> None:
    """What the cluster needs of its PKI and configuration (what exists is kept)."""
    lb = next(c for c in components if c.role == "loadbalancer")
    apiservers = [c for c in components if c.role == "apiserver"]
    hosts = [lb.address, *(a.address for a in apiservers)]
    pki_cmd.init(layout.pki, hosts)
    for c in components:
        if c.role == "etcd" and not (layout.pki / "etcd" / f"{c.name}.crt").exists():
            pki_cmd.etcd_member(layout.pki, c.name, c.address)
        if c.role == "node" and not (layout.pki / "nodes" / f"{c.name}.crt").exists():
            pki_cmd.node(layout.pki, c.name, c.address)
    if not (layout.pki / "loadbalancer.pem").exists():
        pki_cmd.loadbalancer(layout.pki)
    layout.haproxy.mkdir(parents=True, exist_ok=True, mode=0o700)
    (layout.haproxy / "haproxy.cfg").write_text(haproxy_config(layout, lb, apiservers))


# ---------------------------------------------------------------------- processes


def ours(pid: int, data_dir: pathlib.Path) -> bool:
    """``pid`` is alive and one of this cluster's processes (its command line names the
    data directory: a recycled pid is not ours)."""
    from hatchway.cli.up import _alive

    if not _alive(pid):
        return False
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(data_dir).encode() in cmdline


def spawn(netns_name: str, argv: list[str], log_path: pathlib.Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            netns.enter(netns_name, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return process.pid


def argv_of(
    layout: Layout,
    component: Component,
    components: Sequence[Component],
    extra: dict[str, list[str]],
) -> list[str]:
    etcd = [c for c in components if c.role == "etcd"]
    if component.role == "etcd":
        return _etcd_argv(layout, component, etcd, f"hatchway-{cluster_id(layout.data)}")
    if component.role == "apiserver":
        return _apiserver_argv(layout, component, etcd, extra.get("apiserver", []))
    if component.role == "node":
        return _node_argv(layout, component, server_url(components), extra.get("node", []))
    return [shutil.which("haproxy") or "haproxy", "-db", "-f", str(layout.haproxy / "haproxy.cfg")]


# ------------------------------------------------------------------------ waiting


def _tls(cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def probe(url: str, ctx: ssl.SSLContext, timeout: float = 2.0) -> str:
    """The body of a GET, or raise OSError."""
    with urllib.request.urlopen(url, timeout=timeout, context=ctx) as answer:
        return str(answer.read(4096).decode(errors="replace"))


def etcd_healthy(layout: Layout, member: Component) -> bool:
    ctx = _tls(
        layout.pki / "etcd" / f"{member.name}.crt",
        layout.pki / "etcd" / f"{member.name}.key",
        layout.etcd_ca,
    )
    try:
        return '"true"' in probe(f"https://{member.address}:{member.port}/health", ctx)
    except (OSError, ValueError):
        return False


def apiserver_ready(layout: Layout, apiserver: Component) -> bool:
    ctx = _tls(layout.pki / "admin.crt", layout.pki / "admin.key", layout.pki / "ca.crt")
    try:
        return probe(f"https://{apiserver.address}:{apiserver.port}/readyz", ctx) == "ok"
    except (OSError, ValueError):
        return False


def wait_until(what: str, check: Any, pids: dict[str, int], layout: Layout, timeout: float) -> None:
    """Until ``check()``; a process of ``pids`` that exits fails at once, with its log."""
    deadline = time.monotonic() + timeout
    while not check():
        for name, pid in pids.items():
            if not ours(pid, layout.data):
                from hatchway.cli.up import _log_tail

                log = layout.log(name)
                raise ConfigError(
                    f"{name} exited during start-up; last lines of {log}:\n{_log_tail(log)}"
                )
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} not ready within {timeout:.0f}s")
        time.sleep(0.2)


async def nodes_ready(kubeconfig: pathlib.Path, names: Sequence[str], timeout: float) -> None:
    from hatchway.client.api import Client

    client = Client.from_kubeconfig(str(kubeconfig))
    deadline = time.monotonic() + timeout
    last = "the load balancer is not answering yet"
    while time.monotonic() < deadline:
        try:
            listing = await client.rest.get("/api/v1/nodes")
            ready = {
                n["metadata"]["name"]
                for n in listing.get("items", [])
                for c in n.get("status", {}).get("conditions", [])
                if c.get("type") == "Ready" and c.get("status") == "True"
            }
            missing = sorted(set(names) - ready)
            if not missing:
                return
            last = f"nodes not Ready yet: {', '.join(missing)}"
        except Exception as exc:
            last = str(exc) or type(exc).__name__
        await asyncio.sleep(0.3)
    raise ConfigError(f"the cluster did not become ready within {timeout:.0f}s: {last}")
