"""A paired A/B of ``hatchway exec POD -- CMD`` wall time between source trees.

    .venv/bin/python bench/ab.py --tree A=/tmp/a/src --tree B=/tmp/b/src [--runs 30]

Each tree is a ``src`` directory (for example ``git archive REV src | tar -x -C DIR``);
the CLI runs with ``PYTHONPATH`` set to it, so only the code differs, never the
interpreter or the cluster. One cluster (``bench/env.py``: ``hatchway up``, one busybox
pod) serves every run; the trees take turns run by run, the order reversed every other
round, so a noisy neighbour hits both alike. Reported: each tree's median and mean, and
the median of the paired differences against the first tree with its interquartile
range -- a difference is real only when it is clear of that range; the same for the
client's CPU time (user + system, from ``wait4``), which a busy machine moves less than
wall time. Each tree is compiled to bytecode first (``compileall``), as an installed
package is: with ``PYTHONDONTWRITEBYTECODE`` set a fresh tree would otherwise be
compiled from source on every run. Not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import env as benv


def _tree_env(base: dict[str, str], src: str) -> dict[str, str]:
    return {**base, "PYTHONPATH": src}


def _check_tree(env: dict[str, str], src: str) -> None:
    """The tree's own hatchway is the one imported (not the installed one)."""
    code = "import hatchway, sys; sys.stdout.write(hatchway.__file__)"
    found = subprocess.run([benv.PYTHON, "-c", code], env=env, capture_output=True, text=True)
    if not found.stdout.startswith(os.path.realpath(src)):
        raise SystemExit(f"{src}: imports hatchway from {found.stdout or found.stderr}")


def _compile(src: str) -> None:
    argv = [benv.PYTHON, "-m", "compileall", "-q", src]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _stop_reuse_daemons(runtime: pathlib.Path) -> None:
    """Each daemon's pid is in its lock file (cli/reuse_daemon.py)."""
    for lock in (runtime / "hatchway").glob("*.sock.lock"):
        pid = lock.read_text().strip()
        if pid.isdigit() and benv.alive(int(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _one(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run: the runs are one at a time,
    so the growth of the reaped children's total is this run's."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=timeout,
    )  # fmt: skip
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if result.returncode != 0:
        raise SystemExit(f"rc={result.returncode}: {result.stderr[-300:]!r}")
    return elapsed, cpu


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _report(label: str, names: list[str], values: dict[str, list[float]]) -> None:
    first = names[0]
    for name in names:
        median, mean = statistics.median(values[name]), statistics.mean(values[name])
        print(f"  {label} {name}: median {median * 1e3:.1f} ms, mean {mean * 1e3:.1f} ms")
    for name in names[1:]:
        diffs = [(b - a) * 1e3 for a, b in zip(values[first], values[name], strict=True)]
        q1, q2, q3 = _quartiles(diffs)
        ratio = statistics.median(values[name]) / statistics.median(values[first])
        print(
            f"  {label} {name} - {first}: median of paired differences {q2:+.1f} ms "
            f"(IQR {q1:+.1f} .. {q3:+.1f}), ratio of medians {ratio:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument(
        "--tree-env", action="append", default=[], help="NAME=VAR=VALUE: set for that tree"
    )
    parser.add_argument(
        "--kubectl", action="store_true", help="a kubectl exec column (WebSocket) in the same turns"
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs="*", default=["true"])
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    if len(trees) < 2:
        parser.error("give at least two --tree NAME=SRC_DIR")
    extra: dict[str, dict[str, str]] = {name: {} for name in trees}
    for item in args.tree_env:
        name, _, assignment = item.partition("=")
        var, _, value = assignment.partition("=")
        if name not in extra or not var:
            parser.error(f"--tree-env {item!r}: NAME=VAR=VALUE with NAME one of the trees")
        extra[name][var] = value
    names = list(trees)
    wall: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-ab-")))
        cluster = benv.start_cluster(stack, base, users=1)
        argv = [benv.HATCHWAY, "exec", "--kubeconfig", cluster.kubeconfig(), cluster.pod]
        argv += ["--", *args.command]
        envs = {name: {**_tree_env(cluster.env, src), **extra[name]} for name, src in trees.items()}
        for name, src in trees.items():
            _compile(src)
            _check_tree(envs[name], src)
        # exec --reuse daemons (cli/reuse.py) live in this run's directory and are
        # stopped at the end: SIGTERM makes one remove its socket and exit.
        runtime = base / "xdg"
        runtime.mkdir(mode=0o700)
        for name in envs:
            envs[name]["XDG_RUNTIME_DIR"] = str(runtime)
        stack.callback(_stop_reuse_daemons, runtime)
        argvs = {name: argv for name in trees}
        if args.kubectl:
            names.append("kubectl")
            envs["kubectl"] = dict(cluster.env)
            argvs["kubectl"] = ["kubectl", "--kubeconfig", cluster.kubeconfig(), "exec"]
            argvs["kubectl"] += [cluster.pod, "--", *args.command]
            wall["kubectl"], cpu["kubectl"] = [], []
        for i in range(args.warmup + args.runs):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                elapsed, used = _one(argvs[name], envs[name], args.timeout)
                if i >= args.warmup:
                    wall[name].append(elapsed)
                    cpu[name].append(used)
    print(f"hatchway exec POD -- {' '.join(args.command)}: {args.runs} paired runs")
    _report("wall", names, wall)
    _report("cpu ", names, cpu)


if __name__ == "__main__":
    main()
