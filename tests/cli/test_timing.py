"""The exec phase timer: marks, the handshake split, the line, and off by default."""

from __future__ import annotations

import io

import pytest

from hatchway.cli import timing
from hatchway.cli.timing import Phases


def _phases(line: str) -> dict[str, float]:
    parts = line.removeprefix("timing (ms): ").split(" | ")
    return {name: float(value) for name, value in (p.rsplit(" ", 1) for p in parts)}


def test_marks_in_order_first_mark_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.010, 0.030, 0.031, 0.045])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(timing, "_process_age", lambda: 0.2)
    phases = Phases(True)  # perf_counter 0.0
    phases.mark("a")  # 0.010
    phases.mark("b")  # 0.030
    phases.mark("a")  # ignored: no clock read
    phases.mark("c")  # 0.031
    phases.split("x", 0.004, of="b")
    got = _phases(phases.line())
    assert list(got) == ["start", "a", "x", "b", "c", "total"]
    assert got["start"] == 200 and got["a"] == 10.0 and got["x"] == 4.0
    assert got["b"] == 16.0 and got["c"] == 1.0 and got["total"] == 231


def test_split_larger_than_phase_never_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.002])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    phases = Phases(True)
    phases.mark("pod get")
    phases.split("connect", 0.5, of="pod get")
    assert _phases(phases.line())["pod get"] == 0.0


def test_disabled_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(timing.ENV, raising=False)
    phases = Phases.from_environment()
    phases.mark("a")
    out = io.StringIO()
    phases.report(out)
    assert out.getvalue() == "" and not phases.enabled
    monkeypatch.setenv(timing.ENV, "0")
    assert not Phases.from_environment().enabled
    monkeypatch.setenv(timing.ENV, "1")
    assert Phases.from_environment().enabled


def test_process_age_is_this_process() -> None:
    age = timing._process_age()
    assert age is not None and 0 < age < 24 * 3600
