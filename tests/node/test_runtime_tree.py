"""The process-lifetime contract in real runc containers (issue 10, items 2 and 3): a
killed exec leaves no process (background, setsid'd) and no zombie in the container; the
exec helper kills what it started when its agent dies; a new agent kills what an earlier
one left; an exec that ends normally keeps what the user backgrounded; tini keeps exit
codes and the TTY as they were."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from hatchway.node.runtime import RuncRuntime
from hatchway.types import ExecOptions

from .conftest import SCALE, needs_runc
from .test_runtime_exec import _procs_in

pytestmark = [needs_runc, pytest.mark.runc]


@pytest.fixture
async def cid(runtime: RuncRuntime, make_pod) -> str:
    pod = make_pod()
    sandbox = await runtime.create_sandbox(pod)
    cid = await runtime.create_container(pod, pod["spec"]["containers"][0], sandbox_id=sandbox)
    await runtime.start(cid)
    return cid


def marker() -> str:
    """A sleep duration no other test uses: the process is found by it from the host."""
    return str(random.randrange(3_000_000, 4_000_000))


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid), None if gone. Own helpers, not the runtime's: the test must not
    trust the code it checks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _pid_ns(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return 0


def sleeping(seconds: str) -> list[int]:
    """Host pids of live ``sleep SECONDS`` processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        info = _stat(int(entry))
        if argv[:2] == [b"sleep", seconds.encode()] and info is not None and info[0] != "Z":
            found.append(int(entry))
    return found


def zombies_in(init_pid: int) -> list[tuple[int, int, str]]:
    """Zombies in the PID namespace of the container whose init is ``init_pid`` that the
    container must reap: (pid, ppid, comm). One whose parent is outside (a tini whose
    helper died, re-parented to the host's init) is the host's to reap, not stuck."""
    ns = _pid_ns(init_pid)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_ns(int(entry)) == ns:
            info = _stat(int(entry))
            if info is not None and info[0] == "Z" and _pid_ns(info[1]) == ns:
                found.append((int(entry), info[1], _comm(int(entry))))
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


async def until(predicate, timeout: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


async def drain(read) -> bytes:  # type: ignore[no-untyped-def]
    out = bytearray()
    while chunk := await read():
        out += chunk
    return bytes(out)


async def test_exec_runs_under_tini_and_ps_shows_the_command(runtime, cid):
    proc = await runtime.exec(
        cid, ExecOptions(("ps", "-o", "pid,ppid,args"), stdin=False, tty=False)
    )
    out = await drain(proc.read_stdout)
    assert await proc.wait() == 0
    assert proc.init
    lines = out.decode().splitlines()
    assert any(line.split()[2:] == ["ps", "-o", "pid,ppid,args"] for line in lines[1:]), out
    assert any("hatchway-init -s -- ps" in line for line in lines), out


async def test_setsid_double_forked_child_is_killed(runtime, cid):
    seconds = marker()
    proc = await runtime.exec(
        cid,
        ExecOptions(("sh", "-c", f"setsid sh -c 'sleep {seconds} &'; cat"), stdin=True, tty=False),
    )
    assert await until(lambda: sleeping(seconds)), "the setsid'd sleep did not start"
    await proc.kill()
    assert await proc.wait() == 137
    assert sleeping(seconds) == []


@pytest.mark.parametrize("tty", [False, True])
async def test_killed_sessions_leave_no_zombies_in_the_container(runtime, cid, tty):
    init_pid = (await runtime.state(cid)).pid
    markers = []
    for _ in range(3):
        n = marker()
        markers.append(n)
        script = f"sleep {n} & sleep {n} & (sleep {n} &); setsid sh -c 'sleep {n} &'; cat"
        proc = await runtime.exec(cid, ExecOptions(("sh", "-c", script), stdin=True, tty=tty))
        assert await until(lambda n=n: len(sleeping(n)) == 4)
        await proc.kill()
        await drain(proc.read_stdout)
        assert await proc.wait() == 137
    await asyncio.sleep(0.2)  # a zombie would stay: the container's init does not reap
    assert zombies_in(init_pid) == []
    assert [n for n in markers if sleeping(n)] == []


async def test_normal_exit_keeps_what_the_user_backgrounded(runtime, cid):
    seconds = marker()
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", f"sleep {seconds} >/dev/null 2>&1 &"), stdin=False, tty=False)
    )
    await drain(proc.read_stdout)
    assert await proc.wait() == 0
    await proc.close()
    await asyncio.sleep(0.2)
    assert len(sleeping(seconds)) == 1  # Kubernetes semantics: it keeps running


