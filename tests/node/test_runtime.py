"""Containers in real runc: sandbox, lifecycle, logs, overlay roots, namespaces, restart."""

# ruff: noqa: ASYNC230, ASYNC240 — quick local checks of files the test itself made

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.node.runtime import ContainerNotFoundError, RuncRuntime
from hatchway.node.runtime_image import ImageNotFoundError
from hatchway.types import ExecOptions

from .conftest import SCALE, needs_runc

pytestmark = [needs_runc, pytest.mark.runc]


async def run_pod(rt: RuncRuntime, pod: dict) -> tuple[str, list[str]]:
    sandbox = await rt.create_sandbox(pod)
    ids = []
    for c in pod["spec"]["containers"]:
        cid = await rt.create_container(pod, c, sandbox_id=sandbox)
        await rt.start(cid)
        ids.append(cid)
    return sandbox, ids


async def output(rt: RuncRuntime, cid: str, argv: list[str]) -> tuple[int, bytes]:
    proc = await rt.exec(cid, ExecOptions(tuple(argv), stdin=False, tty=False))
    out = b""
    while chunk := await proc.read_stdout():
        out += chunk
    while await proc.read_stderr():
        pass
    return await proc.wait(), out


async def test_container_runs_and_its_output_goes_to_the_log(runtime, make_pod):
    pod = make_pod(
        containers=[
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo out; echo err >&2; sleep 1000"],
            }
        ]
    )
    sandbox, (cid,) = await run_pod(runtime, pod)
    st = await runtime.state(cid)
    assert st.status == "running" and st.pid > 0 and st.kind == "container"
    assert (st.pod_name, st.container_name, st.sandbox_id) == ("p1", "c", sandbox)
    assert st.rootfs_mode == "overlay"
    for _ in range(50):
        logs = b"".join([c async for c in runtime.read_logs(cid)])
        if b"err" in logs:
            break
        await asyncio.sleep(0.05)
    # Both streams land in one file, but through two pipes (as with containerd): the
    # order between stdout and stderr is not guaranteed, only within each.
    assert sorted(logs.splitlines()) == [b"err", b"out"]
    ids = {s.id for s in await runtime.list()}
    assert {sandbox, cid} <= ids


async def test_exit_code_state_and_follow_logs(runtime, make_pod):
    pod = make_pod(
        containers=[
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; exit 3"],
            }
        ]
    )
    _, (cid,) = await run_pod(runtime, pod)
    async with asyncio.timeout(10 * SCALE):
        followed = b"".join([c async for c in runtime.read_logs(cid, follow=True)])
    assert followed == b"line1\nline2\nline3\n"
    assert await runtime.wait_exit(cid, timeout=10 * SCALE) == 3
    st = await runtime.state(cid)
    assert st.status == "exited" and st.exit_code == 3 and st.finished_at >= st.started_at


async def test_kill_reports_128_plus_signal(runtime, make_pod):
    _, (cid,) = await run_pod(runtime, make_pod())
    await runtime.kill(cid, "KILL")
    assert await runtime.wait_exit(cid, timeout=10 * SCALE) == 137


async def test_start_failure_carries_runc_message(runtime, make_pod):
    pod = make_pod(containers=[{"name": "c", "image": "busybox", "command": ["/no/such/binary"]}])
    _, (cid,) = await run_pod(runtime, pod)
    await runtime.wait_exit(cid, timeout=10 * SCALE)
    st = await runtime.state(cid)
    assert st.status == "exited" and st.exit_code != 0
    assert "/no/such/binary" in st.error


async def test_unknown_image(runtime, make_pod):
    pod = make_pod(containers=[{"name": "c", "image": "nope:1", "command": ["x"]}])
    sandbox = await runtime.create_sandbox(pod)
    with pytest.raises(ImageNotFoundError):
        await runtime.create_container(pod, pod["spec"]["containers"][0], sandbox_id=sandbox)
    assert [s.id for s in await runtime.list()] == [sandbox]


