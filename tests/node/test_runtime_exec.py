"""exec in real runc containers: pipes, pty, exit codes, throughput, kill, edge cases."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from hatchway.node.runtime import ContainerNotRunningError, RuncRuntime
from hatchway.node.runtime_exec import ExecProcess, process_tree
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


async def drain(read) -> bytes:
    out = bytearray()
    while chunk := await read():
        out += chunk
    return bytes(out)


async def run(
    rt: RuncRuntime, cid: str, argv: list[str], *, env=None, cwd=None, **flags
) -> tuple[int, bytes, bytes]:
    flags.setdefault("stdin", False)
    flags.setdefault("tty", False)
    proc = await rt.exec(cid, ExecOptions(tuple(argv), **flags), env=env, cwd=cwd)
    out, err = await asyncio.gather(drain(proc.read_stdout), drain(proc.read_stderr))
    async with asyncio.timeout(10 * SCALE):
        return await proc.wait(), out, err


async def test_echo_hi(runtime, cid):
    assert await run(runtime, cid, ["echo", "hi"]) == (0, b"hi\n", b"")


@pytest.mark.parametrize("code", [0, 1, 42])
async def test_exit_codes(runtime, cid, code):
    assert (await run(runtime, cid, ["sh", "-c", f"exit {code}"]))[0] == code


async def test_stderr_is_separate(runtime, cid):
    result = await run(runtime, cid, ["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert result == (0, b"out\nout2\n", b"err\n")


async def test_env_and_cwd(runtime, cid):
    result = await run(runtime, cid, ["sh", "-c", "echo $FOO; pwd"], env={"FOO": "bar"}, cwd="/tmp")
    assert result == (0, b"bar\n/tmp\n", b"")


async def test_killed_from_outside_reports_137(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("sleep", "1000"), stdin=False, tty=False))
    assert proc.pid > 0
    os.kill(proc.pid, 9)
    await drain(proc.read_stdout)
    await drain(proc.read_stderr)
    async with asyncio.timeout(5 * SCALE):
        assert await proc.wait() == 137


@pytest.mark.parametrize("tty", [False, True])
async def test_missing_binary_is_127_with_the_runtime_message(runtime, cid, tty):
    code, out, err = await run(runtime, cid, ["nope"], tty=tty)
    assert (code, out, err) == (127, b"", b"")


async def test_missing_binary_message(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("nope",), stdin=False, tty=False))
    assert await proc.wait() == 127
    assert proc.error_message is not None
    assert 'exec: "nope": executable file not found in $PATH' in proc.error_message
    assert proc.pid == 0


async def test_not_executable_is_126(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("/etc",), stdin=False, tty=False))
    assert await proc.wait() == 126
    assert "permission denied" in (proc.error_message or "")


async def test_stdin_64_mib_counted_inside_with_eof(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("wc", "-c"), stdin=True, tty=False))
    block = b"x" * (1 << 20)

    async def feed():
        for _ in range(64):
            await proc.write_stdin(block)
        await proc.close_stdin()

    _, out, err = await asyncio.gather(feed(), drain(proc.read_stdout), drain(proc.read_stderr))
    assert await proc.wait() == 0
    assert out.strip() == str(64 << 20).encode() and err == b""


@pytest.mark.slow
async def test_256_mib_through_stdout_verified_by_sha256(runtime, cid):
    proc = await runtime.exec(
        cid, ExecOptions(("dd", "if=/dev/zero", "bs=64k", "count=4096"), stdin=False, tty=False)
    )
    digest = hashlib.sha256()
    total = 0
    start = time.monotonic()
    while chunk := await proc.read_stdout(256 * 1024):
        digest.update(chunk)
        total += len(chunk)
    elapsed = time.monotonic() - start
    assert b"4096+0 records out" in await drain(proc.read_stderr)
    assert await proc.wait() == 0
    assert total == 256 << 20
    expected = hashlib.sha256()
    zeros = bytes(1 << 20)
    for _ in range(256):
        expected.update(zeros)
    assert digest.hexdigest() == expected.hexdigest()
    print(f"256 MiB via exec stdout: {elapsed:.2f} s, {256 / elapsed:.0f} MiB/s")


async def test_wait_does_not_need_an_unread_empty_stream(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("sh", "-c", "seq 1 1000"), stdin=False, tty=False))
    out = await drain(proc.read_stdout)
    async with asyncio.timeout(5 * SCALE):
        assert await proc.wait() == 0  # stderr never read, but empty
    assert len(out.split()) == 1000


async def test_tty_resize_is_seen_by_stty(runtime, cid):
    proc = await runtime.exec(cid, ExecOptions(("sh",), stdin=True, tty=True))
    proc.resize(123, 45)
    await proc.write_stdin(b"stty size; exit 7\n")
    out = await drain(proc.read_stdout)
    assert b"45 123" in out
    assert await proc.read_stderr() == b""
    assert await proc.wait() == 7
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "sleep 0.2; stty size"), stdin=False, tty=True)
    )
    proc.resize(80, 24)
    assert await drain(proc.read_stdout) == b"24 80\r\n"
    assert await proc.wait() == 0


async def test_tty_resize_while_running_sends_sigwinch(runtime, cid):
    proc = await runtime.exec(
        cid,
        ExecOptions(
            ("sh", "-c", "trap 'stty size' WINCH; echo ready; until read x; do :; done"),
            stdin=True,
            tty=True,
        ),
    )
    seen = b""
    while b"ready" not in seen:
        seen += await proc.read_stdout()
    proc.resize(80, 20)
    while b"20 80" not in seen:
        seen += await proc.read_stdout()
    await proc.write_stdin(b"done\n")
    await drain(proc.read_stdout)
    assert await proc.wait() == 0


async def test_kill_leaves_no_process_of_the_exec(runtime, cid):
    proc = await runtime.exec(
        cid,
        ExecOptions(
            ("sh", "-c", "sleep 1000 & sleep 1000 & (sleep 1000 &); sleep 1000"),
            stdin=True,
            tty=False,
        ),
    )
    for _ in range(100):
        tree = process_tree(proc.pid)
        if len(tree) >= 4:
            break
        await asyncio.sleep(0.02)
    assert len(tree) >= 4, tree  # sh (or its last sleep) and three background sleeps
    start = time.monotonic()
    await proc.kill()
    assert time.monotonic() - start < 1 * SCALE
    assert all(_zombie(p) for p in tree)
    assert await proc.wait() == 137
    assert process_tree(proc.pid) == []


async def test_tty_kill(runtime, cid):
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "sleep 1000 & sleep 1000"), stdin=True, tty=True)
    )
    await asyncio.sleep(0.2)
    tree = process_tree(proc.pid)
    assert len(tree) >= 2
    await proc.kill()
    await drain(proc.read_stdout)
    assert await proc.wait() == 137
    assert all(_zombie(p) for p in tree)


def _zombie(pid: int) -> bool:
    """Gone, or dead and waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("tty", [False, True])