@pytest.mark.parametrize("tty", [False, True])
async def test_death_by_signal_is_128_plus_n(runtime, cid, tty):
    proc = await runtime.exec(cid, ExecOptions(("sh", "-c", "kill -TERM $$"), stdin=False, tty=tty))
    await drain(proc.read_stdout)
    assert await proc.wait() == 143


async def test_tty_exec_is_interactive_with_resize_and_exit_code(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("sh",), stdin=True, tty=True))
    proc.resize(91, 33)
    await proc.write_stdin(b"stty size; tty; exit 5\n")
    out = await drain(proc.read_stdout)
    assert await proc.wait() == 5
    assert b"33 91" in out
    assert b"/dev/pts/" in out


async def test_the_helper_kills_what_it_started_when_the_agent_is_killed(runtime, cid):
    seconds = marker()
    agent = _agent(runtime, cid, f"sleep {seconds} & cat")
    try:
        agent.stdout.readline()
        assert await until(lambda: sleeping(seconds))
        agent.kill()  # SIGKILL: the helper reads EOF on its job socket
        agent.wait()
        assert await until(lambda: not sleeping(seconds)), "the exec outlived its agent"
        init_pid = (await runtime.state(cid)).pid
        await asyncio.sleep(0.2)
        assert zombies_in(init_pid) == []
    finally:
        agent.kill()
        agent.wait()


async def test_a_new_agent_kills_what_a_killed_agent_and_helper_left(runtime, cid):
    seconds = marker()
    script = f"sleep {seconds} & setsid sh -c 'sleep {seconds} &'; sleep {seconds}"
    agent = _agent(runtime, cid, script, stdin=False)
    try:
        root, helper = (int(w) for w in agent.stdout.readline().split())
        assert await until(lambda: len(sleeping(seconds)) == 3)
        os.kill(helper, signal.SIGKILL)
        agent.kill()
        agent.wait()
        await asyncio.sleep(0.2)
        assert len(sleeping(seconds)) == 3  # nobody left to kill them
        init_pid = (await runtime.state(cid)).pid
        from hatchway.node.runtime_tree import leftover_roots

        assert [r.pid for r in leftover_roots(init_pid)] == [root]
        assert await RuncRuntime(runtime.root_dir).kill_leftover_execs() == 1
        assert sleeping(seconds) == []
        await asyncio.sleep(0.2)
        assert zombies_in(init_pid) == []
        assert os.listdir(runtime.execs_dir) == []
    finally:
        agent.kill()
        agent.wait()


async def test_a_new_agent_kills_the_session_of_an_exec_whose_root_exited(runtime, cid):
    # stdin's last holders die with agent and helper: cat reads EOF and exits, and tini
    # with it, before anyone can stop the tree. The exec record still names the session.
    seconds = marker()
    agent = _agent(runtime, cid, f"sleep {seconds} & cat", stdin=True)
    try:
        _, helper = (int(w) for w in agent.stdout.readline().split())
        assert await until(lambda: len(sleeping(seconds)) == 1)
        os.kill(helper, signal.SIGKILL)
        agent.kill()
        agent.wait()
        await asyncio.sleep(0.3)
        assert len(sleeping(seconds)) == 1
        assert await RuncRuntime(runtime.root_dir).kill_leftover_execs() == 1
        assert sleeping(seconds) == []
    finally:
        agent.kill()
        agent.wait()


async def test_an_exec_that_ended_normally_is_no_leftover(runtime, cid):
    # What earlier tests left in this node's containers is not this test's (a killed
    # exec whose cgroup was still emptying is the sweep's, by design).
    await runtime.kill_leftover_execs()
    seconds = marker()
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", f"sleep {seconds} >/dev/null 2>&1 &"), stdin=False, tty=False)
    )
    assert await proc.wait() == 0
    assert await runtime.kill_leftover_execs() == 0
    assert len(sleeping(seconds)) == 1


