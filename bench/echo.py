"""Keystroke echo round trip with a TTY: the client runs on a pty (as in a terminal),
``cat`` runs in the container on a remote TTY in canonical mode; we send one byte and
time until the remote line discipline's echo comes back, ``count`` times.

The local pty is put in raw mode first, so an echo can only come from the far end.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import struct
import subprocess
import termios
import time
import tty
from collections.abc import Callable

from bench.measure import MeasureError, _kill, _summary
from bench.peers import Peer

KEY = b"x"


def echo(
    peer: Peer,
    count: int,
    timeout: float,
    window: Callable[[str, int], None] | None = None,
) -> dict[str, float]:
    """p50/p99 of ``count`` keystroke round trips. ``window("start", pid)`` is called
    after the first (start-up) round trip and ``window("end", pid)`` after the last, with
    the client's pid: what happens between them is the keystrokes alone."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl_winsize(master, 40, 120)
    proc = subprocess.Popen(
        peer.argv(["cat"], stdin=True, tty=True),
        env={**peer.env, "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        _roundtrip(master, deadline)  # the first one includes start-up; not counted
        if window is not None:
            window("start", proc.pid)
        times = [_roundtrip(master, deadline) for _ in range(count)]
        if window is not None:
            window("end", proc.pid)
        os.write(master, b"\r\x04")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(1.0, min(10.0, deadline - time.monotonic())))
    finally:
        _kill(proc)
        os.close(master)
    return {**_summary(times), "samples_ms": [round(t * 1000, 4) for t in times]}


def merged(rounds: list[dict[str, object]]) -> dict[str, object]:
    """One cell from the rounds of one peer: percentiles over all their keystrokes (a
    round that failed is the cell when none succeeded)."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    samples = [t / 1000 for r in good for t in r["samples_ms"]]  # type: ignore[attr-defined]
    cell: dict[str, object] = dict(_summary(samples))
    cell["rounds"] = len(good)
    cell["rounds_p50_ms"] = [round(float(r["p50_ms"]), 4) for r in good]  # type: ignore[arg-type]
    return cell


def fcntl_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _roundtrip(master: int, deadline: float) -> float:
    """Send KEY, wait until it comes back; other output (prompts, warnings) is skipped."""
    t0 = time.perf_counter()
    os.write(master, KEY)
    seen = b""
    while KEY not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MeasureError(f"no echo in time; the client printed {seen[-200:]!r}")
        ready, _, _ = select.select([master], [], [], min(left, 1.0))
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the client closed the pty
                data = b""
            if not data:
                raise MeasureError(f"the client exited; it printed {seen[-200:]!r}")
            seen += data
    return time.perf_counter() - t0
