"""bench/run.py writes latest.* only for a full run: the README quotes that file, and a
quick or partial run (``--only echo``) once overwrote it."""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402


def test_a_full_run_is_every_figure_of_every_peer_at_full_size() -> None:
    assert run.is_full(run.parse([]))
    assert run.is_full(run.parse(["--timeout-scale", "3", "--no-install"]))


@pytest.mark.parametrize(
    "argv",
    [
        ["--quick"],
        ["--only", "echo"],
        ["--only", *[f for f in run.FIGURES if f != "echo"]],
        ["--peers", "ssh", "hatchway"],
        ["--echo-runs", "300"],
        ["--size-mib", "256"],
        ["--rounds", "1"],
    ],
)
def test_anything_less_is_partial(argv: list[str]) -> None:
    assert not run.is_full(run.parse(argv))


def test_echo_rounds_merge_into_percentiles_over_every_keystroke() -> None:
    from bench.echo import merged

    fast = {"runs": 3, "p50_ms": 0.2, "p99_ms": 0.3, "samples_ms": [0.1, 0.2, 0.3]}
    slow = {"runs": 3, "p50_ms": 0.9, "p99_ms": 1.0, "samples_ms": [0.8, 0.9, 1.0]}
    cell = merged([fast, {"error": "MeasureError: no echo"}, slow])
    assert cell["runs"] == 6 and cell["rounds"] == 2
    assert cell["p50_ms"] == 0.3  # nearest rank over the six, not a mean of medians
    assert cell["p99_ms"] == 1.0
    assert cell["rounds_p50_ms"] == [0.2, 0.9]
    assert merged([{"error": "x"}]) == {"error": "x"}
