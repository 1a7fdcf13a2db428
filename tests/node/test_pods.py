"""Pod lifecycle on real runc: status like the kubelet's, restarts, grace, re-adoption."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest

from hatchway.node.pods import PodManager, _phase
from hatchway.node.runtime import RuncRuntime
from hatchway.types import ExecOptions

from .conftest import SCALE, needs_runc, pod_uid


class Recorder:
    def __init__(self) -> None:
        self.updates: list[dict] = []

    async def __call__(self, pod: dict) -> None:
        self.updates.append(pod)


@pytest.fixture
async def manager(runtime: RuncRuntime, images):
    rec = Recorder()
    pm = PodManager(
        runtime, images, on_status=rec, backoff_initial=0.2, backoff_max=1.0, poll_interval=0.05
    )
    pm.recorder = rec  # type: ignore[attr-defined]
    await pm.start()
    yield pm
    await pm.close()


async def until(pm: PodManager, name: str, check, timeout: float = 15) -> dict:
    """Wait until the pod's status satisfies ``check``; the last status."""
    status: dict | None = None
    async with asyncio.timeout(timeout * SCALE):
        while True:
            status = pm.pod_status("default", name)
            if status and check(status):
                return status
            await asyncio.sleep(0.05)


def cstatus(status: dict, name: str = "main") -> dict:
    return next(c for c in status["containerStatuses"] if c["name"] == name)


def conditions(status: dict) -> dict:
    return {c["type"]: c["status"] for c in status["conditions"]}


def runc_test(fn):
    return needs_runc(pytest.mark.runc(fn))


@pytest.mark.parametrize(
    ("states", "policy", "phase"),
    [
        ([{"running": {}}], "Always", "Running"),
        ([{"waiting": {"reason": "ContainerCreating"}}], "Always", "Pending"),
        ([{"terminated": {"exitCode": 0}}], "Never", "Succeeded"),
        ([{"terminated": {"exitCode": 0}}, {"terminated": {"exitCode": 1}}], "Never", "Failed"),
        ([{"terminated": {"exitCode": 1}}], "OnFailure", "Running"),
        ([{"terminated": {"exitCode": 0}}], "OnFailure", "Succeeded"),
        ([{"terminated": {"exitCode": 0}}], "Always", "Running"),
        ([{"running": {}}, {"terminated": {"exitCode": 1}}], "Never", "Running"),
        ([{"running": {}}, {"waiting": {}}], "Always", "Pending"),
    ],
)
def test_phase_like_the_kubelet(states, policy, phase):
    assert _phase([{"state": s} for s in states], policy) == phase


def test_crashlooping_container_counts_as_stopped():
    looping = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1}},
    }
    assert _phase([looping], "Always") == "Running"


@runc_test
async def test_pod_runs_and_reports_running_ready(manager, make_pod, runtime):
    pod = make_pod(
        containers=[
            {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello; sleep 1000"]}
        ]
    )
    await manager.reconcile([pod])
    status = await until(manager, "p1", lambda s: s["phase"] == "Running")
    c = cstatus(status)
    assert "running" in c["state"] and c["ready"] and c["started"]
    assert c["restartCount"] == 0 and c["image"] == "busybox"
    assert c["containerID"].startswith("runc://")
    assert conditions(status) == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    cid = manager.find_container("default", "p1", "main")
    assert cid and c["containerID"] == f"runc://{cid}"
    assert await manager.container_running("default", "p1", "main")
    assert manager.find_container("default", "p1", "other") is None
    assert manager.find_container("default", "nope", "main") is None
    for _ in range(40):
        logs = b"".join([x async for x in runtime.read_logs(cid)])
        if logs:
            break
        await asyncio.sleep(0.05)
    assert logs == b"hello\n"
    update = manager.recorder.updates[-1]
    assert update["metadata"] == {"namespace": "default", "name": "p1", "uid": pod_uid("p1")}
    assert update["status"]["phase"] == "Running"


@runc_test
@pytest.mark.parametrize(
    ("code", "phase", "reason"), [(0, "Succeeded", "Completed"), (3, "Failed", "Error")]
)
async def test_exit_with_restart_never(manager, make_pod, code, phase, reason):
    pod = make_pod(
        containers=[{"name": "main", "image": "busybox", "command": ["sh", "-c", f"exit {code}"]}],
        restartPolicy="Never",
    )
    await manager.reconcile([pod])
    status = await until(manager, "p1", lambda s: s["phase"] in ("Succeeded", "Failed"))
    assert status["phase"] == phase
    term = cstatus(status)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (code, reason)
    assert term["finishedAt"] and term["startedAt"]
    assert conditions(status)["Ready"] == "False"
    assert not await manager.container_running("default", "p1", "main")


@runc_test
async def test_restart_always_counts_restarts_with_backoff(manager, make_pod):
    pod = make_pod(
        containers=[{"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 2"]}]
    )
    await manager.reconcile([pod])
    status = await until(manager, "p1", lambda s: cstatus(s)["restartCount"] >= 2)
    assert status["phase"] == "Running"
    c = cstatus(status)
    assert c["lastState"]["terminated"]["exitCode"] == 2
    seen = [cstatus(u["status"])["state"] for u in manager.recorder.updates]
    assert any(s.get("waiting", {}).get("reason") == "CrashLoopBackOff" for s in seen)


