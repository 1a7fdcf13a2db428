"""Hatchway side by side with runc, podman, OpenSSH and kubectl, in one run.

    .venv/bin/python bench/run.py [--quick] [--only FIGURE ...] [--peers PEER ...]

Starts its own Hatchway cluster in a temporary data directory (one busybox pod), a
podman container from the same rootfs and an sshd on a free loopback port, measures,
removes all of it, prints a Markdown table and writes bench/results/latest.{json,md} (a
quick or partial run: partial.{json,md}).
Figures: stdout, stdin, latency, concurrent, echo. Peers: see bench/peers.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import env as benv
from bench import measure, report
from bench.echo import echo, merged
from bench.peers import ORDER, Peer, make_peers

# Idle before streaming: a server that has streamed keeps its grown heap. Each peer's
# idle figure is also measured on fresh server processes (Peer.fresh), so the peer
# measured first does not pay the heap growth the others then reuse.
FIGURES = ("stdout", "stdin", "latency", "idle", "concurrent", "echo")
#: The echo figure's rounds: --echo-runs keystrokes per peer in all, peers taking turns.
ECHO_ROUNDS = 5
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs (~2 min)")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
    p.add_argument("--peers", nargs="+", choices=ORDER, default=list(ORDER))
    p.add_argument("--size-mib", type=int, help="bytes per single stream (1024; quick 256)")
    p.add_argument("--runs", type=int, help="exec true runs (100; quick 15)")
    p.add_argument("--sessions", type=int, help="concurrent sessions (200; quick 50)")
    p.add_argument("--per-session-kib", type=int, help="bytes each streams (8192; quick 2048)")
    p.add_argument("--rounds", type=int, help="throughput rounds, best kept (2; quick 1)")
    p.add_argument("--echo-runs", type=int, help="keystrokes (100; quick 20)")
    p.add_argument("--timeout-scale", type=float, default=1.0)
    p.add_argument("--no-install", action="store_true", help="do not apt-get missing tools")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    quick = args.quick
    args.size_mib = args.size_mib or (256 if quick else 1024)
    args.runs = args.runs or (15 if quick else 100)
    args.sessions = args.sessions or (50 if quick else 200)
    args.per_session_kib = args.per_session_kib or (2048 if quick else 8192)
    args.echo_runs = args.echo_runs or (20 if quick else 100)
    args.rounds = args.rounds or (1 if quick else 2)
    return args


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    def version(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(argv, capture_output=True, timeout=20).stdout.decode()
            return out.strip().splitlines()[0] if out.strip() else ""
        return ""

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "mode": "quick" if args.quick else "full",
        "size_mib": args.size_mib,
        "runs": args.runs,
        "sessions": args.sessions,
        "per_session_kib": args.per_session_kib,
        "echo_runs": args.echo_runs,
        "rounds": args.rounds,
        "loadavg_before": _loadavg(),
        "versions": {
            "runc": version("runc", "--version"),
            "podman": version("podman", "--version"),
            "ssh": subprocess.run(["ssh", "-V"], capture_output=True).stderr.decode().strip()
            if benv._which("ssh")
            else "",
            "kubectl": version("kubectl", "version", "--client"),
            "python": platform.python_version(),
        },
        "cipher": "aes128-gcm@openssh.com, no compression",
        "ssh_far_end": "runc exec into the Hatchway pod's container",
    }


def _loadavg() -> str:
    return pathlib.Path("/proc/loadavg").read_text().strip()


def _figure_jobs(args: argparse.Namespace) -> dict[str, Callable[[Peer], dict[str, Any]]]:
    s = args.timeout_scale
    size = args.size_mib * 2**20
    per = args.per_session_kib * 1024
    return {
        "stdout": lambda p: measure.stdout_throughput(p, size, 120 * s),
        "stdin": lambda p: measure.stdin_throughput(p, size, 120 * s),
        "idle": lambda p: measure.idle(p, args.sessions, 240 * s),
        "concurrent": lambda p: measure.concurrent(p, args.sessions, per, 240 * s),
        # --echo-runs keystrokes per peer in all, over ECHO_ROUNDS rounds (_figure).
        "echo": lambda p: echo(p, max(1, args.echo_runs // ECHO_ROUNDS), 60 * s),
    }


def _measure_one(job: Callable[[Peer], dict[str, Any]], peer: Peer) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        cell = job(peer)
    except (measure.MeasureError, OSError, subprocess.SubprocessError) as exc:
        cell = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    except Exception as exc:  # keep the other columns; say what broke
        traceback.print_exc()
        cell = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    benv.log(f"  {peer.name}: {json.dumps(cell)[:240]} ({time.monotonic() - t0:.1f}s)")
    return cell


def _best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest round (throughput on a shared machine: the least disturbed one)."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    best = dict(max(good, key=lambda r: r["gib_s"]))
    best["rounds_gib_s"] = [round(r["gib_s"], 4) for r in good]
    return best


def _figure(
    figure: str, columns: dict[str, Peer], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    benv.log(f"{figure}")
    columns = {n: p for n, p in columns.items() if p.figures is None or figure in p.figures}
    if figure == "latency":
        cells = measure.latency(columns, args.runs, 30 * args.timeout_scale)
        for name, cell in cells.items():
            benv.log(f"  {name}: {json.dumps(cell)[:240]}")
        return cells
    job = _figure_jobs(args)[figure]
    if figure == "idle":  # server memory: only where a server serves the sessions
        columns = {name: peer for name, peer in columns.items() if peer.servers()}
    rounds = args.rounds if figure in ("stdout", "stdin") else 1
    if figure == "echo":
        # The keystrokes in rounds, peers taking turns (the order reversed every other
        # round): a burst of the machine's own work (it follows the 200-session figures)
        # falls on every peer alike, not on whichever came first.
        rounds = ECHO_ROUNDS
    tries: dict[str, list[dict[str, Any]]] = {name: [] for name in columns}
    for r in range(rounds):  # peers take turns, round by round
        order = list(columns.items())
        if figure == "echo" and r % 2:
            order.reverse()
        for name, peer in order:
            if figure == "idle" and peer.fresh is not None:
                benv.log(f"  fresh servers for {name}")
                peer.fresh()
            tries[name].append(_measure_one(job, peer))
    if figure == "echo":
        return {name: merged(t) for name, t in tries.items()}
    if rounds == 1:
        return {name: t[0] for name, t in tries.items()}
    return {name: _best_of(t) for name, t in tries.items()}


def _start(stack: contextlib.ExitStack, args: argparse.Namespace) -> benv.Peers:
    base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-bench-")))
    peers = benv.Peers()
    users = -(-args.sessions // benv.SESSIONS_PER_USER)
    benv.log("starting a Hatchway cluster")
    peers.cluster = benv.start_cluster(stack, base, users)
    if "podman" in args.peers:
        try:
            benv.log("starting a podman container from the same rootfs")
            peers.podman_container = benv.start_podman(stack, peers.cluster)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            peers.unavailable["podman"] = str(exc)
    if "hatchway-reuse" in args.peers:
        peers.reuse_dir = benv.start_reuse_dir(stack, base)
    if "ssh" in args.peers:
        try:
            benv.log("starting sshd on loopback")
            peers.ssh = benv.start_sshd(stack, base)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            peers.unavailable["ssh"] = str(exc)
    return peers


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": _meta(args), "figures": {}}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        peers = _start(stack, args)
        columns = {n: p for n, p in make_peers(peers, dict(os.environ)).items() if n in args.peers}
        results["peers"] = list(columns)
        results["unavailable"] = peers.unavailable
        for figure in (f for f in FIGURES if f in args.only):
            results["figures"][figure] = _figure(figure, columns, args)
    results["meta"]["loadavg_after"] = _loadavg()
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["peers"] = {n: n not in results["unavailable"] for n in ORDER if n in args.peers}
    results["targets"] = report.targets(results)
    return results


def main() -> int:
    args = parse(sys.argv[1:])
    if os.geteuid() != 0:
        print("bench/run.py needs root (runc, podman, the node agent)", file=sys.stderr)
        return 2
    benv.ensure_tools(install=not args.no_install)
    # Measure the code as installed, not a recompile per run: with PYTHONDONTWRITEBYTECODE
    # set, an edited module would otherwise be compiled again by every CLI start.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(pathlib.Path(__file__).parents[1] / "src")],
        check=False,
        stdout=subprocess.DEVNULL,
    )
    results = run(args)
    text = report.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    # Only a full run (every figure, every peer, the full sizes) replaces latest.*: the
    # README quotes it; a quick or partial one goes to partial.* beside it.
    stem = "latest" if is_full(args) else "partial"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(f"[bench] written: {args.out / stem}.json, .md", file=sys.stderr)
    return 0


def is_full(args: argparse.Namespace) -> bool:
    """Every figure of every peer at the full run's sizes (what latest.* holds)."""
    defaults = parse([])
    sizes = ("size_mib", "runs", "sessions", "per_session_kib", "echo_runs", "rounds")
    return (
        not args.quick
        and set(args.only) == set(FIGURES)
        and set(args.peers) == set(ORDER)
        and all(getattr(args, k) == getattr(defaults, k) for k in sizes)
    )


if __name__ == "__main__":
    sys.exit(main())
