"""Hardening by default (issue 9) in real runc: seccomp, no_new_privs, cgroup namespace,
resource limits, rlimits, for the container's own process and for exec'd ones."""

# ruff: noqa: ASYNC230 — quick local reads of /proc and /sys

from __future__ import annotations

import glob
import json
import os
import re
import resource

import pytest

from hatchway.node import runtime_spec, seccomp
from hatchway.node.runtime import RuncRuntime
from hatchway.node.runtime_host import host_capabilities, host_nofile_limit
from hatchway.node.runtime_spec import SpecError
from hatchway.types import ExecOptions

from .conftest import SCALE, needs_runc
from .test_runtime import run_pod

pytestmark = [needs_runc, pytest.mark.runc]

SLEEP = ["sleep", "1000"]


def container(name: str = "main", command: list[str] | None = None, **fields) -> dict:
    return {"name": name, "image": "busybox", "command": command or SLEEP, **fields}


async def sh(rt: RuncRuntime, cid: str, script: str, tty: bool = False) -> tuple[int, str]:
    """Run ``sh -c script`` by exec; (exit code, stdout and stderr together)."""
    proc = await rt.exec(
        cid, ExecOptions(("sh", "-c", f"{{ {script}\n}} 2>&1"), stdin=False, tty=tty)
    )
    out = b""
    while chunk := await proc.read_stdout():
        out += chunk
    while await proc.read_stderr():
        pass
    code = await proc.wait()
    await proc.close()
    return code, out.decode(errors="replace")


