"""hatchway.client.api against a real cluster: Client (REST, logs, run, create_process)
and the thread-safe SyncClient used from several threads at once."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

import pytest

from cluster import SCALE, Cluster
from hatchway.client.api import Client, SyncClient
from hatchway.errors import ApiError, ConnectionClosedError, ExecError


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    return cluster.pod(command=("sh", "-c", "echo hello-log; exec sleep 86400"))


@pytest.fixture
def client(cluster: Cluster) -> Client:
    return Client.from_kubeconfig(str(cluster.kubeconfig))


@pytest.fixture
def sync(cluster: Cluster) -> Any:
    with SyncClient.from_kubeconfig(str(cluster.kubeconfig)) as sync_client:
        yield sync_client


def pod_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "9"]}],
            "terminationGracePeriodSeconds": 1,
        },
    }


async def test_kubeconfig_context_and_namespace(client: Client, cluster: Cluster) -> None:
    assert client.namespace == "default"
    assert client.config.server == cluster.server


async def test_rest_get_list_create_delete(client: Client, pod: str) -> None:
    got = await client.get_pod(pod)
    assert (got["metadata"]["name"], got["status"]["phase"]) == (pod, "Running")
    listed = await client.list("pods")
    assert pod in [item["metadata"]["name"] for item in listed["items"]]
    nodes = await client.list("nodes")
    assert len(nodes["items"]) == 1

    name = f"api-{uuid.uuid4().hex[:8]}"
    created = await client.create("pods", pod_body(name))
    assert created["metadata"]["name"] == name
    with pytest.raises(ApiError) as info:
        await client.create("pods", pod_body(name))
    assert (info.value.code, info.value.reason) == (409, "AlreadyExists")
    await client.delete("pods", name, grace=0)
    with pytest.raises(ApiError) as info:
        await client.get("pods", "no-such-pod")
    assert (info.value.code, info.value.reason) == (404, "NotFound")


async def test_logs(client: Client, pod: str) -> None:
    chunks = [chunk async for chunk in client.logs(pod)]
    assert b"".join(chunks) == b"hello-log\n"


async def test_run_and_create_process(client: Client, pod: str) -> None:
    for transport in ("websocket", "spdy", "auto"):
        result = await client.run(
            pod, ["sh", "-c", "cat; exit 2"], input=b"in", transport=transport
        )
        assert (result.returncode, result.stdout) == (2, b"in")
        with pytest.raises(ExecError) as info:
            await client.run(
                pod, ["sh", "-c", "echo no >&2; exit 2"], check=True, transport=transport
            )
        assert (info.value.returncode, info.value.stderr) == (2, b"no\n")
    process = await client.create_process(pod, ["sh", "-c", "tty"], tty=True)
    async with process:
        assert (await process.stdout.read_all()).startswith(b"/dev/pts/")
        assert await process.wait() == 0
    result = await client.run(pod, ["tty"], tty=True)
    assert result.stdout.startswith(b"/dev/pts/")


async def test_other_namespace_is_a_clean_error(client: Client, pod: str) -> None:
    with pytest.raises(ApiError) as info:
        await client.run(pod, ["true"], namespace="kube-system")
    assert info.value.code == 404


def test_sync_client_from_many_threads(sync: SyncClient, pod: str) -> None:
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            data = os.urandom(50_000 + i)
            transport = ("websocket", "spdy")[i % 2]
            result = sync.run(
                pod, ["sh", "-c", f"sha256sum; exit {i}"], input=data, transport=transport
            )
            assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
            results[i] = (result.returncode, sync.get("pods", pod)["metadata"]["name"])
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60 * SCALE)
    assert not errors, errors
    assert results == {i: (i, pod) for i in range(12)}


def test_sync_process(sync: SyncClient, pod: str) -> None:
    with sync.create_process(pod, ["sh", "-c", "cat; exit 3"], stdin=True) as process:
        process.write(b"ping\n")
        assert process.read_stdout() == b"ping\n"
        process.write_eof()
        assert process.read_stdout() == b""
        assert process.wait(10 * SCALE) == 3
        assert process.returncode == 3
    with sync.create_process(pod, ["sh"], stdin=True, tty=True) as process:
        process.resize(90, 20)
        process.write(b"stty size; exit 4\n")
        output = b""
        while chunk := process.read_stdout():
            output += chunk
        assert b"20 90" in output
        assert process.wait() == 4
    process = sync.create_process(pod, ["sleep", "60"])
    process.terminate()
    with pytest.raises(ConnectionClosedError):
        process.wait(10 * SCALE)
    process.close()


def test_sync_rest_and_logs(sync: SyncClient, pod: str) -> None:
    assert sync.namespace == "default"
    assert sync.logs(pod) == b"hello-log\n"
    name = f"sync-{uuid.uuid4().hex[:8]}"
    assert sync.create("pods", pod_body(name))["metadata"]["name"] == name
    assert name in [p["metadata"]["name"] for p in sync.list("pods")["items"]]
    sync.delete("pods", name)


def test_sync_client_close_is_idempotent(cluster: Cluster) -> None:
    sync = SyncClient.from_kubeconfig(str(cluster.kubeconfig))
    sync.close()
    sync.close()
