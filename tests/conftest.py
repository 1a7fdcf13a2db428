"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

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
