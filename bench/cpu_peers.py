"""CPU seconds per GiB of one stream, per process, for Hatchway and its peers side by side.

    .venv/bin/python bench/cpu_peers.py [--mib 1024] [--rounds 2] [--peers ssh hatchway ...]

``bench/cpu.py`` splits Hatchway's own cost per process; this splits every peer's the same
way, so a figure such as "stdin: machine CPU per GiB 1.20x ssh" can be read process by
process: which of ssh and sshd does the work our client, API server and node agent share,
and what the extra hop (the API server) costs beside it. One cluster and one sshd
(``bench/env.py``), the streams of ``bench/measure.py`` (``dd`` in the container at the
far end, zeros fed or counted here). While a stream runs, a sampler reads utime + stime of
every process on the machine from ``/proc`` every 20 ms; a process's cost is its last
reading less what it had at the stream's start (by pid), summed by command name
(``comm``). What no process accounts for -- soft interrupts, processes shorter than one
sample, this script's own feeding or counting -- is the ``rest`` column: the machine's busy
time (``/proc/stat``) less the processes'. Peers take turns round by round; the median of
the rounds is printed. Not a timed test.

``--direction echo`` does the same for the TTY keystroke echo of ``bench/echo.py``
(``--keys`` round trips): each process's scheduler time (``/proc/PID/task/*/schedstat``,
ns) between the first echo and the last, less what it spends in as long a time right
after with no keystroke, in µs per keystroke, by command name -- the ssh client, sshd and
``runc exec -t``'s console relay beside the client, API server and node agent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import sys
import tempfile
import threading
from collections import defaultdict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import env as benv
from bench import measure
from bench.peers import ORDER, Peer, make_peers

TICK = os.sysconf("SC_CLK_TCK")
SELF = os.getpid()


def _snapshot() -> dict[int, tuple[str, float]]:
    """pid → (comm, utime + stime seconds) of every process now."""
    out: dict[int, tuple[str, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{name}/stat") as f:
            text = f.read()
        if not text:
            continue
        head, _, tail = text.rpartition(")")
        fields = tail.split()
        out[int(name)] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / TICK)
        text = ""
    return out


class Sampler:
    """Every process's CPU over a stream, by command name."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.first = _snapshot()
        self.busy0 = measure.machine_busy()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.busy = measure.machine_busy() - self.busy0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for pid, (comm, cpu) in _snapshot().items():
            self.last[pid] = (comm, cpu)

    def by_comm(self, names: dict[int, str]) -> dict[str, float]:
        """CPU seconds by command name; ``names`` renames some pids (the servers)."""
        out: dict[str, float] = defaultdict(float)
        for pid, (comm, cpu) in self.last.items():
            label = names.get(pid, "bench" if pid == SELF else comm)
            # By pid alone: a kernel worker renames itself with each work item.
            start = self.first.get(pid)
            base = start[1] if start is not None else 0.0
            out[label] += max(0.0, cpu - base)
        return dict(out)


def _run_ns() -> dict[int, tuple[str, int]]:
    """pid → (comm, scheduler run time in ns over all its threads) of every process."""
    out: dict[int, tuple[str, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        total = 0
        with contextlib.suppress(OSError):
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            for task in os.listdir(f"/proc/{name}/task"):
                with open(f"/proc/{name}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            out[int(name)] = (comm, total)
    return out


def one_echo(peer: Peer, keys: int, names: dict[int, str]) -> dict[str, float]:
    """µs of CPU per keystroke by command name, and the echo's p50/p99 (ms)."""
    from bench.echo import echo

    marks: dict[str, dict[int, tuple[str, int]]] = {}
    started = [0.0]

    def window(edge: str, client: int) -> None:
        import time

        if edge == "start":
            marks["start"] = _run_ns()
            started[0] = time.monotonic()
            return
        marks["end"] = _run_ns()
        time.sleep(time.monotonic() - started[0])  # as long with no keystroke
        marks["idle"] = _run_ns()

    times = echo(peer, keys, 120.0 + keys, window)
    out: dict[str, float] = defaultdict(float)
    for pid, (comm, end) in marks["end"].items():
        if pid not in marks["start"] or pid == SELF:
            continue
        spent = end - marks["start"][pid][1]
        idle = marks["idle"].get(pid, (comm, end))[1] - end
        out[names.get(pid, comm)] += (spent - idle) / keys / 1000
    costs = {k: v for k, v in out.items() if abs(v) >= 0.5}
    costs["p50_ms"] = times["p50_ms"]
    costs["p99_ms"] = times["p99_ms"]
    return costs


def one(peer: Peer, direction: str, size: int, names: dict[int, str]) -> dict[str, float]:
    run = measure.stdin_throughput if direction == "in" else measure.stdout_throughput
    with Sampler() as sampler:
        result = run(peer, size, timeout=300)
    gib = size / 2**30
    costs = {k: v / gib for k, v in sampler.by_comm(names).items() if v > 0}
    costs["rest"] = sampler.busy / gib - sum(costs.values())
    costs["machine"] = sampler.busy / gib
    costs["GiB/s"] = float(result["gib_s"])
    return costs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--direction", nargs="+", choices=("in", "out", "echo"), default=["in", "out"])
    p.add_argument("--keys", type=int, default=2000, help="keystrokes per echo round")
    p.add_argument("--peers", nargs="+", choices=ORDER, default=["ssh", "hatchway"])
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/cpu_peers.py needs root (runc, the node agent)", file=sys.stderr)
        return 2
    benv.ensure_tools(install=False)
    size = args.mib << 20
    runs: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-cpu-")))
        peers = benv.Peers()
        benv.log("starting a Hatchway cluster")
        peers.cluster = benv.start_cluster(stack, base, 1)
        if "ssh" in args.peers:
            peers.ssh = benv.start_sshd(stack, base)
        columns = {n: q for n, q in make_peers(peers, dict(os.environ)).items() if n in args.peers}
        print(f"load average at start: {os.getloadavg()}", flush=True)
        for r in range(args.rounds):
            order = list(columns.items())
            if r % 2:
                order.reverse()
            for name, peer in order:
                for direction in args.direction:
                    cluster = peers.cluster
                    names = {cluster.apiserver_pid: "apiserver", cluster.node_pid: "node"}
                    if direction == "echo":
                        costs = one_echo(peer, args.keys, names)
                    else:
                        costs = one(peer, direction, size, names)
                    runs[(name, direction)].append(costs)
                    top = sorted(costs.items(), key=lambda kv: -kv[1])
                    shown = " ".join(f"{k}={v:.2f}" for k, v in top if abs(v) >= 0.01)
                    print(f"{name} {direction}: {shown}", flush=True)
        print(f"load average at end: {os.getloadavg()}", flush=True)
    print("\nmedian CPU s per GiB (processes by command name; rest = machine less processes);")
    print("echo: µs of CPU per keystroke by command name, p50/p99 in ms")
    for (name, direction), rows in runs.items():
        keys = sorted({k for row in rows for k in row}, key=lambda k: -rows[0].get(k, 0.0))
        cells = []
        for k in keys:
            v = statistics.median(row.get(k, 0.0) for row in rows)
            if abs(v) >= 0.01:
                cells.append(f"{k} {v:.2f}")
        print(f"| {name} | {direction} | " + " · ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