@runc_test
async def test_restart_on_failure_stops_after_success(manager, make_pod):
    # Fails the first time (no marker file in the shared emptyDir), succeeds the second.
    pod = make_pod(
        containers=[
            {
                "name": "main",
                "image": "busybox",
                "command": ["sh", "-c", "test -e /data/ran && exit 0; touch /data/ran; exit 1"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
        restartPolicy="OnFailure",
    )
    await manager.reconcile([pod])
    status = await until(manager, "p1", lambda s: s["phase"] == "Succeeded")
    c = cstatus(status)
    assert c["restartCount"] == 1 and c["state"]["terminated"]["reason"] == "Completed"


@runc_test
async def test_missing_image_waits_with_a_reason(manager, make_pod):
    pod = make_pod(containers=[{"name": "main", "image": "ghcr.io/x/nope:1", "command": ["x"]}])
    await manager.reconcile([pod])
    status = await until(
        manager,
        "p1",
        lambda s: (
            "waiting" in cstatus(s)["state"]
            and cstatus(s)["state"]["waiting"]["reason"] != "ContainerCreating"
        ),
    )
    waiting = cstatus(status)["state"]["waiting"]
    assert waiting["reason"] in ("ErrImageNotFound", "ImagePullBackOff")
    assert "ghcr.io/x/nope:1" in waiting["message"]
    assert status["phase"] == "Pending"
    status = await until(
        manager, "p1", lambda s: cstatus(s)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    )


@runc_test
async def test_delete_with_grace_kills_a_term_ignoring_process(manager, make_pod, runtime):
    pod = make_pod(
        containers=[
            {
                "name": "main",
                "image": "busybox",
                "command": ["sh", "-c", "trap '' TERM; echo up; while true; do sleep 0.1; done"],
            }
        ],
        terminationGracePeriodSeconds=1,
    )
    await manager.reconcile([pod])
    await until(manager, "p1", lambda s: s["phase"] == "Running")
    cid = manager.find_container("default", "p1", "main")
    start = time.monotonic()
    await manager.reconcile([])
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 5 * SCALE
    assert manager.pod_status("default", "p1") is None
    assert await runtime.list() == []
    assert cid is not None


@runc_test
async def test_delete_of_a_well_behaved_pod_is_quick(manager, make_pod, runtime):
    pod = make_pod(
        containers=[
            {
                "name": "main",
                "image": "busybox",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
            }
        ]
    )
    await manager.reconcile([pod])
    await until(manager, "p1", lambda s: s["phase"] == "Running")
    start = time.monotonic()
    await manager.delete_pod("default", "p1")
    assert time.monotonic() - start < 3 * SCALE
    assert await runtime.list() == []


@runc_test
async def test_deletion_timestamp_stops_the_pod(manager, make_pod, runtime):
    pod = make_pod()
    await manager.reconcile([pod])
    await until(manager, "p1", lambda s: s["phase"] == "Running")
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 0
    await manager.reconcile([pod])
    assert await runtime.list() == []


@runc_test
async def test_two_containers_share_localhost(manager, make_pod, runtime):
    pod = make_pod(
        containers=[
            {
                "name": "server",
                "image": "busybox",
                "command": ["sh", "-c", "while true; do echo pong | nc -l -p 9000; done"],
            },
            {"name": "main", "image": "busybox", "command": ["sleep", "1000"]},
        ]
    )
    await manager.reconcile([pod])
    await until(manager, "p1", lambda s: conditions(s)["Ready"] == "True")
    cid = manager.find_container("default", "p1", "main")
    out = b""
    for _ in range(50):
        proc = await runtime.exec(
            cid, ExecOptions(("sh", "-c", "nc 127.0.0.1 9000 </dev/null"), stdin=False, tty=False)
        )
        out = b""
        while chunk := await proc.read_stdout():
            out += chunk
        await proc.wait()
        if out:
            break
        await asyncio.sleep(0.1)
    assert out == b"pong\n"


@runc_test
async def test_agent_restart_readopts_a_running_pod(runtime, images, make_pod, data_dir):
    pod = make_pod()
    first = PodManager(runtime, images, poll_interval=0.05)
    await first.start()
    await first.reconcile([pod])
    await until(first, "p1", lambda s: s["phase"] == "Running")
    cid = first.find_container("default", "p1", "main")
    pid = (await runtime.state(cid)).pid
    await first.close()

    again = RuncRuntime(data_dir, images=images)
    second = PodManager(again, images, poll_interval=0.05)
    await second.start()
    try:
        assert second.find_container("default", "p1", "main") == cid
        status = await until(second, "p1", lambda s: s["phase"] == "Running")
        assert cstatus(status)["restartCount"] == 0
        assert (await again.state(cid)).pid == pid  # the same process, not a new one
        await second.reconcile([pod])
        await asyncio.sleep(0.3)
        assert second.find_container("default", "p1", "main") == cid
        assert len(await again.list()) == 2  # sandbox + main, nothing duplicated
    finally:
        await second.close()


@runc_test
async def test_orphan_containers_are_removed_on_start(runtime, images, make_pod):
    pod = make_pod()
    sandbox = await runtime.create_sandbox(pod)
    assert [s.id for s in await runtime.list()] == [sandbox]
    pm = PodManager(runtime, images)
    await pm.start()
    assert await runtime.list() == []
    await pm.close()


@runc_test
async def test_dead_sandbox_restarts_the_pod(manager, make_pod, runtime):
    await manager.reconcile([make_pod()])
    await until(manager, "p1", lambda s: s["phase"] == "Running")
    old = manager.find_container("default", "p1", "main")
    sandbox = (await runtime.state(old)).sandbox_id
    await runtime.kill(sandbox, "KILL")
    status = await until(
        manager, "p1", lambda s: cstatus(s)["restartCount"] == 1 and s["phase"] == "Running"
    )
    new = manager.find_container("default", "p1", "main")
    assert new != old and cstatus(status)["containerID"] == f"runc://{new}"
    assert (await runtime.state(new)).sandbox_id != sandbox


def test_qos_class():
    from hatchway.node.pods import qos_class

    both = {"cpu": "1", "memory": "1Gi"}
    assert qos_class([{"name": "a"}]) == "BestEffort"
    assert qos_class([{"name": "a", "resources": {"limits": both}}]) == "Guaranteed"
    assert (
        qos_class([{"name": "a", "resources": {"limits": both, "requests": both}}]) == "Guaranteed"
    )
    assert qos_class([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]) == "Burstable"
    assert qos_class([{"name": "a", "resources": {"limits": both}}, {"name": "b"}]) == "Burstable"


# --- keyed by uid (issue 9) --------------------------------------------------------------

STUBBORN = ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]


def _tree(root: str) -> list[str]:
    """Every path under ``root``, relative and sorted."""
    found = []
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(here, name), root))
    return sorted(found)


