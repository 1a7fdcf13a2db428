"""CPU seconds per GiB, per process, of one ``hatchway exec`` stream (stdout or stdin).

    .venv/bin/python bench/cpu.py                                  # this tree, both ways
    .venv/bin/python bench/cpu.py --tree old=/tmp/old/src --tree new=src --rounds 3
    .venv/bin/python bench/cpu.py --mib 512 --profile /tmp/prof     # perf record too
    .venv/bin/python bench/cpu.py --direction echo --keys 300 --tree ... --tree ...

One cluster (``bench/env.py``: ``hatchway up``, one busybox pod). With ``--tree``, the
API server and the node agent are restarted with ``PYTHONPATH`` set to that tree before
its runs, and the CLI runs with it too; trees take turns round by round (the order
reversed every other round), so a noisy neighbour hits both alike. CPU time is read from
``/proc/PID/stat`` (utime + stime) before and after each stream for the API server, the
node agent and the node's exec helper (the container's own processes are not counted),
and from the client's rusage (``os.wait4``), with the minor page faults of each: on a
shared machine wall-clock rates mean little, CPU seconds per GiB per process do.
``--profile DIR`` records each process with ``perf record -g`` (on-CPU samples, native
and kernel; ``--profiler py-spy`` for Python stacks instead) while the stream runs;
``bench/profile_summary.py`` sorts the samples into categories. ``--direction echo`` is
the TTY keystroke echo of ``bench/echo.py`` per tree: p50/p99 and each process's CPU per
keystroke in µs (``/proc/PID/task/*/schedstat``, start-up excluded, the same time without
keystrokes subtracted); ``--syscalls DIR`` there ``strace -c``s the servers instead.
Not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import env as benv

BLOCK = 64 * 1024
CHUNK = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """utime + stime of ``pid`` (seconds), 0 when it is gone."""
    return _stat(pid)[0]


def _stat(pid: int) -> tuple[float, int]:
    """utime + stime (seconds) and minor page faults of ``pid``; zeros when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[7])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def _helpers(node_pid: int) -> list[int]:
    """The node agent's long-lived Python children (the exec helper), not runc or shims."""
    found = []
    for child in _children(node_pid):
        with contextlib.suppress(OSError):
            cmdline = pathlib.Path(f"/proc/{child}/cmdline").read_bytes()
            if b"execshim" in cmdline or b"exec_helper" in cmdline or b"exec-helper" in cmdline:
                found.append(child)
    return found


def _snapshot(cluster: benv.Cluster) -> dict[str, float]:
    snap = {"apiserver": _cpu(cluster.apiserver_pid), "node": _cpu(cluster.node_pid)}
    snap["helper"] = sum(_cpu(pid) for pid in _helpers(cluster.node_pid))
    snap["apiserver_faults"] = _stat(cluster.apiserver_pid)[1]
    snap["node_faults"] = _stat(cluster.node_pid)[1]
    return snap


def _argv(cluster: benv.Cluster, direction: str, size: int) -> list[str]:
    count = size // BLOCK
    if direction == "out":
        cmd = ["dd", "if=/dev/zero", "bs=64k", f"count={count}"]
        return [benv.HATCHWAY, "exec", cluster.pod, "--", *cmd]
    cmd = ["dd", "of=/dev/null", "bs=64k", "iflag=fullblock"]
    return [benv.HATCHWAY, "exec", "-i", cluster.pod, "--", *cmd]


def _profiler(kind: str, pid: int, out: pathlib.Path) -> subprocess.Popen:
    """``perf record`` (on-CPU samples, native and kernel, call graphs) or py-spy (the
    Python stacks; idle threads left out) of ``pid`` into ``out``."""
    if kind == "perf":
        argv = ["perf", "record", "-F", "499", "-g", "-o", f"{out}.perf", "-p", str(pid)]
    else:
        pyspy = str(pathlib.Path(benv.PYTHON).parent / "py-spy")
        argv = [pyspy, "record", "-r", "400", "--format", "raw", "-o", f"{out}.txt"]
        argv += ["--pid", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _profilers(cluster: benv.Cluster, kind: str, out: pathlib.Path, tag: str) -> list:
    targets = {"apiserver": cluster.apiserver_pid, "node": cluster.node_pid}
    procs = [_profiler(kind, pid, out / f"{tag}-{name}") for name, pid in targets.items()]
    time.sleep(1.0)  # attached
    return procs


def _stop_profilers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(2)
    for proc in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one(
    cluster: benv.Cluster,
    env: dict[str, str],
    direction: str,
    size: int,
    profile: pathlib.Path | None = None,
    tag: str = "",
    kind: str = "perf",
) -> dict[str, float]:
    """Run one stream; CPU seconds per GiB of each process."""
    argv = _argv(cluster, direction, size)
    profilers = _profilers(cluster, kind, profile, tag) if profile else []
    before = _snapshot(cluster)
    with tempfile.TemporaryFile() as err:
        stdin = subprocess.PIPE if direction == "in" else subprocess.DEVNULL
        stdout = subprocess.PIPE if direction == "out" else subprocess.DEVNULL
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=err)
        if profile:
            profilers.append(_profiler(kind, proc.pid, profile / f"{tag}-client"))
        got = _pump(proc, direction, size)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        if proc.returncode != 0 or got != size:
            raise RuntimeError(f"rc={proc.returncode}, {got} bytes: {err.read()[-300:]!r}")
    after = _snapshot(cluster)
    _stop_profilers(profilers)
    gib = size / 2**30
    row = {name: (after[name] - before[name]) / gib for name in before}
    row["client"] = (usage.ru_utime + usage.ru_stime) / gib
    row["client_faults"] = usage.ru_minflt / gib
    row["total"] = sum(row[c] for c in COLUMNS[:-1])
    row["wall_gib_s"] = gib / wall
    return row


