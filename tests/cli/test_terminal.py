"""Raw mode, sizes and SIGWINCH on real ptys."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from hatchway.cli.terminal import (
    RawTerminal,
    is_terminal,
    raw_attributes,
    terminal_size,
    watch_resizes,
)

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 10.0 * SCALE


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def is_raw(mode: list) -> bool:
    lflag, oflag, iflag = mode[3], mode[1], mode[0]
    return (
        not lflag & (termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        and not oflag & termios.OPOST
        and not iflag & (termios.ICRNL | termios.IXON)
        and mode[6][termios.VMIN] == 1
    )


# ----------------------------------------------------------- raw mode, in process


def test_raw_inside_and_restored_after_normal_exit(pty_pair) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    assert not is_raw(before)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    with RawTerminal(slave) as term:
        assert term.active
        assert is_raw(termios.tcgetattr(slave))
        assert is_raw(termios.tcgetattr(master))  # the parent side sees it too
        assert signal.getsignal(signal.SIGTERM) != sigterm_before
    assert not term.active
    assert termios.tcgetattr(slave) == before
    assert signal.getsignal(signal.SIGTERM) == sigterm_before


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_restored_after_exception(pty_pair, exc) -> None:
    _, slave = pty_pair
    before = termios.tcgetattr(slave)
    with pytest.raises(type(exc)), RawTerminal(slave):
        assert is_raw(termios.tcgetattr(slave))
        raise exc
    assert termios.tcgetattr(slave) == before


def test_not_a_terminal_is_a_no_op(tmp_path) -> None:
    with open(tmp_path / "f", "w") as f, RawTerminal(f.fileno()) as term:
        assert not term.active
    r, w = os.pipe()
    try:
        assert not is_terminal(r)
        assert terminal_size(r) is None
    finally:
        os.close(r)
        os.close(w)
    assert not is_terminal(12345)


def test_raw_attributes_match_cfmakeraw(pty_pair) -> None:
    _, slave = pty_pair
    mode = termios.tcgetattr(slave)
    raw = raw_attributes(mode)
    assert raw is not mode and raw[6] is not mode[6]
    assert is_raw(raw)
    assert raw[2] & termios.CSIZE == termios.CS8
    assert mode == termios.tcgetattr(slave)  # the input list is untouched


def test_terminal_size(pty_pair) -> None:
    master, slave = pty_pair
    assert terminal_size(slave) is None  # a fresh pty is 0x0
    set_size(master, 132, 43)
    assert terminal_size(slave) == (132, 43)
    assert is_terminal(slave)


# ------------------------------------------------- raw mode, in a child process

CHILD = r"""
import asyncio, os, signal, sys, time
from hatchway.cli.terminal import RawTerminal

mode = sys.argv[1]
if mode == "handler":
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(3))
if mode == "atexit":
    RawTerminal(0).__enter__()
    print("ready", flush=True)
    byte = os.read(0, 1)  # raw: one byte, no newline needed
    print(byte.hex(), flush=True)
    sys.exit(0)  # without leaving the with block: atexit must restore
elif mode == "asyncio":
    async def main():
        with RawTerminal(0):
            print("ready", flush=True)
            await asyncio.sleep(60)
    asyncio.run(main())
else:
    with RawTerminal(0):
        print("ready", flush=True)
        time.sleep(60)
