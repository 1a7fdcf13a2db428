"""The process-lifetime contract through the whole stack (issue 10, items 2 and 3): when
the client goes away -- real kubectl or Hatchway's client SIGKILLed, the library's task
cancelled -- every process of the exec dies, the background one too, every time, with
no race against the stdin EOF the lost connection would otherwise cause; a node agent
SIGKILLed takes its execs with it; a restarted agent kills what a killed agent and
helper left. Checked from the host's /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cluster import SCALE, SCALE_ARGS, Cluster, start_cluster, stop_cluster
from hatchway.client.api import Client

TRIES = 5


def marker() -> str:
    return str(random.randrange(5_000_000, 6_000_000))


def sleeping(seconds: str) -> list[int]:
    """Host pids of live ``sleep SECONDS`` processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[:2] == [b"sleep", seconds.encode()] and state != b"Z":
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@contextlib.contextmanager
def cpu_load(loaded: bool) -> Iterator[None]:
    """Busy loops on every core while the block runs (the race showed under load)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range((os.cpu_count() or 2) * loaded)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    return cluster.pod()


def _kill_client_and_check(argv: list[str], env: dict[str, str], seconds: str) -> None:
    client = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        assert wait_for(lambda: sleeping(seconds)), "the exec did not start"
        client.kill()
        client.wait()
        assert wait_for(lambda: not sleeping(seconds), 10), (
            f"sleep {seconds} outlived its SIGKILLed client"
        )
    finally:
        client.kill()
        client.wait()
        assert client.stdin is not None and client.stderr is not None
        client.stdin.close()
        client.stderr.close()


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
@pytest.mark.parametrize("transport", ["ws", "spdy"])
def test_kubectl_sigkilled_kills_the_background_child_every_time(
    cluster: Cluster, pod: str, transport: str, loaded: bool
) -> None:
    env = {**cluster.env}
    if transport == "spdy":
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
    with cpu_load(loaded):
        for _ in range(TRIES):
            seconds = marker()
            argv = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "exec", "-i", pod]
            argv += ["--", "sh", "-c", f"sleep {seconds} & cat"]
            _kill_client_and_check(argv, env, seconds)


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
def test_hatchway_exec_sigkilled_kills_the_background_child(
    cluster: Cluster, pod: str, loaded: bool
) -> None:
    with cpu_load(loaded):
        for _ in range(TRIES):
            seconds = marker()
            argv = [sys.executable, "-m", "hatchway", "exec", "-i", pod]
            argv += ["--", "sh", "-c", f"sleep {seconds} & cat"]
            _kill_client_and_check(argv, cluster.env, seconds)


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_library_task_cancelled_kills_the_tree(
    cluster: Cluster, pod: str, transport: str
) -> None:
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    try:
        for _ in range(3):
            seconds = marker()
            command = ["sh", "-c", f"sleep {seconds} & setsid sh -c 'sleep {seconds} &'; cat"]

            async def use(command: list[str] = command) -> None:
                process = await client.create_process(pod, command, stdin=True, transport=transport)
                async with process:
                    await process.wait()

            task = asyncio.ensure_future(use())
            deadline = time.monotonic() + 20 * SCALE
            while len(sleeping(seconds)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(sleeping(seconds)) == 2
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 10 * SCALE
            while sleeping(seconds) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sleeping(seconds) == []
    finally:
        await client.close()


# -- the node agent's death: a cluster of its own, whose agent the test kills ----------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = start_cluster(tmp_path_factory.mktemp("lifetime-cluster"))
    try:
        yield started
    finally:
        stop_cluster(started)


def _node_pid(cluster: Cluster) -> int:
    return int(json.loads((cluster.data_dir / "cluster.json").read_text())["node_pid"])


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _helper_of(node_pid: int) -> int:
    """The node agent's exec helper (``python -m hatchway.node.runtime_execshim``)."""
    for child in _children(node_pid):
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            if b"hatchway.node.runtime_execshim" in f.read():
                return child
    raise AssertionError(f"node agent {node_pid} has no exec helper")


def _restart(cluster: Cluster) -> None:
    """``hatchway up`` again: it restarts the component that died."""
    argv = [sys.executable, "-m", "hatchway", "up", "--data-dir", str(cluster.data_dir)]
    result = subprocess.run(
        [*argv, "--detach", "--no-merge", *SCALE_ARGS],
        capture_output=True,
        env=cluster.env,
        timeout=120 * SCALE,
    )
    assert result.returncode == 0, result.stderr.decode()