async def test_background_child_holding_stdout_does_not_hang(runtime, cid, tty):
    start = time.monotonic()
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "sleep 100 & echo hi"), stdin=False, tty=tty)
    )
    async with asyncio.timeout(5 * SCALE):
        out = await drain(proc.read_stdout)
        await drain(proc.read_stderr)
        assert await proc.wait() == 0
    assert out.strip() == b"hi"
    assert time.monotonic() - start < 3 * SCALE


async def test_no_output_lost_before_wait(runtime, cid):
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "seq 1 20000; echo end >&2"), stdin=False, tty=False)
    )
    code_task = asyncio.ensure_future(proc.wait())
    out, err = await asyncio.gather(drain(proc.read_stdout), drain(proc.read_stderr))
    assert await code_task == 0
    assert out.split(b"\n")[-2] == b"20000" and len(out.split()) == 20000
    assert err == b"end\n"


async def test_exec_into_an_exited_container_fails_clearly(runtime, make_pod):
    pod = make_pod(containers=[{"name": "c", "image": "busybox", "command": ["true"]}])
    sandbox = await runtime.create_sandbox(pod)
    cid = await runtime.create_container(pod, pod["spec"]["containers"][0], sandbox_id=sandbox)
    with pytest.raises(ContainerNotRunningError, match="not running"):
        await runtime.exec(
            cid, ExecOptions(("echo",), stdin=False, tty=False)
        )  # created, not started
    await runtime.start(cid)
    await runtime.wait_exit(cid, timeout=10 * SCALE)
    with pytest.raises(ContainerNotRunningError, match=r"container c is not running \(exited\)"):
        await runtime.exec(cid, ExecOptions(("echo",), stdin=False, tty=False))


