"""Heap snapshots for the benchmarks (cli/heapdump.py): off without the environment
variable; with it, a snapshot per SIGUSR2 that tracemalloc loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from hatchway.cli import heapdump
    on = heapdump.install("role")
    print(on, flush=True)
    if on:
        keep = [bytearray(1000) for _ in range(100)]
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 30
        where = os.environ["HATCHWAY_TRACEMALLOC"]
        while not any(n.endswith(".tmsnap") for n in os.listdir(where)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    """
)


def _run(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_off_unless_asked() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HATCHWAY_TRACEMALLOC"}
    assert _run(env) == "False"


def test_a_snapshot_per_signal(tmp_path) -> None:
    directory = tmp_path / "snaps"
    assert _run({**os.environ, "HATCHWAY_TRACEMALLOC": str(directory)}) == "True"
    (path,) = directory.iterdir()
    role, pid, count = path.name.removesuffix(".tmsnap").split("-")
    assert role == "role" and pid.isdigit() and count == "1"
    snapshot = tracemalloc.Snapshot.load(str(path))
    assert sum(s.size for s in snapshot.statistics("filename")) >= 100_000
