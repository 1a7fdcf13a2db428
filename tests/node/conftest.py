"""Fixtures for node tests: a private data dir and runc root per test, torn down even on
failure (containers killed and deleted, overlay mounts gone). runc tests are skipped
when not root or when runc is missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator

import pytest

from hatchway.cli.daemons import node_uvloop
from hatchway.node.runtime import RuncRuntime
from hatchway.node.runtime_image import ImageStore

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))

HAVE_RUNC = os.geteuid() == 0 and shutil.which("runc") is not None
needs_runc = pytest.mark.skipif(not HAVE_RUNC, reason="needs root and the runc binary")


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path)]


def _force_cleanup(root: str) -> None:
    """Last resort when the runtime's own delete failed: nothing may outlive a test."""
    state = os.path.join(root, "runc")
    if os.path.isdir(state):
        out = subprocess.run(
            ["runc", "--root", state, "list", "-q"], capture_output=True, text=True
        ).stdout
        for cid in out.split():
            subprocess.run(["runc", "--root", state, "delete", "--force", cid], check=False)
    for mount in sorted(_mounts_under(root), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def images(data_dir: str) -> ImageStore:
    return ImageStore(data_dir)


@pytest.fixture
async def runtime(data_dir: str, images: ImageStore) -> AsyncIterator[RuncRuntime]:
    if not HAVE_RUNC:
        pytest.skip("needs root and the runc binary")
    rt = RuncRuntime(data_dir, images=images)
    try:
        yield rt
    finally:
        for st in await rt.list():
            with contextlib.suppress(Exception):
                await rt.delete(st.id, force=True)
        leftover = _mounts_under(data_dir)
        _force_cleanup(data_dir)
        assert leftover == [], f"mounts left behind: {leftover}"


def pod_uid(name: str) -> str:
    """A canonical uid per pod name (the node refuses any other kind), stable in a test."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hatchway-test-pod/{name}"))


@pytest.fixture
def make_pod():
    return pod_dict


def pod_dict(name: str = "p1", containers: list[dict] | None = None, **spec) -> dict:
    """A minimal pod as Kubernetes JSON."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": pod_uid(name)},
        "spec": {
            "containers": containers
            or [{"name": "main", "image": "busybox", "command": ["sleep", "1000"]}],
            **spec,
        },
    }


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """The node agent's event loop: uvloop unless HATCHWAY_NODE_UVLOOP=0 (or it is not
    installed), as ``hatchway node`` runs it."""
    if node_uvloop():
        with contextlib.suppress(ImportError):
            import uvloop

            return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
