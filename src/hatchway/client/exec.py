"""Exec with a subprocess-like asyncio API.

``run()`` returns a completed :class:`~hatchway.types.ExecResult`; ``create_process()``
returns a :class:`RemoteProcess` with ``stdin``/``stdout``/``stderr``, ``write_eof()``,
``resize()``, ``wait()`` and ``returncode``. The transport is chosen as kubectl 1.32
does: WebSocket (``v5.channel.k8s.io``) first, SPDY/3.1 only when the upgrade itself is
refused. The same code works against a real Kubernetes API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hatchway.client import paths, pods
from hatchway.errors import ExecError
from hatchway.rest import RestClient
from hatchway.types import ExecOptions, ExecResult

if TYPE_CHECKING:
    from hatchway.session.client import ClientSession
    from hatchway.transport.base import Stream

log = logging.getLogger(__name__)


async def open_session(
    rest: RestClient,
    namespace: str,
    pod: str,
    options: ExecOptions,
    *,
    transport: str = "auto",
) -> ClientSession:
    """Upgrade, open the streams, and return the session (WebSocket first, then SPDY)."""
    # Imported when an exec is asked for (the other commands never need them); the
    # session after the 101, while the server starts the command (see session.upgrade).
    from hatchway.session import upgrade

    options = options.normalised()
    path = paths.pod_path(namespace, pod, options.action)
    conn = await upgrade.dial(rest, path, options, transport=transport)
    from hatchway.session.client import ClientSession

    session = ClientSession(conn, options)
    try:
        await session.start()
    except BaseException:
        conn.abort()
        raise
    return session


class StreamReader:
    """Output of the remote process: ``read()``, ``readexactly``-free, ``read_all``."""

    def __init__(self, stream: Stream | None) -> None:
        self._stream = stream

    async def read(self, n: int = 65536) -> bytes:
        if self._stream is None:
            return b""
        return await self._stream.read(n)

    async def read_views(self, n: int = 1 << 20) -> list[bytes | memoryview]:
        """Up to ``n`` bytes as the read-only buffers they arrived in, without the copy
        that joining them into one ``bytes`` costs (for ``os.writev``); ``[]`` at EOF."""
        if self._stream is None:
            return []
        read_views = getattr(self._stream, "read_views", None)
        if read_views is None:  # a Stream without a chunk queue
            data = await self._stream.read(n)
            return [data] if data else []
        return await read_views(n)  # type: ignore[no-any-return]

    async def read_all(self, limit: int = 1 << 30) -> bytes:
        if self._stream is None:
            return b""
        return await self._stream.read_all(limit)


class StreamWriter:
    """Input of the remote process."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    async def write(self, data: bytes) -> None:
        await self._session.write_stdin(data)

    async def write_eof(self) -> None:
        await self._session.close_stdin()


class RemoteProcess:
    """A command running in a container, shaped like asyncio's Process."""

    def __init__(self, session: ClientSession, command: Sequence[str], container: str = "") -> None:
        self._session = session
        self.command = list(command)
        #: The container it runs in (the chosen one when none was asked for).
        self.container = container
        self.stdin = StreamWriter(session)
        self.stdout = StreamReader(session.stdout)
        self.stderr = StreamReader(session.stderr)
        self.returncode: int | None = None
        self.protocol = session.version

    async def write_eof(self) -> None:
        await self.stdin.write_eof()

    async def resize(self, width: int, height: int) -> None:
        await self._session.resize(width, height)

    async def wait(self, *, check: bool = False, timeout: float | None = None) -> int:
        """The exit code. Raises RemoteCommandError when the server reported a failure
        without one; with ``check``, :class:`~hatchway.errors.ExecError` for a non-zero
        code (without the output, which the caller read). After ``timeout`` seconds
        ``TimeoutError``: the command keeps running, and ``wait()`` may be called again
        (or :meth:`terminate`), as with ``subprocess.Popen.wait``."""
        if self.returncode is None:
            async with asyncio.timeout(timeout):
                self.returncode = await self._session.wait()  # shielded: a timeout keeps it
        if check and self.returncode != 0:
            raise ExecError(self.command, self.returncode)
        return self.returncode

    async def close(self) -> None:
        await self._session.close()

    def terminate(self) -> None:
        """Drop the session: the server kills the remote process tree."""
        self._session.conn.abort()

    async def __aenter__(self) -> RemoteProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def choose_container(rest: RestClient, namespace: str, pod: str) -> str:
    """The container kubectl execs into without ``-c``: the pod is read (a completed one
    is :class:`~hatchway.client.pods.CompletedPodError`), then its default-container
    annotation, else its first container (the notice kubectl prints is logged)."""
    found = await rest.get(paths.pod_path(namespace, pod))
    pods.check_pod_active(found)
    container, notice = pods.default_container(found, None)
    if notice:
        log.info("%s", notice)
    return container


async def create_process(
    rest: RestClient,
    namespace: str,
    pod: str,
    command: Sequence[str],
    *,
    container: str = "",
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    transport: str = "auto",
) -> RemoteProcess:
    """Start ``command`` in ``container`` of ``pod``; without a container, in the one
    kubectl would choose (:func:`choose_container`: one more request, as kubectl makes)."""
    if not container:
        container = await choose_container(rest, namespace, pod)
    options = ExecOptions(tuple(command), container, stdin, stdout, stderr, tty)
    session = await open_session(rest, namespace, pod, options, transport=transport)
    return RemoteProcess(session, command, container)


async def run(
    rest: RestClient,
    namespace: str,
    pod: str,
    command: Sequence[str],
    *,
    container: str = "",
    input: bytes | None = None,
    check: bool = False,
    tty: bool = False,
    transport: str = "auto",
) -> ExecResult:
    """Run ``command`` to completion and collect its output."""
    process = await create_process(
        rest,
        namespace,
        pod,
        command,
        container=container,
        stdin=input is not None,
        tty=tty,
        transport=transport,
    )
    async with process:

        async def feed() -> None:
            if input is not None:
                if input:
                    await process.stdin.write(input)
                await process.stdin.write_eof()

        feeder = asyncio.ensure_future(feed())
        out, err = await asyncio.gather(process.stdout.read_all(), process.stderr.read_all())
        with contextlib.suppress(Exception):
            await feeder
        code = await process.wait()
    result = ExecResult(list(command), code, out, err)
    if check and code != 0:
        raise ExecError(list(command), code, out, err)
    return result