def _pump(proc: subprocess.Popen, direction: str, size: int) -> int:
    if direction == "out":
        assert proc.stdout is not None
        fd, buf, total = proc.stdout.fileno(), bytearray(CHUNK), 0
        while n := os.readv(fd, [buf]):
            total += n
        proc.stdout.close()
        return total
    assert proc.stdin is not None
    fd, view, sent = proc.stdin.fileno(), memoryview(bytes(CHUNK)), 0
    while sent < size:
        chunk = view[: min(CHUNK, size - sent)]
        while chunk:
            chunk = chunk[os.write(fd, chunk) :]
        sent += CHUNK
    proc.stdin.close()
    return size


def _use_tree(cluster: benv.Cluster, src: str | None) -> dict[str, str]:
    env = dict(cluster.env)
    if src:
        env["PYTHONPATH"] = os.path.realpath(src)
    else:
        env.pop("PYTHONPATH", None)
    cluster.env = env
    benv.restart_servers(cluster)
    return env


COLUMNS = ("client", "apiserver", "node", "helper", "total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--direction", nargs="+", default=["out", "in"], choices=["out", "in", "echo"],
        help="echo: TTY keystroke echo (bench/echo.py, --keys): p50/p99, µs CPU per key",
    )  # fmt: skip
    parser.add_argument("--keys", type=int, default=100, help="keystrokes per echo round")
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--tree", action="append", default=[],
        help="NAME=SRC_DIR; for echo, NAME=kubectl: kubectl (WebSocket) as the client of "
        "this tree's servers",
    )  # fmt: skip
    parser.add_argument("--profile", type=pathlib.Path, help="record profiles into DIR")
    parser.add_argument("--profiler", choices=["perf", "py-spy"], default="perf")
    parser.add_argument(
        "--syscalls", type=pathlib.Path,
        help="echo: strace -c the API server and node agent into DIR (no CPU figure)",
    )  # fmt: skip
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this", ""]]
    size = args.mib * 2**20
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    echoes: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-cpu-")))
        cluster = benv.start_cluster(stack, base, users=1)
        print(f"load average at start: {os.getloadavg()}", flush=True)
        for r in range(args.rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for name, src in order:
                tree = "" if src == "kubectl" else src  # kubectl: this tree's servers
                env = _use_tree(cluster, tree) if tree or len(trees) > 1 else cluster.env
                for direction in args.direction:
                    if direction == "echo":
                        traced = None
                        if args.syscalls:
                            traced = args.syscalls / f"{name}-{r}"
                            traced.mkdir(parents=True, exist_ok=True)
                        profiled = None
                        if args.profile:
                            profiled = (args.profile, f"{name}-echo-{r}", args.profiler)
                        client = "kubectl" if src == "kubectl" else "hatchway"
                        times = _echo(cluster, env, args.keys, traced, profiled, client)
                        echoes.setdefault(name, []).append(times)
                        keyed = [c for c in ECHO_COLUMNS if c + "_us" in times]
                        cells = " ".join(f"{c}={times[c + '_us']:.0f}" for c in keyed)
                        print(f"{name} echo: p50 {times['p50_ms']:.3f} ms, "
                              f"p99 {times['p99_ms']:.3f} ms; µs CPU per key {cells}",
                              flush=True)  # fmt: skip
                        continue
                    tag = f"{name}-{direction}"
                    row = one(cluster, env, direction, size, args.profile, tag, args.profiler)
                    results.setdefault((name, direction), []).append(row)
                    cells = " ".join(f"{c}={row[c]:.2f}" for c in COLUMNS)
                    cells += " faults/GiB " + " ".join(
                        f"{c}={row[c + '_faults']:.0f}" for c in ("client", "apiserver", "node")
                    )
                    print(f"{name} {direction}: {cells} (wall {row['wall_gib_s']:.2f} GiB/s)",
                          flush=True)  # fmt: skip
        print(f"load average at end: {os.getloadavg()}")
    print("\nmedian CPU s per GiB")
    print("| tree | direction | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- |" + " --- |" * len(COLUMNS))
    for (name, direction), rows in results.items():
        cells = " | ".join(f"{statistics.median(r[c] for r in rows):.2f}" for c in COLUMNS)
        print(f"| {name} | {direction} | {cells} |")
    for name, runs in echoes.items():
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        cells = " ".join(
            f"{c}={statistics.median(r[c + '_us'] for r in runs):.0f}"
            for c in ECHO_COLUMNS
            if all(c + "_us" in r for r in runs)
        )
        print(f"echo {name}: median p50 {p50:.3f} ms, p99 {p99:.3f} ms; µs CPU per key {cells}")
        idle = " ".join(
            f"{c}={statistics.median(r[c + '_idle_us'] for r in runs):.0f}"
            for c in ECHO_COLUMNS
            if all(c + "_idle_us" in r for r in runs)
        )
        print(f"  (subtracted: the same time without keystrokes, per key: {idle})")


def _run_ns(pid: int) -> int:
    """CPU time of all of ``pid``'s threads so far, in ns (``/proc/PID/task/*/schedstat``:
    the scheduler's own accounting, not 10 ms ticks); 0 when it is gone."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    return total


def _echo_pids(cluster: benv.Cluster, client: int) -> dict[str, list[int]]:
    return {
        "client": [client],
        "apiserver": [cluster.apiserver_pid],
        "node": [cluster.node_pid],
        "helper": _helpers(cluster.node_pid),
    }


def _echo(
    cluster: benv.Cluster,
    env: dict[str, str],
    keys: int,
    syscalls: pathlib.Path | None = None,
    profile: tuple[pathlib.Path, str, str] | None = None,
    client: str = "hatchway",
) -> dict[str, float]:
    """Keystroke echo p50/p99 and, over the keystrokes alone (start-up excluded), the CPU
    of each process per keystroke in µs (``<name>_us``); with ``syscalls``, ``strace -c``
    of the API server and the node agent instead (it slows them: no CPU figure then);
    with ``profile`` (directory, tag, profiler), the client, API server and node agent
    profiled over the keystrokes (``TAG-client`` etc.; the CPU figures include the
    profilers' interruptions). ``client`` "kubectl": kubectl over WebSocket against the
    same servers in place of the CLI (its CPU per key beside ours)."""
    from bench.echo import echo
    from bench.peers import Peer

    def build(cmd: object, stdin: bool, tty: bool, session: int) -> list[str]:
        if client == "kubectl":
            return ["kubectl", "--kubeconfig", cluster.kubeconfig(0), "exec", "-it",
                    cluster.pod, "--", "cat"]  # fmt: skip
        return [benv.HATCHWAY, "exec", "-it", cluster.pod, "--", "cat"]

    start: dict[str, float] = {}
    cpu: dict[str, float] = {}
    tracers: list[subprocess.Popen[bytes]] = []

    def window(edge: str, client: int) -> None:
        pids = _echo_pids(cluster, client)
        if edge == "start" and profile is not None:
            out, tag, kind = profile
            tracers.extend(_profilers(cluster, kind, out, tag))
            tracers.append(_profiler(kind, client, out / f"{tag}-client"))
            time.sleep(1.0)  # attached
        if edge == "start" and syscalls is not None:
            for name in ("apiserver", "node"):
                out = syscalls / f"{name}.strace"
                argv = ["strace", "-c", "-f", "-o", str(out), "-p", str(pids[name][0])]
                tracers.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # attached
        ns = {name: sum(_run_ns(pid) for pid in group) for name, group in pids.items()}
        if edge == "start":
            start.update(ns, t=time.monotonic())
            return
        # What the servers spend anyway (heartbeats, leases, controllers) over as long a
        # time with no keystroke, right after: subtracted, and reported as *_idle_us.
        wall = time.monotonic() - start["t"]
        time.sleep(wall)
        idle = {name: sum(_run_ns(pid) for pid in group) for name, group in pids.items()}
        for name, value in ns.items():
            spent = (idle[name] - value) / keys / 1000
            cpu[f"{name}_us"] = (value - start[name]) / keys / 1000 - spent
            cpu[f"{name}_idle_us"] = spent
        _stop_profilers(tracers)

    times = echo(Peer("hatchway", build, env), keys, 120.0 + keys, window)
    if syscalls is None:
        times.update(cpu)
    return times


ECHO_COLUMNS = ("client", "apiserver", "node", "helper")


if __name__ == "__main__":
    main()
