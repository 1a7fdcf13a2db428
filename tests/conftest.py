"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import hypothesis  # noqa: F401  (imported early: see below)
import pytest

# hypothesis's pytest plugin imports the package in its terminal summary when no test did;
# pytest then rewrites it at a deep stack, which CPython 3.11.7 fails with "AST
# constructor recursion depth mismatch". Importing it here, at collection, avoids that.

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from cluster import Cluster, can_run_containers, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real local cluster (API server + node agent + runc) for the whole run."""
    reason = can_run_containers()
    if reason:
        pytest.skip(f"a local cluster {reason}")
    started = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
    finally:
        stop_cluster(started)
