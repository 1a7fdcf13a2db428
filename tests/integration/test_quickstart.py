"""The main job end to end: a pod in a real runc container, exec'd into with hatchway
and with kubectl, over both transports."""

from __future__ import annotations

import os

import pytest

from cluster import Cluster


def test_hatchway_exec_runs_in_the_container(cluster: Cluster) -> None:
    pod = cluster.pod()
    result = cluster.hatchway("exec", pod, "--", "sh", "-c", "hostname; echo err >&2; exit 3")
    assert result.stdout.decode().strip() == pod
    assert b"err" in result.stderr
    assert result.returncode == 3


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_kubectl_exec_with_stdin(cluster: Cluster, websockets: str) -> None:
    pod = cluster.pod()
    data = os.urandom(1 << 20)
    result = cluster.kubectl(
        "exec",
        "-i",
        pod,
        "--",
        "sh",
        "-c",
        "cat | md5sum; exit 5",
        input=data,
        env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets},
    )
    import hashlib

    assert result.stdout.decode().split()[0] == hashlib.md5(data).hexdigest()
    assert result.returncode == 5, result.stderr
