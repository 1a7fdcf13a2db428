"""What the soak reads from /proc: processes by PID namespace and by tag, fd counts, and
the memory of the servers (own RSS and PSS) sampled in a background thread.

A session's command carries a tag (``sh -c '…' soak-RUN-I`` and ``sleep 3RUNI``), so a
process it left behind can be named. The host view of /proc shows the containers'
processes too; they are told apart by ``/proc/PID/ns/pid``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    ns: str
    cmdline: str  # NULs as spaces

    def describe(self) -> str:
        return f"{self.pid} {self.cmdline[:160]}"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def processes() -> list[Proc]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            ns = os.readlink(f"/proc/{pid}/ns/pid")
            cmd = _read(f"/proc/{pid}/cmdline").rstrip(b"\0").replace(b"\0", b" ")
            out.append(Proc(pid, int(fields[1]), ns, cmd.decode(errors="replace")))
    return out


def namespace_of(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/pid")
    return None


def in_containers(procs: Iterable[Proc], inits: dict[str, int]) -> list[Proc]:
    """Processes in the containers' PID namespaces other than each container's init.
    ``inits`` maps container id to its init's host pid (dead containers drop out: their
    namespace is gone with them)."""
    namespaces = {ns for pid in inits.values() if (ns := namespace_of(pid))}
    init_pids = set(inits.values())
    return [p for p in procs if p.ns in namespaces and p.pid not in init_pids]


def tagged(procs: Iterable[Proc], tags: Iterable[str]) -> list[Proc]:
    """Processes with one of ``tags`` as a whole word of their command line."""
    wanted = set(tags)
    return [p for p in procs if wanted.intersection(p.cmdline.split())]


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_kinds(pid: int) -> dict[str, int]:
    """What a process's fds are, counted by kind (``socket``, ``pipe``, a file path)."""
    kinds: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                kind = target.split(":[", 1)[0] if ":[" in target else target
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN",
               "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "07": "CLOSE"}  # fmt: skip


def _tcp_table() -> dict[str, str]:
    """Socket inode → ``local->remote STATE`` for TCP over IPv4 (loopback: all we use)."""
    table = {}
    with contextlib.suppress(OSError):
        for line in _read("/proc/net/tcp").decode().splitlines()[1:]:
            f = line.split()
            local, remote = (_addr(a) for a in (f[1], f[2]))
            table[f[9]] = f"{local}->{remote} {_TCP_STATES.get(f[3], f[3])}"
    return table


def _addr(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    octets = [str(int(ip[i : i + 2], 16)) for i in (6, 4, 2, 0)]
    return f"{'.'.join(octets)}:{int(port, 16)}"


def sockets(pid: int) -> list[str]:
    """The TCP sockets a process holds (``local->remote STATE``; ``unix`` otherwise)."""
    table = _tcp_table()
    out = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.append(table.get(target[8:-1], "unix or other"))
    return sorted(out)


def _kib(pid: int, path: str, key: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in _read(f"/proc/{pid}/{path}").decode().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, int]:
    return {"rss_kib": _kib(pid, "status", "VmRSS"), "pss_kib": _kib(pid, "smaps_rollup", "Pss")}


class MemorySampler:
    """Memory of each server role (whatever pid holds the role now, so across restarts)
    every ``interval`` seconds; keeps the peak of each figure."""

    def __init__(self, pids: Callable[[], dict[str, int]], interval: float = 1.0) -> None:
        self._pids = pids
        self.interval = interval
        self.peak: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> dict[str, dict[str, int]]:
        try:
            pids = self._pids()
        except (OSError, ValueError, KeyError):
            return {}
        out = {role: memory(pid) for role, pid in pids.items()}
        for role, values in out.items():
            peak = self.peak.setdefault(role, dict(values))
            for key, value in values.items():
                peak[key] = max(peak[key], value)
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
