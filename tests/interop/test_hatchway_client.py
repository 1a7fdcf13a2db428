"""Hatchway's own client -- the library over both transports and the ``hatchway exec``
CLI -- against the same server, users and pods as kubectl, with kubectl's texts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from cluster import SCALE, Cluster
from hatchway.client.api import Client, SyncClient
from hatchway.client.pods import CompletedPodError
from hatchway.errors import ApiError, ExecError
from interop.support import Pods, Users, container, pod_manifest

TRANSPORTS = ["websocket", "spdy", "auto"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def hatchway_exec(cluster: Cluster, *args: str, kubeconfig: Any = None, input: bytes = b"") -> Any:
    config = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run(
        [sys.executable, "-m", "hatchway", "exec", *config, *args],
        input=input,
        capture_output=True,
        env=cluster.env,
        timeout=60 * SCALE,
    )


async def test_library_exec(cluster: Cluster, pods: Pods, transport: str) -> None:
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    data = os.urandom(5 << 20)
    result = await client.run(
        pods.simple, ["sh", "-c", "sha256sum; exit 42"], input=data, transport=transport
    )
    assert result.returncode == 42
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    result = await client.run(pods.multi, ["sh", "-c", "echo $WHO"], container="sidecar")
    assert result.stdout == b"sidecar\n"


async def test_library_forbidden_texts(pods: Pods, users: Users, transport: str) -> None:
    viewer = Client.from_kubeconfig(str(users.viewer))
    with pytest.raises(ApiError) as info:
        await viewer.run(pods.simple, ["true"], transport=transport)
    assert (info.value.code, info.value.reason) == (403, "Forbidden")
    assert info.value.message == (
        f'pods "{pods.simple}" is forbidden: User "{users.names["viewer"]}" cannot create '
        'resource "pods/exec" in API group "" in the namespace "default"'
    )
    editor = Client.from_kubeconfig(str(users.editor))
    with pytest.raises(ApiError) as info:
        await editor.run(pods.privileged, ["true"], transport=transport)
    assert info.value.message == (
        f'pods "{pods.privileged}" is forbidden: cannot exec into or attach to a privileged '
        "container"
    )
    assert (await editor.run(pods.simple, ["true"], transport=transport)).returncode == 0


async def test_library_chooses_the_container_as_kubectl_does(
    cluster: Cluster, pods: Pods, transport: str
) -> None:
    """No container asked for: the annotated one, else the first -- not the server's
    'a container name must be specified' for a pod with several."""
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    try:
        result = await client.run(pods.multi, ["sh", "-c", "echo $WHO"], transport=transport)
        assert (result.returncode, result.stdout) == (0, b"app\n")
        result = await client.run(pods.annotated, ["sh", "-c", "echo $WHO"], transport=transport)
        assert (result.returncode, result.stdout) == (0, b"sidecar\n")
        process = await client.create_process(pods.annotated, ["true"], transport=transport)
        async with process:
            assert (process.container, await process.wait()) == ("sidecar", 0)
    finally:
        await client.close()


async def test_library_refuses_a_completed_pod(cluster: Cluster) -> None:
    name = f"done-{uuid.uuid4().hex[:6]}"
    spec = {"restartPolicy": "Never", "containers": [container("main", ["true"])]}
    cluster.apply_pod(pod_manifest(name, spec))
    cluster.wait_phase(name, ("Succeeded",))
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    try:
        with pytest.raises(CompletedPodError) as info:
            await client.run(name, ["true"])
        assert str(info.value) == (
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        )
    finally:
        await client.close()
        cluster.kubectl("delete", "pod", name, "--wait=false")


async def test_library_wait_takes_check_and_timeout(cluster: Cluster, pods: Pods) -> None:
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    try:
        command = ["sh", "-c", "read line; exit 7"]
        async with await client.create_process(pods.simple, command, stdin=True) as process:
            with pytest.raises(TimeoutError):
                await process.wait(timeout=0.2)  # it waits for its stdin: still running
            assert process.returncode is None
            await process.stdin.write(b"go\n")
            with pytest.raises(ExecError) as info:
                await process.wait(check=True, timeout=30 * SCALE)
            assert (info.value.returncode, info.value.command) == (7, command)
            assert (process.returncode, await process.wait()) == (7, 7)
    finally:
        await client.close()


def test_sync_wait_takes_check_and_timeout(cluster: Cluster, pods: Pods) -> None:
    with SyncClient.from_kubeconfig(str(cluster.kubeconfig)) as client:
        process = client.create_process(pods.simple, ["sh", "-c", "read l; exit 5"], stdin=True)
        try:
            with pytest.raises(TimeoutError):
                process.wait(0.2)
            process.write(b"go\n")
            with pytest.raises(ExecError):
                process.wait(30 * SCALE, check=True)
            assert process.wait() == 5 and process.container == "main"
        finally:
            process.close()


def test_cli_default_container_and_exit_code(cluster: Cluster, pods: Pods) -> None:
    result = hatchway_exec(cluster, pods.multi, "--", "sh", "-c", "echo $WHO; exit 3")
    assert (result.returncode, result.stdout) == (3, b"app\n")
    assert result.stderr.decode().startswith(
        'Defaulted container "app" out of: app, sidecar, init (init)\n'
    )
    result = hatchway_exec(cluster, pods.annotated, "--", "sh", "-c", "echo $WHO")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"sidecar\n", b"")


def test_cli_stdin_and_errors(cluster: Cluster, pods: Pods, users: Users) -> None:
    data = os.urandom(3 << 20)
    result = hatchway_exec(cluster, "-i", pods.simple, "--", "sha256sum", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

    result = hatchway_exec(cluster, "nope", "--", "true")
    assert result.returncode == 1
    assert b'pods "nope" not found' in result.stderr
    result = hatchway_exec(cluster, pods.host_pid, "--", "true", kubeconfig=users.editor)
    assert result.returncode == 1
    assert b"cannot exec into or attach to a container using host pid" in result.stderr


def test_files_copied_by_kubectl_read_by_hatchway(
    cluster: Cluster, pods: Pods, tmp_path: Any
) -> None:
    data = os.urandom(1 << 20)
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    remote = f"/tmp/x-{uuid.uuid4().hex}"
    copied = cluster.kubectl("cp", str(local), f"{pods.simple}:{remote}")
    assert copied.returncode == 0, copied.stderr
    result = hatchway_exec(cluster, pods.simple, "--", "cat", remote)
    assert result.stdout == data