"""


def spawn(slave: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready, "child said nothing"
    line = proc.stdout.readline()
    assert line, f"child ended: {proc.stderr.read()}"
    return line.strip()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "sig", "code"),
    [
        ("plain", signal.SIGTERM, -signal.SIGTERM),
        ("plain", signal.SIGHUP, -signal.SIGHUP),
        ("handler", signal.SIGTERM, 3),
        ("asyncio", signal.SIGTERM, -signal.SIGTERM),
    ],
)
def test_restored_after_signal_in_child(pty_pair, mode, sig, code) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(master)
    proc = spawn(slave, mode)
    try:
        assert read_line(proc) == "ready"
        assert is_raw(termios.tcgetattr(master))
        proc.send_signal(sig)
        assert proc.wait(TIMEOUT) == code
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert termios.tcgetattr(master) == before


@pytest.mark.timeout(60)
def test_restored_at_exit_and_raw_reads_single_bytes(pty_pair) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(master)
    proc = spawn(slave, "atexit")
    try:
        assert read_line(proc) == "ready"
        os.write(master, b"\x03")  # Ctrl-C is a plain byte in raw mode
        assert read_line(proc) == "03"
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert termios.tcgetattr(master) == before
    # Nothing was echoed back while raw.
    ready, _, _ = select.select([master], [], [], 0.1)
    assert not ready


# --------------------------------------------------------------------- SIGWINCH


async def test_resize_dedup_in_process(pty_pair) -> None:
    master, slave = pty_pair
    set_size(master, 80, 24)
    watcher = watch_resizes(slave)
    try:
        assert await asyncio.wait_for(watcher.__anext__(), TIMEOUT) == (80, 24)
        nxt = asyncio.ensure_future(watcher.__anext__())
        os.kill(os.getpid(), signal.SIGWINCH)  # signal without a change: nothing
        await asyncio.sleep(0.2)
        assert not nxt.done()
        set_size(master, 100, 30)
        os.kill(os.getpid(), signal.SIGWINCH)  # not our controlling tty: signal by hand
        assert await asyncio.wait_for(nxt, TIMEOUT) == (100, 30)
    finally:
        await watcher.aclose()
    # The handler is gone with the last watcher.
    loop = asyncio.get_running_loop()
    assert loop.remove_signal_handler(signal.SIGWINCH) is False


async def test_two_watchers_share_the_signal(pty_pair) -> None:
    master, slave = pty_pair
    set_size(master, 10, 10)
    a, b = watch_resizes(slave, initial=False), watch_resizes(slave)
    try:
        assert await b.__anext__() == (10, 10)
        na = asyncio.ensure_future(a.__anext__())
        nb = asyncio.ensure_future(b.__anext__())
        await asyncio.sleep(0.05)
        set_size(master, 20, 20)
        os.kill(os.getpid(), signal.SIGWINCH)
        assert await asyncio.wait_for(na, TIMEOUT) == (20, 20)
        assert await asyncio.wait_for(nb, TIMEOUT) == (20, 20)
    finally:
        await a.aclose()
        await b.aclose()


WINCH_CHILD = r"""
import asyncio
from hatchway.cli.terminal import watch_resizes

async def main():
    async for cols, rows in watch_resizes(0):
        print(f"size {cols} {rows}", flush=True)

asyncio.run(main())
"""


class SizeLines:
    """The "size C R" lines a child prints on the pty, kept across reads."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.buf = b""

    def next(self, want: int, timeout: float = TIMEOUT) -> list[str]:
        """Wait for ``want`` complete size lines (or the timeout); consume them."""
        deadline = time.monotonic() + timeout
        while True:
            *complete, rest = self.buf.split(b"\n")
            sizes = [ln.decode().strip() for ln in complete if ln.startswith(b"size")]
            if len(sizes) >= want or time.monotonic() > deadline:
                self.buf = rest
                return sizes
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                self.buf += os.read(self.master, 4096)


@pytest.mark.timeout(60)
def test_sigwinch_from_the_kernel_on_a_controlling_pty() -> None:
    pid, master = pty.fork()
    if pid == 0:  # the child: session leader, the pty is its controlling terminal
        try:
            os.execv(sys.executable, [sys.executable, "-c", WINCH_CHILD])
        finally:
            os._exit(127)
    try:
        set_size(master, 80, 24)
        # Whether the child read its first size before or after this one, keep nudging
        # until it reports it (repeats of one size are never printed twice).
        lines = SizeLines(master)
        seen: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not seen and time.monotonic() < deadline:
            os.kill(pid, signal.SIGWINCH)
            seen = lines.next(1, 0.2)
        assert seen == ["size 80 24"]
        set_size(master, 100, 40)  # the kernel sends SIGWINCH to the foreground group
        assert lines.next(1) == ["size 100 40"]
        set_size(master, 100, 40)  # unchanged: no signal, no line
        set_size(master, 120, 50)
        assert lines.next(1) == ["size 120 50"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(master)
