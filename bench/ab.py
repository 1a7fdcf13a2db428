"""A paired A/B of ``hatchway exec POD -- CMD`` wall time between source trees.

    .venv/bin/python bench/ab.py --tree A=/tmp/a/src --tree B=/tmp/b/src [--runs 30]

Each tree is a ``src`` directory (for example ``git archive REV src | tar -x -C DIR``);
the CLI runs with ``PYTHONPATH`` set to it, so only the code differs, never the
interpreter or the cluster. One cluster (``bench/env.py``: ``hatchway up``, one busybox
pod) serves every run; the trees take turns run by run, the order reversed every other
round, so a noisy neighbour hits both alike. Reported: each tree's median and mean, and
the median of the paired differences against the first tree with its interquartile
range -- a difference is real only when it is clear of that range. Not a timed test.
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


def _tree_env(base: dict[str, str], src: str) -> dict[str, str]:
    return {**base, "PYTHONPATH": src}


def _check_tree(env: dict[str, str], src: str) -> None:
    """The tree's own hatchway is the one imported (not the installed one)."""
    code = "import hatchway, sys; sys.stdout.write(hatchway.__file__)"
    found = subprocess.run([benv.PYTHON, "-c", code], env=env, capture_output=True, text=True)
    if not found.stdout.startswith(os.path.realpath(src)):
        raise SystemExit(f"{src}: imports hatchway from {found.stdout or found.stderr}")


def _one(argv: list[str], env: dict[str, str], timeout: float) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=timeout,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"rc={result.returncode}: {result.stderr[-300:]!r}")
    return elapsed


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs="*", default=["true"])
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    if len(trees) < 2:
        parser.error("give at least two --tree NAME=SRC_DIR")
    times: dict[str, list[float]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hw-ab-")))
        cluster = benv.start_cluster(stack, base, users=1)
        argv = [benv.HATCHWAY, "exec", "--kubeconfig", cluster.kubeconfig(), cluster.pod]
        argv += ["--", *args.command]
        envs = {name: _tree_env(cluster.env, src) for name, src in trees.items()}
        for name, src in trees.items():
            _check_tree(envs[name], src)
        names = list(trees)
        for i in range(args.warmup + args.runs):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                elapsed = _one(argv, envs[name], args.timeout)
                if i >= args.warmup:
                    times[name].append(elapsed)
    first = names[0]
    print(f"hatchway exec POD -- {' '.join(args.command)}: {args.runs} paired runs")
    for name in names:
        median, mean = statistics.median(times[name]), statistics.mean(times[name])
        print(f"  {name}: median {median * 1e3:.1f} ms, mean {mean * 1e3:.1f} ms")
    for name in names[1:]:
        diffs = [(b - a) * 1e3 for a, b in zip(times[first], times[name], strict=True)]
        q1, q2, q3 = _quartiles(diffs)
        ratio = statistics.median(times[name]) / statistics.median(times[first])
        print(
            f"  {name} - {first}: median of paired differences {q2:+.1f} ms "
            f"(IQR {q1:+.1f} .. {q3:+.1f}), ratio of medians {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
