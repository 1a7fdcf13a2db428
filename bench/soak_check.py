"""The soak's accounting of what must be gone: processes a killed session left (by its
tags), processes left in the containers and on the host at the end, and the fds of the
API server and node agent against their idle baseline.

Host processes: anything outside the containers whose command line carries this run's
tag (``sh -c … soak-RUN-I`` — ``kubectl``/``hatchway exec`` clients, a ``runc exec``
still running) or names the data directory, except the live API server, the live node
agent and the node agent's own children (its exec helper).
"""

from __future__ import annotations

import time
from typing import Any

from bench import soak_procs
from bench.soak_cluster import SoakCluster


class Checks:
    def __init__(self, cluster: SoakCluster, run: str) -> None:
        self.cluster = cluster
        self.run = run
        self.sampler = soak_procs.MemorySampler(cluster.pids)
        self.fd_base: dict[int, int] = {}
        self.fd_kinds: dict[int, dict[str, int]] = {}
        self.fd_sockets: dict[int, list[str]] = {}
        self.memory_before: dict[str, dict[str, int]] = {}

    def baseline(self) -> None:
        """Once warm and idle: fds of each server, memory before."""
        self._settle(10)
        for pid in self.cluster.pids().values():
            self.baseline_fds(pid)
        self.memory_before = self.sampler.sample()

    def baseline_fds(self, pid: int) -> None:
        self.fd_base[pid] = soak_procs.fd_count(pid)
        self.fd_kinds[pid] = soak_procs.fd_kinds(pid)
        self.fd_sockets[pid] = soak_procs.sockets(pid)

    def _is_ours(self, proc: soak_procs.Proc) -> bool:
        for word in proc.cmdline.split():
            if word.startswith(f"soak-{self.run}-"):
                return True
            if len(word) == 11 and word.startswith(f"3{self.run}") and word.isdigit():
                return True
        return False

    def gone(self, tags: list[str], grace: float) -> list[str]:
        """Wait up to ``grace`` seconds for every process carrying one of ``tags`` to end;
        returns those still there."""
        deadline = time.monotonic() + grace
        while True:
            left = soak_procs.tagged(soak_procs.processes(), tags)
            if not left or time.monotonic() > deadline:
                return [p.describe() for p in left]
            time.sleep(0.25)

    def leftovers(self) -> tuple[list[soak_procs.Proc], list[soak_procs.Proc]]:
        procs = soak_procs.processes()
        inits = dict(self.cluster.namespaces)
        in_containers = soak_procs.in_containers(procs, inits)
        namespaces = {p.ns for p in in_containers} | {
            ns for pid in inits.values() if (ns := soak_procs.namespace_of(pid))
        }
        servers = self.cluster.pids()
        data_dir = str(self.cluster.data_dir)
        live = self.cluster.live_containers()
        host = []
        for p in procs:
            if p.ns in namespaces or p.pid in servers.values() or p.ppid == servers["node"]:
                continue
            if any(cid in p.cmdline for cid in live):
                continue  # a live container's shim and its ``runc run``
            if self._is_ours(p) or data_dir in p.cmdline:
                host.append(p)
        return in_containers, host

    def _pool_growth(self, role: str) -> int:
        """How many more kept-alive API server → node connections ``role`` holds than at
        its baseline, up to the pool's bound: the API server asks the node for each
        session's outcome on a pooled connection and keeps up to ``POOL_PER_KEY`` of them
        idle, one fd at each end. (A restarted API server builds a new pool: the node's
        baseline held the old one's.) Beyond the bound they count as leaked."""
        from hatchway.transport.httpclient import POOL_PER_KEY

        pids = self.cluster.pids()
        port = self.cluster.node_port()

        def outbound(socks: list[str]) -> int:  # the API server's ends
            return sum(x.endswith(f"->127.0.0.1:{port} ESTABLISHED") for x in socks)

        def inbound(socks: list[str]) -> int:  # the node's ends
            mine = f"127.0.0.1:{port}->"
            return sum(x.startswith(mine) and x.endswith(" ESTABLISHED") for x in socks)

        now = min(POOL_PER_KEY, outbound(soak_procs.sockets(pids["apiserver"])))
        count = outbound if role == "apiserver" else inbound
        return max(0, now - count(self.fd_sockets.get(pids[role], [])))

    def _settle(self, timeout: float) -> tuple[list[soak_procs.Proc], list[soak_procs.Proc]]:
        deadline = time.monotonic() + timeout
        while True:
            container, host = self.leftovers()
            if (not container and not host) or time.monotonic() > deadline:
                return container, host
            time.sleep(0.5)

    def final(self, settle: float) -> dict[str, Any]:
        """After the last session: leftovers (given ``settle`` seconds to go), fds (the
        same time to come back to the baseline), memory after."""
        self.cluster.refresh_containers()
        container, host = self._settle(settle)
        fds: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + settle
        while True:
            for role, pid in self.cluster.pids().items():
                pooled = self._pool_growth(role)
                base = self.fd_base.get(pid, -1)
                now = soak_procs.fd_count(pid)
                leaked = max(0, now - base - pooled)
                fds[role] = {"pid": pid, "before": base, "after": now, "pooled": pooled}
                fds[role]["leaked"] = leaked
                fds[role]["kinds_before"] = self.fd_kinds.get(pid, {})  # type: ignore[assignment]
                fds[role]["kinds_after"] = soak_procs.fd_kinds(pid)  # type: ignore[assignment]
                fds[role]["sockets_before"] = self.fd_sockets.get(pid, [])  # type: ignore[assignment]
                fds[role]["sockets_after"] = soak_procs.sockets(pid)  # type: ignore[assignment]
            if all(v["leaked"] == 0 for v in fds.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return {
            "container_procs": [p.describe() for p in container],
            "host_procs": [p.describe() for p in host],
            "fds": fds,
            "memory_before": self.memory_before,
            "memory_peak": self.sampler.peak,
            "memory_after": self.sampler.sample(),
        }
