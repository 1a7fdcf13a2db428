"""Real third-party clients against one Hatchway cluster: every bundled kubectl, the
official Python client, and Hatchway's own client.

The kubectl on PATH is a "dispatcher" (protocol.md 2.8) that picks a bundled kubectl by the
server's ``/version`` minor, so the bundled binaries beside it (``kubectl.1.27`` …
``kubectl.1.33``) are run directly. Each version gets its own HOME so that one
version's discovery cache never feeds another.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import Cluster
from interop.support import (
    SLEEP,
    VERSIONS,
    Kubectl,
    Pods,
    Users,
    bind_role,
    container,
    kubectl_binary,
    multi_spec,
    pod_manifest,
    speaks_websocket,
    write_user_kubeconfig,
)


def _param(version: str, transport: str) -> Any:
    missing = kubectl_binary(version) is None
    mark = pytest.mark.skipif(missing, reason=f"kubectl.{version} is not installed")
    return pytest.param((version, transport), id=f"{version}-{transport}", marks=mark)


#: (version, transport): "ws" is the default WebSocket-first path of 1.30+, "spdy" is
#: 1.27-1.29 or 1.30+ with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false.
EXEC_VARIANTS = [
    _param(v, t) for v in VERSIONS for t in (("ws", "spdy") if speaks_websocket(v) else ("spdy",))
]
VERSION_VARIANTS = [_param(v, "ws" if speaks_websocket(v) else "spdy") for v in VERSIONS]


@pytest.fixture(scope="session")
def kubectl_homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return {v: tmp_path_factory.mktemp(f"home-{v}") for v in VERSIONS}


def _kubectl(request: pytest.FixtureRequest, cluster: Cluster, homes: Any) -> Kubectl:
    version, transport = request.param
    binary = kubectl_binary(version)
    if binary is None:
        pytest.skip(f"kubectl.{version} is not installed")
    return Kubectl(version, transport, binary, cluster, homes[version])


@pytest.fixture(params=EXEC_VARIANTS)
def kubectl_exec(
    request: pytest.FixtureRequest, cluster: Cluster, kubectl_homes: dict[str, pathlib.Path]
) -> Kubectl:
    """Every kubectl, and for 1.30+ both exec transports."""
    return _kubectl(request, cluster, kubectl_homes)


@pytest.fixture(params=VERSION_VARIANTS)
def kubectl(
    request: pytest.FixtureRequest, cluster: Cluster, kubectl_homes: dict[str, pathlib.Path]
) -> Kubectl:
    """Every kubectl once, for commands that do not exec."""
    return _kubectl(request, cluster, kubectl_homes)


@pytest.fixture(scope="session")
def users(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Users:
    directory = tmp_path_factory.mktemp("users")
    suffix = uuid.uuid4().hex[:6]
    names = {"nobody": f"nobody-{suffix}", "viewer": f"viewer-{suffix}", "editor": f"ed-{suffix}"}
    bindings = [bind_role(names["viewer"], "view"), bind_role(names["editor"], "edit")]
    for binding in bindings:
        cluster.apply_pod(binding)
    return Users(
        **{
            role: write_user_kubeconfig(cluster, name, directory / f"{role}.kubeconfig")
            for role, name in names.items()
        },
        names=names,
    )


@pytest.fixture(scope="session")
def pods(cluster: Cluster) -> Iterator[Pods]:
    suffix = uuid.uuid4().hex[:6]
    chosen = Pods(
        simple=f"simple-{suffix}",
        multi=f"multi-{suffix}",
        annotated=f"annotated-{suffix}",
        privileged=f"priv-{suffix}",
        host_pid=f"hostpid-{suffix}",
    )
    manifests = [
        pod_manifest(chosen.simple, {"containers": [container("main", SLEEP)]}),
        pod_manifest(chosen.multi, multi_spec()),
        pod_manifest(
            chosen.annotated,
            multi_spec(),
            {"kubectl.kubernetes.io/default-container": "sidecar"},
        ),
        pod_manifest(
            chosen.privileged,
            {"containers": [container("main", SLEEP, securityContext={"privileged": True})]},
        ),
        pod_manifest(chosen.host_pid, {"hostPID": True, "containers": [container("main", SLEEP)]}),
    ]
    for manifest in manifests:
        cluster.apply_pod(manifest)
    for manifest in manifests:
        cluster.wait_phase(manifest["metadata"]["name"])
    yield chosen
    names = [m["metadata"]["name"] for m in manifests]
    cluster.kubectl("delete", "pod", "--wait=false", *names)
