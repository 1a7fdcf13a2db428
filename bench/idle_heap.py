"""Where an idle session's memory goes inside the API server and the node agent, by
allocating traceback (tracemalloc), for each client: Hatchway's CLI, kubectl over
WebSocket and over SPDY.

    .venv/bin/python bench/idle_heap.py [--sessions 100] [--peers hatchway kubectl-ws kubectl-spdy]
                                        [--top 12] [--frames 16]

Starts a bench cluster (as ``bench/run.py`` does) whose servers run with
``HATCHWAY_TRACEMALLOC`` set (:mod:`hatchway.cli.heapdump`). For each client: fresh
servers, one warm-up session (what is made once is then in the baseline), a snapshot of
both servers (SIGUSR2), ``--sessions`` idle sessions opened as in the idle figure (``sh -c
'echo ready >&2; read go'`` with stdin open), a second snapshot after a second's
settling, and the traced growth per session: in total, by the hatchway or stdlib module
that allocated it (the innermost frame in ``hatchway/`` or, failing that, the innermost
one), and the top tracebacks. Also each server's RSS and PSS per session (traced: higher
than untraced -- the bench's own figures are ``bench/run.py --only idle``). Results in
``bench/results/idle_heap.json``. Needs root, like ``bench/run.py``. Not a timed test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
import tracemalloc
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import env as benv
from bench import measure
from bench.memory import read as read_memory
from bench.peers import Peer, make_peers

OUT = pathlib.Path(__file__).parent / "results" / "idle_heap.json"
ROLES = ("apiserver", "node")


def snapshot(
    cluster: benv.Cluster, directory: pathlib.Path, timeout: float = 120
) -> dict[str, Any]:
    """SIGUSR2 both servers and load the snapshots they write."""
    pids = {"apiserver": cluster.apiserver_pid, "node": cluster.node_pid}
    before = {p.name for p in directory.glob("*.tmsnap")}
    for pid in pids.values():
        os.kill(pid, signal.SIGUSR2)
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no heap snapshot from {sorted(set(pids) - set(out))}")
        for path in directory.glob("*.tmsnap"):
            role, pid = path.name.split("-")[:2]
            if path.name not in before and int(pid) == pids.get(role) and role not in out:
                out[role] = tracemalloc.Snapshot.load(str(path))
        time.sleep(0.2)
    return out


def _where(frames: tracemalloc.Traceback) -> str:
    """The innermost hatchway frame of an allocation, else its innermost frame."""
    for frame in reversed(frames):  # tracemalloc lists the oldest frame first
        if "/hatchway/" in frame.filename:
            return f"{frame.filename.split('/hatchway/', 1)[1]}:{frame.lineno}"
    frame = frames[-1]
    return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"


def diff(base: Any, snap: Any, sessions: int, top: int) -> dict[str, Any]:
    stats = snap.compare_to(base, "traceback")
    total = sum(s.size_diff for s in stats)
    by_site: collections.Counter[str] = collections.Counter()
    for s in stats:
        by_site[_where(s.traceback)] += s.size_diff
    tracebacks = []
    for s in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(s.traceback)]
        tracebacks.append(
            {"bytes_per_session": round(s.size_diff / sessions), "count_per_session":
             round(s.count_diff / sessions, 2), "frames": frames[:8]}
        )  # fmt: skip
    return {
        "bytes_per_session": round(total / sessions),
        "by_site": {k: round(v / sessions) for k, v in by_site.most_common(top)},
        "top_tracebacks": tracebacks,
    }


def measure_peer(
    peer: Peer, cluster: benv.Cluster, directory: pathlib.Path, sessions: int, top: int
) -> dict[str, Any]:
    assert peer.fresh is not None
    peer.fresh()
    script = "echo bench-ready >&2; read go"
    warm: list[Any] = []
    procs: list[Any] = []
    deadline = time.monotonic() + 600
    try:
        measure.open_sessions(peer, script, 1, warm, b"bench-ready", deadline)
        time.sleep(1.0)
        base, mem0 = snapshot(cluster, directory), read_memory(peer.servers())
        measure.open_sessions(peer, script, sessions, procs, b"bench-ready", deadline)
        time.sleep(1.0)
        mem1 = read_memory(peer.servers())
        snap = snapshot(cluster, directory)
    finally:
        for proc in warm + procs:
            measure._kill(proc)
    # Every session over (the node's children gone) before the servers are replaced: a
    # traced server takes a while to close its sessions.
    while read_memory(peer.servers())["node"]["tree_procs"] > mem0["node"]["tree_procs"]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out: dict[str, Any] = {}
    for role in ROLES:
        out[role] = {
            key: round((mem1[role][key] - mem0[role][key]) / sessions, 1)
            for key in ("rss_kib", "pss_kib", "tree_pss_kib")
        }
        out[role]["heap"] = diff(base[role], snap[role], sessions, top)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--peers", nargs="+", default=["hatchway", "kubectl-ws", "kubectl-spdy"])
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--out", type=pathlib.Path, default=OUT)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/idle_heap.py needs root (runc, the node agent)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"sessions": args.sessions}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-heap-")))
        snaps = base / "snapshots"
        os.environ["HATCHWAY_TRACEMALLOC"] = str(snaps)
        os.environ["HATCHWAY_TRACEMALLOC_FRAMES"] = str(args.frames)
        peers = benv.Peers()
        peers.cluster = benv.start_cluster(stack, base, -(-args.sessions // benv.SESSIONS_PER_USER))
        columns = make_peers(peers, dict(os.environ))
        for name in args.peers:
            benv.log(f"{name}: {args.sessions} idle sessions")
            results[name] = measure_peer(
                columns[name], peers.cluster, snaps, args.sessions, args.top
            )
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            for role in ROLES:
                r = results[name][role]
                benv.log(f"  {role}: heap {r['heap']['bytes_per_session']} B/session, "
                         f"RSS {r['rss_kib']} KiB, PSS {r['pss_kib']} KiB")  # fmt: skip
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
