"""The soak harness, short: ~200 sessions over every client and both transports, with
kills, a node agent and an API server restart, slow readers and idle sessions, on a
cluster of its own (bench/soak.py). Nothing may come back corrupted or truncated, end
with a wrong exit code, fail outside a restart, hang, or leave a process or an fd."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from cluster import SCALE, can_run_containers

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.runc, pytest.mark.slow, pytest.mark.timeout(900 * SCALE)]


def test_short_soak_loses_nothing_and_leaks_nothing(tmp_path: pathlib.Path) -> None:
    reason = can_run_containers()
    if reason:
        pytest.skip(f"the soak {reason}")
    out = tmp_path / "soak.json"
    argv = [sys.executable, str(ROOT / "bench" / "soak.py"), "--sessions", "200"]
    argv += ["--concurrency", "50", "--seed", "10", "--idle-seconds", "5"]
    argv += ["--time-limit", str(300 * SCALE), "--timeout-scale", str(SCALE), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(argv, capture_output=True, timeout=800 * SCALE, env=env)
    report = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")[-3000:]
    assert out.exists(), report
    result = json.loads(out.read_text())
    total = result["total"]
    assert result["not_started"] == 0, report
    assert [r["component"] for r in result["restarts"]] == ["node", "apiserver"], report
    assert total["killed"] > 0 and total["bytes_verified"] > 0, report
    for key in ("corrupted", "truncated", "wrong_exit", "error", "hung", "left"):
        assert total[key] == 0, f"{key}: {total[key]}\n{report}"
    assert result["leaked_procs"] == {"container": [], "host": []}, report
    assert {role: v["leaked"] for role, v in result["fds"].items()} == {
        "apiserver": 0,
        "node": 0,
    }, report
    assert run.returncode == 0, report
