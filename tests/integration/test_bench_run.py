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