async def test_delete_unmounts_and_removes_everything(runtime, make_pod, data_dir):
    sandbox, (cid,) = await run_pod(runtime, make_pod())
    bundle = os.path.join(runtime.containers_dir, cid)
    log = runtime.log_path(cid)
    assert os.path.ismount(os.path.join(bundle, "rootfs"))
    await runtime.delete(cid, force=True)
    assert not os.path.exists(bundle) and not os.path.exists(log)
    with pytest.raises(ContainerNotFoundError):
        await runtime.state(cid)
    await runtime.delete(sandbox, force=True)
    with open("/proc/self/mounts") as f:
        assert data_dir not in f.read()


async def test_the_image_is_not_modified_by_a_container(runtime, make_pod, images):
    _, (cid,) = await run_pod(runtime, make_pod())
    code, _ = await output(
        runtime, cid, ["sh", "-c", "echo x > /written && rm /bin/cat && echo y > /etc/passwd"]
    )
    assert code == 0
    code, out = await output(runtime, cid, ["sh", "-c", "cat /written; ls /bin/cat"])
    assert out == b"x\n" and code != 0
    root = images.get("busybox").rootfs
    assert not os.path.exists(os.path.join(root, "written"))
    assert os.path.lexists(os.path.join(root, "bin/cat"))
    assert open(os.path.join(root, "etc/passwd")).read().startswith("root:")


async def test_pod_containers_share_network_ipc_uts_but_not_pid(runtime, make_pod):
    pod = make_pod(
        containers=[
            {
                "name": "server",
                "image": "busybox",
                "command": ["sh", "-c", "while true; do echo pong | nc -l -p 8080; done"],
            },
            {"name": "client", "image": "busybox", "command": ["sleep", "1000"]},
        ]
    )
    sandbox, (server, client) = await run_pod(runtime, pod)
    for _ in range(50):
        _, out = await output(runtime, client, ["sh", "-c", "echo ping | nc 127.0.0.1 8080"])
        if out:
            break
        await asyncio.sleep(0.1)
    assert out == b"pong\n"
    spid = (await runtime.state(server)).pid
    cpid = (await runtime.state(client)).pid
    bpid = (await runtime.state(sandbox)).pid
    for ns in ("net", "ipc", "uts"):
        assert os.readlink(f"/proc/{spid}/ns/{ns}") == os.readlink(f"/proc/{cpid}/ns/{ns}")
        assert os.readlink(f"/proc/{bpid}/ns/{ns}") == os.readlink(f"/proc/{cpid}/ns/{ns}")
    assert os.readlink("/proc/self/ns/net") != os.readlink(f"/proc/{cpid}/ns/net")
    assert os.readlink(f"/proc/{spid}/ns/pid") != os.readlink(f"/proc/{cpid}/ns/pid")
    assert (await output(runtime, client, ["hostname"]))[1] == b"p1\n"
    _, links = await output(runtime, client, ["ip", "-o", "link"])
    assert b"lo:" in links and b"UP" in links and b"eth0" not in links


async def test_host_network(runtime, make_pod):
    pod = make_pod(hostNetwork=True)
    _, (cid,) = await run_pod(runtime, pod)
    pid = (await runtime.state(cid)).pid
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")


async def test_security_context_user_readonly_and_privileged(runtime, make_pod):
    pod = make_pod(
        containers=[
            {
                "name": "ro",
                "image": "busybox",
                "command": ["sleep", "1000"],
                "securityContext": {
                    "readOnlyRootFilesystem": True,
                    "runAsUser": 1234,
                    "runAsGroup": 99,
                },
            },
            {
                "name": "priv",
                "image": "busybox",
                "command": ["sleep", "1000"],
                "securityContext": {"privileged": True},
            },
        ]
    )
    _, (ro, priv) = await run_pod(runtime, pod)
    assert (await output(runtime, ro, ["id", "-u"]))[1] == b"1234\n"
    assert (await output(runtime, ro, ["id", "-g"]))[1] == b"99\n"
    code, _ = await output(runtime, ro, ["touch", "/x"])
    assert code != 0
    _, caps = await output(runtime, priv, ["grep", "CapEff", "/proc/self/status"])
    _, default = await output(runtime, ro, ["grep", "CapBnd", "/proc/self/status"])
    assert int(caps.split()[1], 16) > int(default.split()[1], 16)
    code, _ = await output(runtime, priv, ["sh", "-c", "test -c /dev/null && ls /dev | wc -l"])
    assert code == 0


