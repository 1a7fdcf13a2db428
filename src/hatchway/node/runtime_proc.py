"""Short-lived host commands of the runtime (``runc state``, ``mount``, the shim
launcher), run from the event loop the same way on asyncio and on uvloop.

Not ``asyncio.create_subprocess_exec``: uvloop's implementation makes the child's end of
each stdio pipe (and each ``DEVNULL``) inheritable at its own fd number before it
spawns, and libuv only ``dup2``\\ s it onto 0/1/2, so the child and everything it starts
hold a second copy of every stdio fd (``sh -c 'ls -l /proc/$$/fd'`` lists 0-2 and four
more). A descendant that outlives the command -- the shim the launcher forks, a
background child that redirected its own stdio -- then keeps the pipe open: EOF never
comes and ``communicate()`` waits for that descendant's exit. That was the node agent's
hang on uvloop.

Here the child is a :class:`subprocess.Popen` (``close_fds``: it inherits its stdio and
nothing else, on either loop); its output is read with ``add_reader`` and its exit
waited for on a pidfd, so the loop is never blocked. Only this process waits for the
pid: asyncio's child watchers and libuv's SIGCHLD handler reap only children they
started themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Sequence
from typing import IO

#: Output kept of one command's stdout or stderr at most; more is read and dropped
#: (``runc list`` of many containers is a few hundred KiB).
MAX_OUTPUT = 16 << 20
READ_CHUNK = 65536


async def run(argv: Sequence[str], *, timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``argv`` (stdin ``/dev/null``) to its exit: its status (negative: killed by
    that signal), its stdout and its stderr. Raises ``TimeoutError`` once ``timeout``
    seconds passed (the command is then killed and reaped)."""
    proc = _spawn(argv, out=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            out, err = await asyncio.gather(_collect(proc.stdout), _collect(proc.stderr))
            code = await wait(proc)
    except BaseException:
        await _kill(proc)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return code, out, err


async def launch(argv: Sequence[str], *, timeout: float) -> int:
    """Run ``argv`` with its stdio on ``/dev/null`` in a session of its own (a launcher
    that forks a daemon and exits); its exit status. ``TimeoutError`` as :func:`run`."""
    proc = _spawn(argv, out=subprocess.DEVNULL, new_session=True)
    try:
        async with asyncio.timeout(timeout):
            return await wait(proc)
    except BaseException:
        await _kill(proc)
        raise


def _spawn(argv: Sequence[str], *, out: int, new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv``, stdin on ``/dev/null``, stdout and stderr to ``out``. The fork and
    exec happen here, on the loop's thread, as ``create_subprocess_exec``'s do; the
    waiting does not (:func:`wait`)."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        close_fds=True,  # the default, and the point
        start_new_session=new_session,
    )


async def wait(proc: subprocess.Popen[bytes]) -> int:
    """``proc``'s exit status, waited for without blocking the loop: on its pidfd, or
    (no pidfd: Linux before 5.3) in a worker thread."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(proc.wait)
    try:
        if proc.poll() is None:
            await _readable(pidfd)  # readable once the process has exited
    finally:
        os.close(pidfd)
    return proc.wait()  # exited: reaps at once


async def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap ``proc``; the reaping goes on if this is cancelled."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(wait(proc))


async def _collect(pipe: IO[bytes]) -> bytes:
    """What the pipe holds until its end (up to :data:`MAX_OUTPUT`; the rest is read and
    dropped so that the writer is never stuck on a full pipe)."""
    fd = pipe.fileno()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    kept = 0
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            await _readable(fd)
            continue
        if not data:
            return b"".join(chunks)
        if kept < MAX_OUTPUT:
            chunks.append(data[: MAX_OUTPUT - kept])
            kept += len(chunks[-1])


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
