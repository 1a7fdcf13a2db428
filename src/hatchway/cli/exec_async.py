"""``hatchway exec`` on the asyncio client: every transport (WebSocket, then SPDY/3.1),
the ``--reuse`` daemon's sessions, and what the blocking path (cli/exec_blocking.py)
hands back to it (cli/exec_cmd.py decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

from hatchway.cli import exec_args, startup
from hatchway.cli.errors import set_server
from hatchway.cli.fdio import write_all as _write_out
from hatchway.cli.fdio import write_views as _write_views
from hatchway.cli.terminal import RawTerminal, is_terminal, terminal_size, watch_resizes
from hatchway.cli.timing import Phases

#: One read of stdin: a keystroke is what a terminal has, bulk input up to this much
#: (64 KiB: its buffers, and the frames and TLS records made of it, stay below glibc's
#: mmap threshold and are reused from the heap; 256 KiB reads cost more CPU per GiB in
#: page faults than they save in wake-ups, bench/README.md).
STDIN_CHUNK = 64 * 1024


class Io(NamedTuple):
    """The descriptors an exec uses: this process's own, or those a ``--reuse`` client
    passed to the daemon (cli/reuse.py). ``stop`` (the read end of a pipe) wakes the
    stdin reader when the session ends first: a daemon outlives its sessions, and a
    reader left blocked would take the next input of the client's terminal."""

    stdin: int = 0
    stdout: int = 1
    stderr: int = 2
    stop: int | None = None


STDIO = Io()


def _say(io: Io, text: str) -> None:
    _write_out(io.stderr, (text + "\n").encode("utf-8", "replace"))


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` has something to read (or its end). OSError where the loop
    cannot poll it (a regular file, /dev/null: epoll refuses them)."""
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _stdin_chunks(io: Io) -> AsyncIterator[bytes]:
    """``io.stdin``'s input as it comes, ``b""`` last. A pipe, terminal or socket is read from
    the event loop the moment it is readable (one read, so a blocking fd never blocks:
    a keystroke goes out from the callback that saw it, with no thread or queue hop);
    what epoll cannot poll (a regular file) is read in a thread, through a queue of four
    chunks (the bound on what is buffered)."""
    loop = asyncio.get_running_loop()
    fd = io.stdin
    try:
        await _readable(loop, fd)
    except OSError:
        async for chunk in _threaded_chunks(loop, io):
            yield chunk
        return
    while True:
        try:
            chunk = os.read(fd, STDIN_CHUNK)
        except OSError:
            chunk = b""
        yield chunk
        if not chunk:
            return
        await _readable(loop, fd)


async def _threaded_chunks(loop: asyncio.AbstractEventLoop, io: Io) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    threading.Thread(target=_stdin_reader, args=(loop, queue, io), daemon=True).start()
    while chunk := await queue.get():
        yield chunk
    yield b""


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], io: Io) -> None:
    """Blocking reads of ``io.stdin`` in a thread, for what the loop cannot poll; a
    ``stop`` descriptor that becomes readable ends it."""
    fd = io.stdin
    while True:
        try:
            if io.stop is not None:
                import select

                ready, _, _ = select.select([fd, io.stop], [], [])
                if io.stop in ready:
                    return
            chunk = os.read(fd, STDIN_CHUNK)
        except OSError:
            chunk = b""
        try:
            asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
        except (RuntimeError, asyncio.CancelledError, Exception):
            return
        if not chunk:
            return


async def _copy_out(reader, fd: int, phases: Phases) -> None:  # type: ignore[no-untyped-def]
    # The received buffers as they are (no join into one bytes): one writev per read.
    while parts := await reader.read_views(1 << 20):
        phases.mark("first output")
        _write_views(fd, parts)


async def _copy_in(process, io: Io) -> None:  # type: ignore[no-untyped-def]
    async for chunk in _stdin_chunks(io):
        if not chunk:
            break
        await process.stdin.write(chunk)
    await process.stdin.write_eof()


async def _resizes(process, fd: int) -> None:  # type: ignore[no-untyped-def]
    async for width, height in watch_resizes(fd):
        await process.resize(width, height)


async def _exec(args: exec_args.ExecArgs, phases: Phases) -> int:
    from hatchway.client.api import Client

    client = Client.from_kubeconfig(args.kubeconfig or None, context=args.context or None)
    set_server(client.config.server)
    phases.mark("kubeconfig")
    try:
        return await exec_with(client, args, phases)
    finally:
        await client.close()


async def exec_with(  # type: ignore[no-untyped-def]
    client,
    args: exec_args.ExecArgs,
    phases: Phases,
    io: Io = STDIO,
    started: Callable[[Any], None] | None = None,
) -> int:
    """One exec with ``client``, on ``io``; ``started(process)`` once it runs."""
    from hatchway.client import pods

    namespace = args.namespace or client.namespace
    pod = await client.get_pod(args.pod, namespace)
    phases.mark("pod get")
    phases.split("connect", client.rest.connect_seconds, of="pod get")
    pods.check_pod_active(pod)
    container, notice = pods.default_container(pod, args.container or None)
    if notice and not args.quiet:
        _say(io, notice)
    stdin_tty = is_terminal(io.stdin)
    tty, warning = exec_args.resolve_tty(args, stdin_tty)
    if warning and not args.quiet:
        _say(io, warning)
    process = await client.create_process(
        args.pod,
        args.command,
        container=container,
        namespace=namespace,
        stdin=args.stdin,
        stdout=True,
        stderr=not tty,
        tty=tty,
    )
    phases.mark("upgrade")
    startup.resume_collection()  # the imports are done (main paused it)
    if started is not None:
        started(process)
    raw = RawTerminal(io.stdin) if tty else contextlib.nullcontext()
    async with process:
        with raw:
            tasks = []
            if tty:
                size = terminal_size(io.stdin)
                if size:
                    await process.resize(*size)
                tasks.append(asyncio.ensure_future(_resizes(process, io.stdin)))
            if args.stdin:
                tasks.append(asyncio.ensure_future(_copy_in(process, io)))
            try:
                await asyncio.gather(
                    _copy_out(process.stdout, io.stdout, phases),
                    _copy_out(process.stderr, io.stderr, phases),
                )
                phases.mark("first output")  # a command that wrote nothing
                phases.mark("output")
                code = await process.wait()
                phases.mark("exit status")
            finally:
                for task in tasks:
                    task.cancel()
    if code != 0:
        _say(io, f"command terminated with exit code {code}")
    return code


def run(args: exec_args.ExecArgs, phases: Phases) -> int:
    """The exec on the asyncio client; failures raise (cli/exec_cmd.py reports them)."""
    return asyncio.run(_exec(args, phases))
