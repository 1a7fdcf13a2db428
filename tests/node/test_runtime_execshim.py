"""The node's long-lived exec helper: one process for every exec, restarted when it died,
and an exec whose helper died ends (status unknown, 255) instead of hanging."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from hatchway.node import runtime_exec
from hatchway.node import runtime_execshim as execshim
from hatchway.node.runtime import RuncRuntime
from hatchway.types import ExecOptions

from .conftest import SCALE, needs_runc

pytestmark = [needs_runc, pytest.mark.runc]


@pytest.fixture
async def cid(runtime: RuncRuntime, make_pod) -> str:
    pod = make_pod()
    sandbox = await runtime.create_sandbox(pod)
    cid = await runtime.create_container(pod, pod["spec"]["containers"][0], sandbox_id=sandbox)
    await runtime.start(cid)
    return cid


def _helper_pid() -> int:
    proc = runtime_exec._HELPER._proc
    assert proc is not None and proc.poll() is None
    return proc.pid


async def _true(runtime: RuncRuntime, cid: str) -> int:
    proc = await runtime.exec(cid, ExecOptions(("sh", "-c", "exit 7"), stdin=False, tty=False))
    async with asyncio.timeout(10 * SCALE):
        while await proc.read_stdout():
            pass
        return await proc.wait()


async def test_one_helper_serves_every_exec(runtime, cid):
    runtime_exec.start_exec_helper()
    pid = _helper_pid()
    for _ in range(5):
        assert await _true(runtime, cid) == 7
    assert _helper_pid() == pid


async def test_a_dead_helper_is_replaced_on_the_next_exec(runtime, cid):
    runtime_exec.start_exec_helper()
    pid = _helper_pid()
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.05)
    assert await _true(runtime, cid) == 7
    assert _helper_pid() != pid


async def test_an_exec_whose_helper_died_ends_with_255(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("sleep", "1000"), stdin=False, tty=False))
    os.kill(_helper_pid(), signal.SIGKILL)
    async with asyncio.timeout(5 * SCALE):
        assert await proc.wait() == 255
    await proc.kill()  # the process itself outlived the helper: kill() still finds it
    assert runtime_exec.process_tree(proc.pid, proc._start_time) == []


def _children_of(pid: int) -> list[tuple[int, bytes]]:
    """(pid, argv NUL-joined) of the processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(entry), argv))
    return out


@pytest.mark.skipif(not os.access(execshim.HOLDER_BUSYBOX, os.X_OK), reason="no static busybox")
async def test_stdin_is_held_by_the_static_busybox_sleep(runtime, cid):
    """The holder of an exec's stdin (one per session) is the static busybox's sleep,
    not the dynamically linked one: half its private memory (issue 13)."""
    proc = await runtime.exec(cid, ExecOptions(("cat",), stdin=True, tty=False))
    try:
        helper = _helper_pid()
        want = f"{execshim.HOLDER_BUSYBOX}\0sleep\0{execshim.HOLDER_SECONDS}\0".encode()
        async with asyncio.timeout(10 * SCALE):
            while not [p for p, argv in _children_of(helper) if argv == want]:
                await asyncio.sleep(0.02)
    finally:
        await proc.kill()
    async with asyncio.timeout(10 * SCALE):
        while [p for p, argv in _children_of(helper) if argv == want]:
            await asyncio.sleep(0.02)  # let go of with the exec


def test_a_message_for_a_job_finished_in_the_same_round_is_ignored() -> None:
    """select() can report a job's report socket readable (the agent wrote ``eof`` or
    hung up) in the same round as the SIGCHLD that finished the job and closed that
    socket: the late message must be ignored, not crash the helper (which would end
    every other exec with status 255)."""
    import selectors
    import socket

    from hatchway.node import runtime_execshim as shim

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    jobs_a, jobs_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    selector = selectors.DefaultSelector()
    try:
        helper = shim._Helper(jobs_a, selector)
        job = shim._Job(report=theirs, pid_file="/nonexistent", init=False)
        selector.register(theirs, selectors.EVENT_READ, job)
        ours.sendall(b"eof\n")
        helper._done(job, "exit 0\n")  # the SIGCHLD handled first in this round
        helper.take_message(job)  # then the stale readable event
        assert ours.recv(64) == b"exit 0\n"
    finally:
        for sock in (ours, jobs_a, jobs_b):
            sock.close()
        selector.close()
