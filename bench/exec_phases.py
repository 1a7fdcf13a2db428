"""Per-phase cost of one ``exec true`` on the API server and the node agent, per client.

    .venv/bin/python bench/exec_phases.py [--runs 20] [--clients hatchway kubectl]
    .venv/bin/python bench/exec_phases.py --tree base=/tmp/base/src --tree new=/tmp/new/src

One bench cluster (``bench/env.py``) started with ``HATCHWAY_SERVER_TIMING`` naming a
file (:mod:`hatchway.transport.phases`): both servers append one JSON line per request,
its phases' wall and thread-CPU microseconds. Each exec runs alone; the clients (and
trees, with ``--tree``: the servers restarted with that ``PYTHONPATH``, the CLI run
with it too) take turns, the order reversed every other round. Per exec the script
waits for the API server's exec line (written after the session's audit end) and the
node's, then reads each server's CPU from ``/proc/PID/stat`` (utime + stime, 10 ms
ticks: summed over the runs, divided by them) and the exec helper's (with its reaped
``runc exec`` children).

Printed: per client (and tree), the requests each server served per exec and how many
opened a connection (each a TLS handshake), then per request kind the median of each
phase, wall and CPU; ``(heap trim)`` is the collection and ``malloc_trim`` each server
runs a second after sessions end (:mod:`hatchway.session.heap`), counted per exec too.
The servers' TLS handshake CPU is not inside any phase (a phase starts when the
connection is made, after the handshake): it is measured apart, in
this process, over memory BIOs with the cluster's own certificates, server side only.
Results also go to ``bench/results/exec_phases.json``. Not a timed test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import cpu as bcpu
from bench import env as benv

TIMING_ENV = "HATCHWAY_SERVER_TIMING"
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "exec_phases.json"


def _kind(line: dict[str, Any]) -> str:
    """What a request was, by its path: exec, pod get, outcome, other."""
    path = str(line.get("path", ""))
    if "/exec" in path:
        return "exec"
    if path.startswith("("):
        return path
    if path.startswith("/sessions/"):
        return "outcome"
    if "/pods/" in path:
        return "pod get"
    return path


def _lines(path: pathlib.Path, offset: int = 0) -> list[dict[str, Any]]:
    """The complete lines from byte ``offset`` on."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _wait_lines(path: pathlib.Path, offset: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The lines once both servers' exec lines and the node's outcome line are in."""
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(path, offset)
        kinds = {(line["server"], _kind(line)) for line in lines}
        if {("apiserver", "exec"), ("node", "exec"), ("node", "outcome")} <= kinds:
            time.sleep(0.05)  # anything written right after
            return _lines(path, offset)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timing lines missing after {timeout:.0f} s: {sorted(kinds)}")
        time.sleep(0.02)


def _argv(cluster: benv.Cluster, client: str) -> list[str]:
    if client == "kubectl":
        return ["kubectl", "--kubeconfig", cluster.kubeconfig(), "exec", cluster.pod, "--", "true"]
    return [benv.HATCHWAY, "exec", "--kubeconfig", cluster.kubeconfig(), cluster.pod, "--", "true"]