def _exec_in_background(cluster: Cluster, pod: str, script: str) -> subprocess.Popen[bytes]:
    argv = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "exec", "-i", pod]
    return subprocess.Popen(
        [*argv, "--", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cluster.env,
    )


def test_node_agent_sigkilled_takes_its_execs_and_a_new_one_kills_leftovers(
    own_cluster: Cluster,
) -> None:
    cluster = own_cluster
    pod = cluster.pod()
    # 1. The agent alone is SIGKILLed: its exec helper kills what it started.
    seconds = marker()
    client = _exec_in_background(cluster, pod, f"sleep {seconds} & cat")
    try:
        assert wait_for(lambda: sleeping(seconds))
        os.kill(_node_pid(cluster), signal.SIGKILL)
        assert wait_for(lambda: not sleeping(seconds), 10), "the exec outlived its agent"
    finally:
        client.kill()
        client.wait()
    _restart(cluster)
    _wait_exec_works(cluster, pod)
    # 2. Agent and helper are SIGKILLed: nothing is left to kill the exec, until the next
    # agent starts and finds it.
    seconds = marker()
    script = f"sleep {seconds} & setsid sh -c 'sleep {seconds} &'; exec sleep {seconds}"
    client = _exec_in_background(cluster, pod, script)
    try:
        assert wait_for(lambda: len(sleeping(seconds)) == 3)
        node = _node_pid(cluster)
        os.kill(_helper_of(node), signal.SIGKILL)
        os.kill(node, signal.SIGKILL)
        time.sleep(0.5)
        assert len(sleeping(seconds)) == 3
        _restart(cluster)
        assert wait_for(lambda: not sleeping(seconds), 20), "the new agent left them running"
    finally:
        client.kill()
        client.wait()
    _wait_exec_works(cluster, pod)
    result = cluster.kubectl("exec", pod, "--", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr.decode()


def test_restarted_agent_kills_a_setsid_child_its_exec_left_to_the_container_init(
    own_cluster: Cluster,
) -> None:
    """Agent and helper SIGKILLed while ``cat`` holds stdin: nothing holds stdin any
    more, so ``cat`` and tini exit and the setsid'd ``sleep`` is re-parented to the
    container's init; no parent link or session leads to it, only its cgroup. The
    restarted agent kills it, and it does not stay as a zombie either."""
    cluster = own_cluster
    pod = cluster.pod()
    _wait_exec_works(cluster, pod)
    seconds = marker()
    client = _exec_in_background(cluster, pod, f"setsid sleep {seconds} & cat")
    try:
        assert wait_for(lambda: len(sleeping(seconds)) == 1)
        (victim,) = sleeping(seconds)
        cgroup = _pids_cgroup(victim)
        assert "/exec-" in cgroup, cgroup
        node = _node_pid(cluster)
        os.kill(_helper_of(node), signal.SIGKILL)
        os.kill(node, signal.SIGKILL)
        time.sleep(0.5)
        assert sleeping(seconds) == [victim]
        _restart(cluster)
        assert wait_for(lambda: not os.path.exists(f"/proc/{victim}"), 20), (
            "the new agent left the setsid'd sleep running"
            if sleeping(seconds)
            else "the setsid'd sleep stayed as a zombie in the container"
        )
        # Everything else in its cgroup (tini, cat, stdin's holder) died, and it is gone.
        assert wait_for(lambda: not os.path.exists(cgroup), 10), "the exec's cgroup stayed"
    finally:
        client.kill()
        client.wait()
    _wait_exec_works(cluster, pod)


def _pids_cgroup(pid: int) -> str:
    """The host directory of the process's cgroup in the v1 pids hierarchy."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                return "/sys/fs/cgroup/pids" + path
    raise AssertionError(f"no pids cgroup for {pid}")


def _wait_exec_works(cluster: Cluster, pod: str) -> None:
    """Until the restarted agent serves exec (the pod's status is the old agent's)."""
    deadline = time.monotonic() + 60 * SCALE
    while True:
        result = cluster.kubectl("exec", pod, "--", "true", timeout=30)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, result.stderr.decode()
        time.sleep(0.2)
