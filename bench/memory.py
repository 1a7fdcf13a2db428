"""Memory of the serving processes (API server, node agent, sshd) from /proc.

For each server: its own ``VmRSS`` (``/proc/PID/status``) and PSS
(``/proc/PID/smaps_rollup``), and the PSS of the process with all its descendants (the
node agent's ``runc exec`` children, sshd's per-connection processes), in KiB.
"""

from __future__ import annotations

import contextlib
import os
import threading

Sample = dict[str, dict[str, int]]


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(name))
    return kids


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def read(servers: dict[str, list[int]]) -> Sample:
    kids = _children()
    sample: Sample = {}
    for name, pids in servers.items():
        tree = [p for pid in pids for p in _tree(pid, kids)]
        sample[name] = {
            "rss_kib": sum(_status_kib(p, "VmRSS") for p in pids),
            "pss_kib": sum(_pss_kib(p) for p in pids),
            "tree_pss_kib": sum(_pss_kib(p) for p in tree),
            "tree_procs": len(tree),
        }
    return sample


class Sampler:
    """A baseline, point samples, and the peak over a background-sampled period."""

    def __init__(self, servers: dict[str, list[int]], interval: float = 0.25) -> None:
        self.servers = servers
        self.interval = interval
        self.base: Sample = {}
        self.peak: Sample = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def baseline(self) -> Sample:
        self.base = read(self.servers)
        return self.base

    def sample(self) -> Sample:
        return read(self.servers)

    def start(self) -> None:
        self.peak = self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._merge(self.sample())

    def _merge(self, sample: Sample) -> None:
        for name, values in sample.items():
            peak = self.peak.setdefault(name, dict(values))
            for key, value in values.items():
                peak[key] = max(peak.get(key, 0), value)

    def stop(self) -> Sample:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self.peak

    def per_session(self, sample: Sample, sessions: int) -> dict[str, dict[str, float]]:
        """(sample - baseline) / sessions, in KiB, for each memory figure."""
        out: dict[str, dict[str, float]] = {}
        for name, values in sample.items():
            base = self.base.get(name, {})
            out[name] = {
                key: round((value - base.get(key, 0)) / sessions, 1)
                for key, value in values.items()
                if key.endswith("_kib")
            }
            out[name]["total_rss_kib"] = values["rss_kib"]
        return out
