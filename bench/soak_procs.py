"""What the soak reads from /proc: processes by PID namespace and by tag, the fds of two
servers with their connections told apart, and the memory of the servers (own RSS and PSS)
sampled in a background thread.

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


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN",
               "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "07": "CLOSE"}  # fmt: skip


def _addr(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    octets = [str(int(ip[i : i + 2], 16)) for i in (6, 4, 2, 0)]
    return f"{'.'.join(octets)}:{int(port, 16)}"


def fd_targets(pid: int) -> dict[int, str]:
    """Each fd of a process and what it points to (``socket:[INODE]``, a path, ...)."""
    out = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return out


def _tcp_rows() -> dict[str, tuple[str, str, str]]:
    """Socket inode → (local, remote, state) for TCP over IPv4 and IPv6."""
    rows = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in _read(f"/proc/net/{name}").decode().splitlines()[1:]:
                f = line.split()
                local, remote = (_addr6(a) if len(a) > 13 else _addr(a) for a in (f[1], f[2]))
                rows[f[9]] = (local, remote, _TCP_STATES.get(f[3], f[3]))
    return rows


def _addr6(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    return f"[{ip}]:{int(port, 16)}"


@dataclass(frozen=True)
class FdAccount:
    """Two processes' fds at one instant, the connections between them told apart:
    ``pairs[role]`` are those ``role`` dialled to the other's port, ESTABLISHED and each
    end held by its process (a kept-alive pool's connections, a watch); ``counted`` the
    other fds of each role, a leak's fd among them."""

    fds: dict[str, dict[int, str]]  # role ("client", "server") -> fd -> its target
    pairs: dict[str, list[tuple[int, int]]]  # dialler -> (its fd, the other's fd)
    counted: dict[str, int]
    tcp: dict[str, dict[int, tuple[str, str, str]]]  # role -> fd -> (local, remote, state)

    def paired(self, role: str) -> set[int]:
        """The fds of ``role`` on a connection between the two, either way."""
        mine = {pair[0] for pair in self.pairs[role]}
        return mine | {pair[1] for other, ps in self.pairs.items() if other != role for pair in ps}

    def described(self, role: str) -> list[str]:
        """The counted fds of ``role``: ``fd target``, a TCP socket's as local->remote."""
        paired = self.paired(role)
        out = []
        for fd, target in sorted(self.fds[role].items()):
            if fd not in paired:
                row = self.tcp[role].get(fd)
                out.append(f"{fd} {f'{row[0]}->{row[1]} {row[2]}' if row else target}")
        return out


def _socket_ends(
    fds: dict[int, str], rows: dict[str, tuple[str, str, str]]
) -> dict[int, tuple[str, str, str]]:
    out = {}
    for fd, target in fds.items():
        if target.startswith("socket:[") and (row := rows.get(target[8:-1])) is not None:
            out[fd] = row
    return out


def _pairs(
    dialler: dict[int, tuple[str, str, str]], listener: dict[int, tuple[str, str, str]], port: int
) -> list[tuple[int, int]]:
    """Connections from ``dialler``'s sockets to ``listener``'s ``port``, by port pair."""
    accepted = {}  # (listener's local, its remote) -> its fd
    for fd, (local, remote, state) in listener.items():
        if state == "ESTABLISHED" and local.endswith(f":{port}"):
            accepted[(local, remote)] = fd
    pairs = []
    for fd, (local, remote, state) in dialler.items():
        if state == "ESTABLISHED" and (peer := accepted.get((remote, local))) is not None:
            pairs.append((fd, peer))
    return sorted(pairs)


def fd_account(client: int, server: int, ports: dict[str, int], tries: int = 20) -> FdAccount:
    """:class:`FdAccount` of ``client`` and ``server`` (pids; ``ports``: each one's
    listening port, by role) at one instant: both fd tables are read around the socket
    table, again until two reads agree (the table then names exactly the sockets they
    held), so no connection opened or closed between the reads is counted at one end
    only. Sockets are matched by inode to their ``local->remote``, the two ends of a
    connection by their port pair."""
    before = {"client": fd_targets(client), "server": fd_targets(server)}
    for _ in range(tries):
        rows = _tcp_rows()
        after = {"client": fd_targets(client), "server": fd_targets(server)}
        if after == before:
            break
        before = after
    ends = {role: _socket_ends(fds, rows) for role, fds in after.items()}
    pairs = {
        "client": _pairs(ends["client"], ends["server"], ports["server"]),
        "server": _pairs(ends["server"], ends["client"], ports["client"]),
    }
    between = len(pairs["client"]) + len(pairs["server"])
    counted = {role: len(fds) - between for role, fds in after.items()}
    return FdAccount(after, pairs, counted, ends)


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
