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
sys.path.insert(0, str(ROOT))

from bench.soak_session import Outcome, Pattern, Spec, Verifier, classify  # noqa: E402


@pytest.mark.parametrize(
    ("damage", "code", "status"),
    [
        ("none", 0, "ok"),
        ("none", 3, "wrong_exit"),
        ("tail", 0, "truncated"),
        ("empty", 0, "truncated"),
        ("flip", 0, "corrupted"),
        ("extra", 0, "corrupted"),
        ("repeat", 0, "corrupted"),
    ],
)
def test_the_soak_tells_lost_and_changed_bytes_apart(damage: str, code: int, status: str) -> None:
    """What the soak's verdicts rest on: a stream that comes back short is truncated,
    one that differs anywhere (or is longer, or repeats a block) is corrupted."""
    pattern = Pattern(5)
    spec = Spec(7, "lib-ws", "pod", "data", size=300_000, code=0)
    sent = b"".join(bytes(b) for b in pattern.stream(7, spec.size))
    back = {
        "none": sent,
        "tail": sent[:-1],
        "empty": b"",
        "flip": sent[:1000] + bytes([sent[1000] ^ 1]) + sent[1001:],
        "extra": sent + b"x",
        "repeat": sent[:65536] + sent[:65536] + sent[131072:],
    }[damage]
    verifier = Verifier(pattern.stream(7, spec.size))
    for i in range(0, len(back), 4093):  # odd chunks: block edges fall anywhere
        verifier.feed(back[i : i + 4093])
    out = Outcome(spec, exit_code=code)
    classify(out, verifier)
    assert out.status == status
    assert out.verified == (spec.size if status in {"ok", "wrong_exit"} else 0)


@pytest.mark.runc
@pytest.mark.slow
@pytest.mark.timeout(900 * SCALE)
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