async def test_a_new_runtime_instance_sees_running_and_exited_containers(
    runtime, make_pod, data_dir, images
):
    pod = make_pod(
        containers=[
            {"name": "a", "image": "busybox", "command": ["sleep", "1000"]},
            {"name": "b", "image": "busybox", "command": ["sh", "-c", "exit 5"]},
        ]
    )
    sandbox, (a, b) = await run_pod(runtime, pod)
    await runtime.wait_exit(b, timeout=10 * SCALE)
    again = RuncRuntime(data_dir, images=images)
    states = {s.id: s for s in await again.list()}
    assert states[a].status == "running" and states[sandbox].status == "running"
    assert states[b].status == "exited" and states[b].exit_code == 5
    assert (await output(again, a, ["echo", "still here"]))[1] == b"still here\n"


async def test_copy_fallback_without_overlay(runtime, make_pod, data_dir, images):
    copying = RuncRuntime(data_dir, images=images, overlay=False)
    pod = make_pod()
    sandbox, (cid,) = await run_pod(copying, pod)
    st = await copying.state(cid)
    assert st.rootfs_mode == "copy" and st.running
    code, _ = await output(copying, cid, ["sh", "-c", "echo x > /bin/written"])
    assert code == 0
    assert not os.path.exists(os.path.join(images.get("busybox").rootfs, "bin/written"))
    await copying.delete(cid, force=True)
    await copying.delete(sandbox, force=True)
    assert not os.path.exists(os.path.join(copying.containers_dir, cid))


async def test_an_imported_image_runs_with_its_config(runtime, make_pod, images, tmp_path):
    from .test_runtime_image import docker_save, layer

    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    entries = [("bin", "dir", None), ("bin/busybox", "exec", busybox), ("work", "dir", None)]
    entries += [(f"bin/{a}", "symlink", "busybox") for a in ("sh", "echo", "id", "pwd", "sleep")]
    config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo $GREETING from $(pwd) as $(id -u); sleep 1000"],
        "Env": ["PATH=/bin", "GREETING=hello"],
        "WorkingDir": "/work",
        "User": "1000",
    }
    path = docker_save(str(tmp_path / "app.tar"), [layer(entries, gz=True)], config=config)
    images.import_archive("example.com/app:2", path)
    pod = make_pod(containers=[{"name": "app", "image": "example.com/app:2"}])
    _, (cid,) = await run_pod(runtime, pod)
    for _ in range(50):
        logs = b"".join([c async for c in runtime.read_logs(cid)])
        if logs:
            break
        await asyncio.sleep(0.05)
    assert logs == b"hello from /work as 1000\n"


async def test_delete_copes_with_a_lost_shim(runtime, make_pod):
    """A shim killed from outside (not our doing) must not leave a container behind."""
    import time as _time

    _, (cid,) = await run_pod(runtime, make_pod())
    pid = (await runtime.state(cid)).pid
    shim_runc = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    shim = int(open(f"/proc/{shim_runc}/stat").read().rsplit(")", 1)[1].split()[1])
    os.kill(shim, 9)
    os.kill(shim_runc, 9)
    start = _time.monotonic()
    await runtime.delete(cid, force=True)
    assert _time.monotonic() - start < 5 * SCALE
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(f"/sys/fs/cgroup/memory/hatchway/{cid}")


@pytest.mark.parametrize("cid", ["..", "../logs", "/", "a/b", "", "x\x00y"])
async def test_a_container_id_that_leaves_the_bundles_dir_names_no_container(
    runtime: RuncRuntime, cid: str
) -> None:
    """Issue 9: no id may make the runtime read, write or remove outside containers/."""
    # What ``..`` would find without the guard: the node's own dir passing for a bundle.
    _write_meta(runtime.root_dir)
    with pytest.raises(ContainerNotFoundError):
        await runtime.state(cid)
    with pytest.raises(ContainerNotFoundError):
        await runtime.delete(cid, force=True)
    assert os.path.isdir(runtime.logs_dir) and os.path.isdir(runtime.containers_dir)
    assert os.path.exists(os.path.join(runtime.root_dir, "meta.json"))


def _write_meta(directory: str) -> None:
    import dataclasses
    import json

    from hatchway.node.runtime import ContainerState

    state = ContainerState("x", "container", "created", "default", "p", "u", "c", "busybox")
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(dataclasses.asdict(state), f)
