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

from hatchway.transport.httpclient import POOL_PER_KEY

#: The servers as :func:`soak_procs.fd_account` has them.
ROLES = (("apiserver", "client"), ("node", "server"))
#: Connections each keeps to the other when idle, at most: the API server's pool of
#: node connections (its outcome queries, the next exec's upgrade); the node agent's
#: pod watch (its other calls each dial a connection of their own and close it).
BOUNDS = {"client": POOL_PER_KEY, "server": 1}


def fd_leaks(
    base: dict[str, int], now: soak_procs.FdAccount, bounds: dict[str, int]
) -> dict[str, int]:
    """Leaked fds of the client and the server of ``now`` against their ``base`` counts
    (fds not on a connection between them): every fd more, and the connections one
    keeps to the other beyond its bound (counted as the dialler's)."""
    leaks = {end: max(0, now.counted[end] - base[end]) for end in ("client", "server")}
    for end in leaks:
        leaks[end] += max(0, len(now.pairs[end]) - bounds[end])
    return leaks


class Checks:
    def __init__(self, cluster: SoakCluster, run: str) -> None:
        self.cluster = cluster
        self.run = run
        self.sampler = soak_procs.MemorySampler(cluster.pids)
        self.fd_base: dict[int, int] = {}  # pid -> fds not on a connection to the other
        self.fd_list: dict[int, list[str]] = {}
        self.memory_before: dict[str, dict[str, int]] = {}

    def baseline(self) -> None:
        """Once warm and idle: fds of each server, memory before."""
        self._settle(10)
        for pid in self.cluster.pids().values():
            self.baseline_fds(pid)
        self.memory_before = self.sampler.sample()

    def _fd_account(self) -> tuple[dict[str, int], soak_procs.FdAccount]:
        pids = self.cluster.pids()
        ports = self.cluster.ports()
        account = soak_procs.fd_account(pids["apiserver"], pids["node"], ports)
        return pids, account

    def baseline_fds(self, pid: int) -> None:
        """The fds of ``pid`` (a server) but those on a connection between the two
        servers (:func:`soak_procs.fd_account`)."""
        pids, account = self._fd_account()
        for role, end in ROLES:
            if pids[role] == pid:
                self.fd_base[pid] = account.counted[end]
                self.fd_list[pid] = account.described(end)

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
            pids, account = self._fd_account()
            base = {end: self.fd_base.get(pids[role], -1) for role, end in ROLES}
            leaks = fd_leaks(base, account, BOUNDS)
            for role, end in ROLES:
                pid = pids[role]
                fds[role] = {"pid": pid, "before": base[end], "after": account.counted[end]}
                fds[role] |= {"kept": len(account.pairs[end]), "leaked": leaks[end]}
                fds[role]["fds_before"] = self.fd_list.get(pid, [])
                fds[role]["fds_after"] = account.described(end)
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