def status_of(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def host_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return status_of(f.read())


def cgroup_file(controller: str, cid: str, name: str) -> str:
    with open(f"/sys/fs/cgroup/{controller}/hatchway/{cid}/{name}") as f:
        return f.read().strip()


def max_events(controller: str, cid: str) -> int:
    """``max`` of pids.events over the container's cgroup and its execs' (exec-*)."""
    base = f"/sys/fs/cgroup/{controller}/hatchway/{cid}"
    total = 0
    for path in [base, *glob.glob(f"{base}/exec-*")]:
        with open(f"{path}/pids.events") as f:
            key, value = f.read().split()
        assert key == "max"
        total += int(value)
    return total


def own_cgroup_lines(text: str) -> bool:
    """Every line of /proc/self/cgroup is the container's root, or (pids) the exec's own
    cgroup inside it: nothing of the node's layout."""
    return bool(text) and all(OWN_CGROUP.match(line) for line in text.splitlines())


OWN_CGROUP = re.compile(r"^\d+:[^:]*:/$|^\d+:pids:/exec-[0-9a-f]{16}$")


async def test_container_and_exec_run_under_seccomp_and_no_new_privs(runtime, make_pod):
    _, (cid,) = await run_pod(runtime, make_pod(containers=[container()]))
    main = host_status((await runtime.state(cid)).pid)
    assert (main["Seccomp"], main["NoNewPrivs"]) == ("2", "1")
    for tty in (False, True):
        code, out = await sh(runtime, cid, "cat /proc/self/status", tty=tty)
        exec_status = status_of(out.replace("\r\n", "\n"))
        assert code == 0 and (exec_status["Seccomp"], exec_status["NoNewPrivs"]) == ("2", "1")


async def test_namespaces_and_mounts_are_refused(runtime, make_pod):
    _, (cid,) = await run_pod(runtime, make_pod(containers=[container()]))
    code, out = await sh(runtime, cid, "unshare -Urm true")
    assert code != 0 and "Operation not permitted" in out
    code, out = await sh(runtime, cid, "unshare -m true")
    assert code != 0 and "Operation not permitted" in out
    code, out = await sh(runtime, cid, "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m")
    assert code != 0 and "permission denied" in out.lower()
    code, out = await sh(runtime, cid, "mkdir -p /tmp/d && echo ok")  # ordinary calls work
    assert (code, out) == (0, "ok\n")


async def test_the_container_sees_its_own_cgroup_as_the_root(runtime, make_pod):
    _, (cid,) = await run_pod(runtime, make_pod(containers=[container()]))
    code, out = await sh(runtime, cid, "cat /proc/self/cgroup")
    assert code == 0 and out.strip()
    assert own_cgroup_lines(out), out
    code, out = await sh(runtime, cid, "cat /sys/fs/cgroup/pids/pids.max")
    assert (code, out.strip()) == (0, str(runtime_spec.DEFAULT_PIDS_LIMIT))


async def test_memory_limit_is_set_and_the_oom_killer_enforces_it(runtime, make_pod):
    limits = {"resources": {"limits": {"memory": "32Mi"}}}
    hog = container("hog", ["sh", "-c", "head -c 64m /dev/zero | tail"], **limits)
    _, (cid, hog_id) = await run_pod(runtime, make_pod(containers=[container(**limits), hog]))
    assert cgroup_file("memory", cid, "memory.limit_in_bytes") == "33554432"
    assert cgroup_file("memory", cid, "memory.memsw.limit_in_bytes") == "33554432"
    code, _ = await sh(runtime, cid, "head -c 64m /dev/zero | tail >/dev/null")
    assert code == 137  # the allocating process, not the container, was killed
    assert (await runtime.state(cid)).running
    assert await runtime.wait_exit(hog_id, timeout=30 * SCALE) == 137
    st = await runtime.state(hog_id)
    assert st.oom_killed and not (await runtime.state(cid)).oom_killed


async def test_cpu_quota_is_written(runtime, make_pod):
    limits = {"resources": {"limits": {"cpu": "250m"}}}
    _, (cid,) = await run_pod(runtime, make_pod(containers=[container(**limits)]))
    assert cgroup_file("cpu", cid, "cpu.cfs_quota_us") == "25000"
    assert cgroup_file("cpu", cid, "cpu.cfs_period_us") == "100000"


async def test_a_fork_bomb_stops_at_the_pids_limit_and_the_pod_stays_usable(runtime, make_pod):
    runtime.pids_limit = 40
    pod = make_pod(containers=[container("bomb"), container("other")])
    _, (bomb_id, other) = await run_pod(runtime, pod)
    assert cgroup_file("pids", bomb_id, "pids.max") == "40"
    code, out = await sh(runtime, bomb_id, "while :; do sleep 1000 & done")
    assert code != 0 and "can't fork" in out  # the shell gives up at the limit
    assert 30 < int(cgroup_file("pids", bomb_id, "pids.current")) <= 40
    # Fork failures count where the forking process is: each exec in its own cgroup.
    assert max_events("pids", bomb_id) > 0
    assert await sh(runtime, other, "sleep 0 & wait; echo forked") == (0, "forked\n")


def host_limits(pid: int) -> dict[str, tuple[str, str]]:
    with open(f"/proc/{pid}/limits") as f:
        rows = [line.rsplit(None, 3) for line in f.readlines()[1:]]
    return {r[0].strip(): (r[1], r[2]) for r in rows}


async def test_rlimits_are_the_specs_not_the_agents(runtime, make_pod):
    # Run the shim (and so runc) with other limits than the spec's: what the container
    # gets must come from the spec, not be inherited from the node agent.
    saved = resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, saved[0][1]))
    resource.setrlimit(resource.RLIMIT_CORE, (saved[1][1], saved[1][1]))
    try:
        _, (cid,) = await run_pod(runtime, make_pod(containers=[container()]))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved[0])
        resource.setrlimit(resource.RLIMIT_CORE, saved[1])
    nofile = str(min(host_nofile_limit(), runtime_spec.NOFILE_LIMIT))
    limits = host_limits((await runtime.state(cid)).pid)
    assert limits["Max open files"] == (nofile, nofile)
    assert limits["Max core file size"] == ("0", "0")
    assert await sh(runtime, cid, "ulimit -n; ulimit -Hn; ulimit -c") == (
        0, f"{nofile}\n{nofile}\n0\n",
    )  # fmt: skip