async def test_stdout_not_wanted_goes_nowhere(runtime, cid):
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "echo x; echo y >&2"), stdin=False, tty=False, stdout=False)
    )
    assert await proc.read_stdout() == b""
    assert await drain(proc.read_stderr) == b"y\n"
    assert await proc.wait() == 0


async def test_many_execs_leave_no_fds_or_files(runtime, cid):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        assert (await run(runtime, cid, ["true"], stdin=True))[0] == 0
    proc: ExecProcess = await runtime.exec(cid, ExecOptions(("cat",), stdin=True, tty=True))
    await proc.close()
    assert len(os.listdir("/proc/self/fd")) <= before + 1


@needs_runc
def test_exec_under_uvloop(tmp_path):
    """The node agent runs on uvloop: pipes, pty and kill must work there too."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list:
        rt = RuncRuntime(str(tmp_path / "data"))
        pod = {"metadata": {"name": "u", "uid": "u"}, "spec": {"containers": []}}
        results = []
        try:
            sandbox = await rt.create_sandbox(pod)
            c = {"name": "c", "image": "busybox", "command": ["sleep", "1000"]}
            cid = await rt.create_container(pod, c, sandbox_id=sandbox)
            await rt.start(cid)
            for tty in (False, True):
                proc = await rt.exec(
                    cid, ExecOptions(("sh", "-c", "read x; echo got $x"), stdin=True, tty=tty)
                )
                await proc.write_stdin(b"it\n")
                results.append((await drain(proc.read_stdout)).splitlines()[-1])
                results.append(await proc.wait())
            proc = await rt.exec(cid, ExecOptions(("sleep", "100"), stdin=False, tty=False))
            await proc.kill()
            results.append(await proc.wait())
        finally:
            for st in await rt.list():
                await rt.delete(st.id, force=True)
        return results

    async def bounded() -> list:
        async with asyncio.timeout(30 * SCALE):
            return await scenario()

    assert uvloop.run(bounded()) == [b"got it", 0, b"got it", 0, 137]


async def test_wait_after_kill_does_not_wait_for_unread_output(runtime, cid):
    # What the endpoint does when the client went away: nobody reads any more.
    proc = await runtime.exec(
        cid, ExecOptions(("dd", "if=/dev/zero", "bs=64k"), stdin=False, tty=False)
    )
    await asyncio.sleep(0.2)  # the pipe is full by now
    await proc.kill()
    async with asyncio.timeout(5 * SCALE):
        assert await proc.wait() == 137


def test_process_tree_leaves_older_processes_alone():
    from hatchway.node.runtime_exec import _stat

    me = os.getpid()
    started = _stat(me)[3]
    assert me in process_tree(me) and me in process_tree(me, started)
    # A PID recycled by an older process must not be taken for the exec'd one.
    assert process_tree(me, started + 1) == []


def _cgroup_of(pid: int, controller: str = "pids") -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
    raise AssertionError(f"no {controller} cgroup for {pid}")


def _procs_in(cgroup: str) -> set[int] | None:
    """The pids in the cgroup directory ``cgroup``; None if it does not exist."""
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return None


async def test_exec_runs_in_a_cgroup_of_its_own_removed_at_the_end(runtime, cid):
    st = await runtime.state(cid)
    proc = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "setsid sleep 1000 & cat"), stdin=True, tty=False)
    )
    try:
        for _ in range(100):
            tree = process_tree(proc.pid)
            if len(tree) >= 3:
                break
            await asyncio.sleep(0.02)
        container = _cgroup_of(st.pid)
        mine = {_cgroup_of(p) for p in tree}
        assert len(mine) == 1 and mine.pop().startswith(container + "/exec-"), (tree, container)
        assert proc.cgroup is not None
        assert set(tree) <= (_procs_in(proc.cgroup) or set())
    finally:
        await proc.kill()
    assert await proc.wait() == 137
    await proc.close()
    assert _procs_in(proc.cgroup) is None, "the exec's cgroup outlived the kill"
    # A normal end with nothing left behind removes the cgroup too.
    done = await runtime.exec(cid, ExecOptions(("true",), stdin=False, tty=False))
    path = done.cgroup
    assert path is not None and _procs_in(path) is not None
    assert await done.wait() == 0
    await done.close()
    assert _procs_in(path) is None, "the exec's cgroup outlived a normal end"


# --- the TTY fast path: keystrokes written without waiting, echo pushed from the callback --


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(10 * SCALE):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_tty_pump_pushes_each_echo_and_stops_reading_while_the_consumer_is_full(runtime, cid):
    """A keystroke written with ``write_stdin_nowait`` comes back as its own chunk
    through ``pump_stdout``'s push, with nothing more written; once push says the
    consumer is full, the pty is not read (its echo stays pending in the kernel) until
    drain returns; then everything arrives, in order, and the pump ends at the exit."""
    proc: ExecProcess = await runtime.exec(cid, ExecOptions(("cat",), stdin=True, tty=True))
    pushed: list[bytes] = []
    full = asyncio.Event()
    drained = asyncio.Event()
    room = [True]

    def push(chunk: bytes) -> bool:
        pushed.append(chunk)
        return room[0]

    async def drain_() -> None:
        full.set()
        await drained.wait()

    pump = asyncio.ensure_future(proc.pump_stdout(65536, push, drain_))
    try:
        for key in b"abc":
            before = len(pushed)
            assert proc.write_stdin_nowait([bytes((key,))]) == 1
            await _until(lambda: len(pushed) > before, "echo")  # noqa: B023
            assert b"".join(pushed[before:]) == bytes((key,))
        room[0] = False
        assert proc.write_stdin_nowait([b"d"]) == 1
        await _until(full.is_set, "push said full")
        assert pushed[-1] == b"d"
        count = len(pushed)
        assert proc.write_stdin_nowait([memoryview(b"ef")]) == 2
        await _until(lambda: proc._stdout.pending() >= 2, "echo pending")
        assert len(pushed) == count, "read while the consumer was full"
        room[0] = True
        drained.set()
        await _until(lambda: b"".join(pushed).endswith(b"ef"), "the rest")
        assert b"".join(pushed) == b"abcdef"
        await proc.write_stdin(b"\r\x04")  # end of line, then EOF: cat exits
        async with asyncio.timeout(10 * SCALE):
            await pump
            assert await proc.wait() == 0
        assert b"".join(pushed).startswith(b"abcdef")
    finally:
        pump.cancel()
        await proc.close()


async def test_write_stdin_nowait_takes_what_a_full_pipe_has_room_for(runtime, cid):
    """Without a reader the pipe fills: write_stdin_nowait then takes part or nothing
    (never waits, never drops); a process that closed its stdin drops, as write_stdin."""
    proc: ExecProcess = await runtime.exec(
        cid, ExecOptions(("sh", "-c", "sleep 1000 <&-"), stdin=True, tty=False)
    )
    try:
        taken = 0
        block = b"x" * 65536
        for _ in range(64):  # the pipe holds 1 MiB at most
            n = proc.write_stdin_nowait([block])
            taken += n
            if n < len(block):
                break
        assert 0 < taken < 64 * len(block)
        assert proc.write_stdin_nowait([block]) == 0
    finally:
        await proc.close()
    assert proc.write_stdin_nowait([b"gone"]) == 4
