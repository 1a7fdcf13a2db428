"""The runtime's host commands (runtime_proc) on both event loops the node agent runs
on: a command inherits its stdio and nothing else, so a descendant that outlives it does
not hold its output open (uvloop's subprocesses hand the child a second copy of each
stdio fd: that was the node's hang on uvloop); a command past its timeout is killed and
reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hatchway.node import runtime_proc

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def _uvloop_run(coro: Coroutine[Any, Any, Any]) -> Any:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run(coro)


LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": _uvloop_run,
}


def _children() -> list[int]:
    """This process's child pids (zombies included)."""
    pids: list[int] = []
    for task in pathlib.Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _cmdline(pid: int) -> list[str]:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_command_inherits_only_its_stdio(loop: str) -> None:
    code, out, err = LOOPS[loop](runtime_proc.run(["sh", "-c", "ls /proc/$$/fd"], timeout=30))
    assert (code, err) == (0, b"")
    assert sorted(out.split()) == [b"0", b"1", b"2"]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_launched_daemon_inherits_only_dev_null(loop: str, tmp_path: pathlib.Path) -> None:
    listing = tmp_path / "fds"
    script = f"exec 1>{listing}; ls -l /proc/$$/fd; exit 3"
    assert LOOPS[loop](runtime_proc.launch(["sh", "-c", script], timeout=30)) == 3
    fds = {line.split()[-3]: line.split()[-1] for line in listing.read_text().splitlines()[1:]}
    assert fds == {"0": "/dev/null", "1": str(listing), "2": "/dev/null"}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_descendant_that_outlives_the_command_does_not_hold_it(
    loop: str, tmp_path: pathlib.Path
) -> None:
    """The background child redirects its own stdio; the command's output ends when the
    command exits, not when the child does (600 s later)."""
    pid_file = tmp_path / "pid"
    script = f"sleep 600 </dev/null >/dev/null 2>&1 & echo $! >{pid_file}; echo started"
    try:
        result = LOOPS[loop](runtime_proc.run(["sh", "-c", script], timeout=60 * SCALE))
        assert result == (0, b"started\n", b"")
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_command_past_its_timeout_is_killed_and_reaped(loop: str) -> None:
    token = f"600.{uuid.uuid4().int % 10**6:06d}"  # sleep's argument names this one

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await runtime_proc.run(["sleep", token], timeout=0.2)

    LOOPS[loop](scenario())
    assert [pid for pid in _children() if _cmdline(pid) == ["sleep", token]] == []


@pytest.mark.parametrize("loop", LOOPS)
def test_output_and_status(loop: str) -> None:
    script = "head -c 300000 /dev/zero; echo oops >&2; exit 7"
    code, out, err = LOOPS[loop](runtime_proc.run(["sh", "-c", script], timeout=30))
    assert (code, len(out), out.count(0), err) == (7, 300000, 300000, b"oops\n")


@pytest.mark.parametrize("loop", LOOPS)
def test_output_beyond_the_bound_is_read_and_dropped(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_proc, "MAX_OUTPUT", 1000)
    script = "head -c 5000000 /dev/zero"  # more than a pipe holds: the writer must not stick
    code, out, _ = LOOPS[loop](runtime_proc.run(["sh", "-c", script], timeout=60 * SCALE))
    assert (code, out) == (0, bytes(1000))