def _write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)


async def until_uid(pm: PodManager, name: str, uid: str, check, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout * SCALE):
        while True:
            status = pm.pod_status("default", name, uid)
            if status and check(status):
                return status
            await asyncio.sleep(0.05)


@runc_test
async def test_a_new_pod_of_a_stopping_pods_name_gets_its_own_containers(
    manager, make_pod, runtime
):
    """Finding 3: the old pod (ignoring SIGTERM, long grace) is still stopping; the new
    one of the same name runs beside it and lookups by uid never mix them up."""
    from hatchway.node.pods import AmbiguousPodError

    old = make_pod(
        containers=[{"name": "main", "image": "busybox", "command": STUBBORN}],
        terminationGracePeriodSeconds=600,
    )
    await manager.reconcile([old])
    old_uid = old["metadata"]["uid"]
    await until_uid(manager, "p1", old_uid, lambda s: s["phase"] == "Running")
    old_cid = manager.find_container("default", "p1", "main", old_uid)
    new = make_pod()
    new["metadata"]["uid"] = new_uid = str(uuid.uuid4())
    async with asyncio.timeout(5 * SCALE):  # must not wait for the old pod's 600 s
        await manager.reconcile([new], wait=False)
    await until_uid(manager, "p1", new_uid, lambda s: s["phase"] == "Running")
    new_cid = manager.find_container("default", "p1", "main", new_uid)
    assert new_cid not in (None, old_cid)
    assert (await runtime.state(old_cid)).running  # still stopping
    assert manager.find_container("default", "p1", "main", old_uid) == old_cid
    assert manager.find_container("other", "p1", "main", new_uid) is None
    assert sorted(manager.pods_named("default", "p1")) == sorted([old_uid, new_uid])
    with pytest.raises(AmbiguousPodError):
        manager.find_container("default", "p1", "main")
    await manager.delete_pod("default", "p1", 0, uid=old_uid)
    assert manager.find_container("default", "p1", "main") == new_cid


