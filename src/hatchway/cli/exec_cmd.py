"""``hatchway exec``: kubectl's semantics, the remote command's exit status.

Imports only what an exec needs, so it starts fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from hatchway.cli import exec_args, startup
from hatchway.cli.errors import report, set_server
from hatchway.cli.terminal import RawTerminal, is_terminal, terminal_size, watch_resizes
from hatchway.cli.timing import Phases

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


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], io: Io) -> None:
    """Read stdin in a thread (it may be a file, a pipe or a terminal): blocking reads
    are the portable way, and ``queue`` bounds what is buffered."""
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


def _write_out(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[n:]


async def _copy_out(reader, fd: int, phases: Phases) -> None:  # type: ignore[no-untyped-def]
    while chunk := await reader.read(256 * 1024):
        phases.mark("first output")
        _write_out(fd, chunk)


async def _copy_in(process, queue: asyncio.Queue[bytes]) -> None:  # type: ignore[no-untyped-def]
    while chunk := await queue.get():
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
    loop = asyncio.get_running_loop()
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
                queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
                reader = threading.Thread(target=_stdin_reader, args=(loop, queue, io), daemon=True)
                reader.start()
                tasks.append(asyncio.ensure_future(_copy_in(process, queue)))
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


def main(argv: Sequence[str]) -> int:
    try:
        args = exec_args.parse_exec_args(argv)
    except exec_args.ExecUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return 1
    if args.help:
        print(exec_args.EXEC_HELP, end="")
        return 0
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


def _run(args: exec_args.ExecArgs) -> int:
    phases = Phases.from_environment()
    try:
        return asyncio.run(_exec(args, phases))
    except Exception as exc:  # every failure is reported, none is a traceback
        return report(exc)
    finally:
        phases.mark("teardown")
        phases.report()