async def test_an_exec_that_ended_before_its_start_returned_is_no_leftover(
    runtime, cid, monkeypatch
):
    # Under load a quick command can exit before the runtime's exec() returns; what it
    # left in its cgroup is still a normal end's (CI saw the sweep kill it).
    from hatchway.node import runtime as runtime_module

    real = runtime_module.start_exec

    async def slow_start(*args, **kwargs):
        proc = await real(*args, **kwargs)
        await proc._exited.wait()
        return proc

    monkeypatch.setattr(runtime_module, "start_exec", slow_start)
    await runtime.kill_leftover_execs()
    seconds = marker()
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", f"sleep {seconds} >/dev/null 2>&1 &"), stdin=False, tty=False)
    )
    assert proc.returncode == 0
    assert await proc.wait() == 0
    assert await runtime.kill_leftover_execs() == 0
    assert len(sleeping(seconds)) == 1


async def test_what_a_normal_end_left_keeps_its_cgroup_until_it_is_empty(runtime, cid):
    seconds = marker()
    proc = await runtime.exec(
        cid,
        ExecOptions(
            ("sh", "-c", f"setsid sleep {seconds} >/dev/null 2>&1 &"), stdin=False, tty=False
        ),
    )
    cgroup = proc.cgroup
    assert cgroup is not None
    assert await proc.wait() == 0
    await proc.close()
    (survivor,) = sleeping(seconds)
    assert survivor in (_procs_in(cgroup) or set())
    assert await RuncRuntime(runtime.root_dir).kill_leftover_execs() == 0
    assert sleeping(seconds) == [survivor] and _procs_in(cgroup) is not None
    os.kill(survivor, signal.SIGKILL)
    assert await until(lambda: not sleeping(seconds))
    assert await RuncRuntime(runtime.root_dir).kill_leftover_execs() == 0
    assert _procs_in(cgroup) is None, "an empty exec cgroup outlived the sweep"
    assert os.listdir(runtime.execs_dir) == []


_AGENT = r"""
import asyncio, sys
from hatchway.node import runtime_exec
from hatchway.node.runtime import RuncRuntime
from hatchway.types import ExecOptions

async def main():
    rt = RuncRuntime(sys.argv[1])
    stdin = sys.argv[4] == "stdin"
    proc = await rt.exec(sys.argv[2], ExecOptions(("sh", "-c", sys.argv[3]), stdin=stdin))
    print(proc.pid, runtime_exec._HELPER._proc.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _agent(
    runtime: RuncRuntime, cid: str, script: str, stdin: bool = True
) -> subprocess.Popen[bytes]:
    """A stand-in node agent in a process of its own, holding one exec of ``script``."""
    return subprocess.Popen(
        [sys.executable, "-c", _AGENT, runtime.root_dir, cid, script, "stdin" * stdin or "-"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )


def test_resolves_in_follows_symlinks_inside_the_root(tmp_path):
    from hatchway.node.runtime_exec import resolves_in

    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"")
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("/bin/busybox")  # absolute: inside the root
    (root / "bin" / "data").write_bytes(b"")
    (root / "bin" / "loop").symlink_to("loop")
    (root / "bin" / "out").symlink_to("/etc/passwd")  # the host's, not the container's
    assert resolves_in(str(root), "sh", "/usr/bin:/bin", "/")
    assert resolves_in(str(root), "/bin/sh", "", "/")
    assert resolves_in(str(root), "../bin/sh", "", "/bin")
    assert not resolves_in(str(root), "data", "/bin", "/")  # not executable
    assert not resolves_in(str(root), "nope", "/bin", "/")
    assert not resolves_in(str(root), "loop", "/bin", "/")
    assert not resolves_in(str(root), "out", "/bin", "/")
    assert not resolves_in(str(root), "sh", "bin:.", "/")  # relative PATH: runc decides


def test_a_recycled_root_pid_finds_nothing():
    from hatchway.node.runtime_tree import process_tree, stat

    child = subprocess.Popen(["sleep", "30"])
    try:
        info = stat(child.pid)
        assert info is not None
        assert process_tree(child.pid, info[3]) == [child.pid]
        # The same PID, started at another time: someone else's process now.
        assert process_tree(child.pid, info[3] - 1) == []
        assert process_tree(child.pid, info[3] + 1) == []
    finally:
        child.kill()
        child.wait()