@runc_test
async def test_a_pod_whose_uid_is_not_a_uuid_is_refused(manager, make_pod, runtime, tmp_path):
    target = tmp_path / "host"
    target.mkdir()
    (target / "keep").write_text("x")
    pod = make_pod(volumes=[{"name": "data", "emptyDir": {}}])
    for bad in (str(target), "/", "../../..", ""):
        pod["metadata"]["uid"] = bad
        await manager.reconcile([pod])
        assert manager.pods_named("default", "p1") == []
    assert await runtime.list() == []
    assert sorted(p.name for p in target.iterdir()) == ["keep"]


@runc_test
async def test_empty_dirs_live_under_the_pods_uid_and_go_with_it(manager, make_pod):
    pod = make_pod(volumes=[{"name": "data", "emptyDir": {}}])
    await manager.reconcile([pod])
    await until(manager, "p1", lambda s: s["phase"] == "Running")
    uid = pod["metadata"]["uid"]
    assert _tree(manager.state_dir) == [
        f"{uid}.json",
        "volumes",
        f"volumes/{uid}",
        f"volumes/{uid}/data",
    ]
    await manager.reconcile([])
    assert _tree(manager.state_dir) == ["volumes"]


@runc_test
async def test_restart_adopts_a_state_file_of_the_old_name_form(
    runtime, images, make_pod, data_dir
):
    pod = make_pod()
    uid = pod["metadata"]["uid"]
    first = PodManager(runtime, images, poll_interval=0.05)
    await first.start()
    await first.reconcile([pod])
    await until(first, "p1", lambda s: s["phase"] == "Running")
    cid = first.find_container("default", "p1", "main")
    await first.close()
    os.rename(
        os.path.join(first.state_dir, f"{uid}.json"),
        os.path.join(first.state_dir, "default_p1.json"),
    )

    second = PodManager(RuncRuntime(data_dir, images=images), images, poll_interval=0.05)
    await second.start()
    try:
        assert second.find_container("default", "p1", "main", uid) == cid
        assert _tree(second.state_dir) == [f"{uid}.json", "volumes"]
    finally:
        await second.close()


@runc_test
async def test_restart_drops_an_old_state_file_with_a_hostile_uid(
    runtime, images, make_pod, tmp_path
):
    target = tmp_path / "host"
    target.mkdir()
    (target / "keep").write_text("x")
    pod = make_pod()
    pod["metadata"]["uid"] = str(target)
    sandbox = await runtime.create_sandbox(pod)
    pm = PodManager(runtime, images)
    state = {"pod": pod, "sandboxId": sandbox, "startTime": 0, "containers": {}}
    _write_json(os.path.join(pm.state_dir, "default_p1.json"), state)
    await pm.start()
    try:
        assert pm.pods_named("default", "p1") == []
        assert _tree(pm.state_dir) == ["volumes"]
        assert await runtime.list() == []  # its sandbox was unowned: removed
        assert sorted(p.name for p in target.iterdir()) == ["keep"]
    finally:
        await pm.close()