def one(
    cluster: benv.Cluster, env: dict[str, str], client: str, timing: pathlib.Path, gap: float
) -> dict:
    """One exec and ``gap`` seconds after it: the servers' timing lines and CPU
    (seconds) of each server process, and the wall time of it all."""
    offset = _size(timing)
    started = time.monotonic()
    before = bcpu._snapshot(cluster)
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(_argv(cluster, client), env=env, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        client_wall = time.monotonic() - t0
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{client} exec failed: {err.read()[-300:]!r}")
    lines = _wait_lines(timing, offset)
    if gap:
        time.sleep(gap)
        lines = _lines(timing, offset)
    after = bcpu._snapshot(cluster)
    wall = time.monotonic() - started
    for line in lines:  # work between requests names no server: by its pid
        if not line["server"]:
            line["server"] = "apiserver" if line["pid"] == cluster.apiserver_pid else "node"
    cpu = {name: after[name] - before[name] for name in ("apiserver", "node", "helper")}
    client_cpu = usage.ru_utime + usage.ru_stime
    return {"lines": lines, "cpu": cpu, "wall": wall, "client": (client_wall, client_cpu)}


def _summary(runs: list[dict], idle: dict[str, float]) -> dict[str, Any]:
    """Requests and connections per exec, medians per phase, CPU per exec."""
    counts: collections.Counter[str] = collections.Counter()
    fresh: collections.Counter[str] = collections.Counter()
    phases: dict[str, dict[str, dict[str, list[int]]]] = {}
    for run in runs:
        for line in run["lines"]:
            key = f"{line['server']} {_kind(line)}"
            counts[key] += 1
            fresh[key] += bool(line.get("first"))
            for measure in ("wall_us", "cpu_us"):
                by_phase = phases.setdefault(key, {}).setdefault(measure, {})
                for name, value in line[measure].items():
                    by_phase.setdefault(name, []).append(value)
    n = len(runs)
    medians = {
        key: {
            measure: {name: statistics.median(v) for name, v in by_phase.items()}
            for measure, by_phase in values.items()
        }
        for key, values in phases.items()
    }
    cpu = {name: 1000 * sum(r["cpu"][name] for r in runs) / n for name in runs[0]["cpu"]}
    wall = sum(r["wall"] for r in runs) / n
    # Net of what the servers spend anyway (idle_cpu) over the time each run took.
    net = {name: cpu[name] - idle.get(name, 0.0) * wall for name in cpu}
    return {
        "runs": n,
        "requests_per_exec": {k: v / n for k, v in sorted(counts.items())},
        "new_connections_per_exec": {k: v / n for k, v in sorted(fresh.items())},
        "median_us": medians,
        "cpu_ms_per_exec": cpu,
        "cpu_ms_per_exec_net_of_idle": net,
        "wall_s_per_run": wall,
        "client_wall_ms_p50": 1000 * statistics.median(r["client"][0] for r in runs),
        "client_cpu_ms_p50": 1000 * statistics.median(r["client"][1] for r in runs),
    }


def handshake_cpu(data_dir: pathlib.Path, count: int = 50) -> dict[str, float]:
    """Server-side CPU (ms) of one mutual TLS 1.3 handshake with the cluster's own
    certificates: the API server's (a client certificate of the cluster CA) and the
    node's (the API server's kubelet-client certificate; no session tickets)."""
    pki = data_dir / "pki"
    found = {p.name: p for p in pki.rglob("*") if p.is_file()}
    out: dict[str, float] = {}
    pairs = {
        "apiserver": ("apiserver.crt", "apiserver.key", "ca.crt", "admin.crt", "admin.key", None),
        "node": (
            "node.crt",
            "node.key",
            "node-client-ca.crt",
            "apiserver-kubelet-client.crt",
            "apiserver-kubelet-client.key",
            0,
        ),
    }
    for name, (cert, key, ca, ccert, ckey, tickets) in pairs.items():
        if not all(f in found for f in (cert, key, ca, ccert, ckey)):
            continue
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(found[cert], found[key])
        server.load_verify_locations(found[ca])
        server.verify_mode = ssl.CERT_REQUIRED
        if tickets is not None:
            server.num_tickets = tickets
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.load_verify_locations(found["ca.crt"])
        client.load_cert_chain(found[ccert], found[ckey])
        used = 0
        for _ in range(count):
            used += _server_handshake(server, client)
        out[name] = used / count / 1e6
    return out


def idle_cpu(cluster: benv.Cluster, seconds: float = 10.0) -> dict[str, float]:
    """The servers' CPU (ms per second) with nothing asked of them: their background
    work (leases, status, watches), which any per-exec figure from /proc includes."""
    before = bcpu._snapshot(cluster)
    time.sleep(seconds)
    after = bcpu._snapshot(cluster)
    return {n: round(1000 * (after[n] - before[n]) / seconds, 2) for n in ("apiserver", "node")}


def _server_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> int:
    """Thread-CPU nanoseconds the server side of one handshake took."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    used = 0
    for _ in range(8):
        with contextlib.suppress(ssl.SSLWantReadError):
            cli.do_handshake()
        s_in.write(c_out.read())
        t0 = time.thread_time_ns()
        try:
            srv.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        used += time.thread_time_ns() - t0
        c_in.write(s_out.read())
        if done:
            with contextlib.suppress(ssl.SSLWantReadError):
                cli.do_handshake()
            return used
    raise RuntimeError("the handshake did not complete")


def _print(label: str, summary: dict[str, Any]) -> None:
    print(f"\n== {label}: {summary['runs']} execs")
    print(
        f"client: wall p50 {summary['client_wall_ms_p50']:.0f} ms,"
        f" CPU p50 {summary['client_cpu_ms_p50']:.0f} ms"
    )
    for title, key in (("", "cpu_ms_per_exec"), (" net of idle", "cpu_ms_per_exec_net_of_idle")):
        cpu = summary[key]
        print(
            f"CPU per exec{title} (/proc, ms): "
            + ", ".join(f"{name} {value:.1f}" for name, value in cpu.items())
        )
    for key, per in summary["requests_per_exec"].items():
        new = summary["new_connections_per_exec"].get(key, 0)
        print(f"  {key}: {per:.2f} requests per exec, {new:.2f} on a new connection")
    for key, values in summary["median_us"].items():
        wall, used = values["wall_us"], values["cpu_us"]
        parts = [f"{name} {wall[name] / 1000:.2f}/{used[name] / 1000:.2f}" for name in wall]
        total = sum(wall.values()) / 1000, sum(used.values()) / 1000
        print(f"  {key} (median ms wall/cpu): " + " | ".join(parts))
        print(f"    sum of medians: wall {total[0]:.1f} ms, cpu {total[1]:.1f} ms")


def _ratios(runs: dict[str, list[dict]], trees: list[str], clients: list[str]) -> None:
    """Each later tree against the first, run by run (the runs of a round paired):
    the median ratio of the client's wall time and the servers' CPU summed over runs."""
    if len(trees) < 2:
        return
    first = trees[0]
    print(f"\n== against {first} (paired by round)")
    for tree in trees[1:]:
        for client in clients:
            a, b = runs[f"{first} {client}"], runs[f"{tree} {client}"]
            walls = [y["client"][0] / x["client"][0] for x, y in zip(a, b, strict=True)]
            parts = [f"exec wall ratio p50 {statistics.median(walls):.2f}"]
            for name in ("apiserver", "node"):
                base = sum(r["cpu"][name] for r in a)
                new = sum(r["cpu"][name] for r in b)
                if base:
                    parts.append(f"{name} CPU ratio {new / base:.2f}")
            print(f"  {tree} {client}: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--clients", nargs="+", default=["hatchway", "kubectl"])
    parser.add_argument("--tree", action="append", default=[], help="NAME=SRC, repeatable")
    parser.add_argument("--timing-file", help="keep the servers' timing lines here")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds after each exec, in its figures (1.5: an interactive user's pace,"
        " each exec then followed by its own heap trim)",
    )
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", "")]
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="phases-")))
        timing = pathlib.Path(args.timing_file) if args.timing_file else base / "timing.jsonl"
        os.environ[TIMING_ENV] = str(timing)
        cluster = benv.start_cluster(stack, base, users=1)
        tls = handshake_cpu(cluster.data_dir)
        idle = idle_cpu(cluster)
        runs: dict[str, list[dict]] = collections.defaultdict(list)
        for round_ in range(args.runs):
            order = [(tree, client) for tree in trees for client in args.clients]
            if round_ % 2:
                order.reverse()
            for (name, src), client in order:
                if len(trees) > 1 or src:
                    if cluster.env.get("PYTHONPATH", "") != (os.path.realpath(src) if src else ""):
                        bcpu._use_tree(cluster, src or None)
                env = dict(cluster.env)
                runs[f"{name} {client}"].append(one(cluster, env, client, timing, args.gap))
            benv.log(f"round {round_ + 1}/{args.runs}")
        report = {label: _summary(r, idle) for label, r in runs.items()}
        print("server-side TLS handshake CPU (ms, memory BIOs): " + json.dumps(tls))
        print("servers' CPU while idle (ms per s): " + json.dumps(idle))
        for label, summary in report.items():
            _print(label, summary)
        _ratios(runs, [name for name, _ in trees], args.clients)
        RESULTS.parent.mkdir(exist_ok=True)
        out = {"tls_handshake_ms": tls, "idle_ms_per_s": idle, "runs": report}
        RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