async def test_privileged_and_unconfined_are_not_filtered(runtime, make_pod):
    priv = container("priv", securityContext={"privileged": True})
    unconfined = container("open", securityContext={"seccompProfile": {"type": "Unconfined"}})
    escalate = container("esc", securityContext={"allowPrivilegeEscalation": True})
    _, ids = await run_pod(runtime, make_pod(containers=[priv, unconfined, escalate]))
    got = [host_status((await runtime.state(cid)).pid) for cid in ids]
    assert [(s["Seccomp"], s["NoNewPrivs"]) for s in got] == [("0", "0"), ("0", "1"), ("2", "0")]
    host_mask = sum(1 << runtime_spec.ALL_CAPS.index(c) for c in host_capabilities())
    assert int(got[0]["CapEff"], 16) == host_mask
    script = "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m && echo mounted"
    code, out = await sh(runtime, ids[0], script)
    assert (code, out) == (0, "mounted\n")


async def test_localhost_profile_is_applied(runtime, make_pod):
    os.makedirs(runtime.seccomp_dir, exist_ok=True)
    deny = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "hatchway_no_such_call"], "action": "SCMP_ACT_ERRNO"}
        ],
    }
    with open(os.path.join(runtime.seccomp_dir, "deny-mkdir.json"), "w") as f:
        json.dump(deny, f)
    profile = {"type": "Localhost", "localhostProfile": "deny-mkdir.json"}
    _, (cid,) = await run_pod(
        runtime, make_pod(containers=[container(securityContext={"seccompProfile": profile})])
    )
    code, out = await sh(runtime, cid, "mkdir /tmp/x")
    assert code != 0 and "Operation not permitted" in out
    assert await sh(runtime, cid, "echo fine") == (0, "fine\n")


async def test_runc_accepts_every_name_in_our_tables(runtime, make_pod):
    """runc ignores names libseccomp does not know; the widest default profile (every
    capability's calls, plus a name no kernel has) must still start a container."""
    os.makedirs(runtime.seccomp_dir, exist_ok=True)
    widest = seccomp.default_profile(runtime_spec.ALL_CAPS)
    widest["syscalls"][0]["names"].append("hatchway_no_such_call")
    with open(os.path.join(runtime.seccomp_dir, "widest.json"), "w") as f:
        json.dump(widest, f)
    profile = {"type": "Localhost", "localhostProfile": "widest.json"}
    _, (cid,) = await run_pod(
        runtime, make_pod(containers=[container(securityContext={"seccompProfile": profile})])
    )
    code, out = await sh(runtime, cid, "grep Seccomp: /proc/self/status")
    assert (code, out.split()) == (0, ["Seccomp:", "2"])


async def test_a_missing_localhost_profile_is_a_spec_error(runtime, make_pod):
    profile = {"type": "Localhost", "localhostProfile": "nowhere.json"}
    pod = make_pod(containers=[container(securityContext={"seccompProfile": profile})])
    sandbox = await runtime.create_sandbox(pod)
    with pytest.raises(SpecError, match=r"nowhere\.json"):
        await runtime.create_container(pod, pod["spec"]["containers"][0], sandbox_id=sandbox)


async def test_cgroups_go_with_the_container(runtime, make_pod):
    quick = container("quick", ["true"], resources={"limits": {"memory": "64Mi"}})
    sandbox, (cid, done) = await run_pod(runtime, make_pod(containers=[container(), quick]))
    assert await runtime.wait_exit(done, timeout=30 * SCALE) == 0
    ids = (sandbox, cid, done)
    assert all(glob.glob(f"/sys/fs/cgroup/*/hatchway/{i}") for i in (sandbox, cid))
    for i in ids:
        await runtime.delete(i, force=True)
    assert [p for i in ids for p in glob.glob(f"/sys/fs/cgroup/*/hatchway/{i}")] == []
    assert [p for i in ids for p in glob.glob(f"/sys/fs/cgroup/unified/hatchway/{i}")] == []
