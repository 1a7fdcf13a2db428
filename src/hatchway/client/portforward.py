"""Port-forward from local listeners to ports of a pod, as ``kubectl port-forward`` does.

:func:`open_port_forward` upgrades ``pods/NAME/portforward`` over SPDY/3.1
(``portforward.k8s.io``, protocol.md 6.3) and listens on the local addresses. Per
accepted local connection it opens, as client-go's ``tools/portforward`` does, an
``error`` stream (half-closed at once) and a ``data`` stream with the same ``port`` and
a per-session ``requestid``; bytes are copied both ways, the local side's EOF becomes
the data stream's FIN, and once the pod's side has ended the error stream's text (if
any) is reported as ``an error occurred forwarding L -> R: TEXT``. The same code works
against a real Kubernetes API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from hatchway.client import paths
from hatchway.errors import ConfigError, ConnectionClosedError, HatchwayError
from hatchway.rest import RestClient

if TYPE_CHECKING:
    from hatchway.transport.base import Connection, Stream

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
#: The most text an error stream may bring (the kubelet writes one line).
MAX_ERROR_TEXT = 64 * 1024
#: kubectl's default ``--address``: both loopbacks, the IPv6 one when there is one.
LOCALHOST = ("127.0.0.1", "::1")
#: Closing, how long the connection handlers get to finish once the connection ended.
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class PortMapping:
    """``local`` (0: any free port) to ``remote``."""

    local: int
    remote: int


def parse_mapping(text: str) -> PortMapping:
    """kubectl's ``[LOCAL:]REMOTE``: ``8080`` is 8080 to 8080, ``:8080`` a free local
    port to 8080, ``5000:8080`` 5000 to 8080. ConfigError otherwise."""
    local_text, colon, remote_text = text.rpartition(":")
    if not colon:
        local_text = remote_text
    try:
        remote = int(remote_text)
        local = int(local_text) if local_text else 0
    except ValueError:
        raise ConfigError(f"invalid port mapping {text!r}: want [LOCAL:]REMOTE") from None
    if not 0 < remote < 65536 or not 0 <= local < 65536:
        raise ConfigError(f"invalid port mapping {text!r}: ports are 1-65535")
    return PortMapping(local, remote)


def parse_addresses(text: str) -> list[str]:
    """``--address``: comma-separated IPs or ``localhost`` (both loopbacks)."""
    found: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "localhost":
            found.extend(a for a in LOCALHOST if a not in found)
            continue
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in item else socket.AF_INET, item)
        except OSError:
            raise ConfigError(f"{item} is not a valid IP") from None
        if item not in found:
            found.append(item)
    if not found:
        raise ConfigError("no address to listen on")
    return found


#: ``on_error(local_port, remote_port, text)``; ``on_connection(remote_port)``.
ErrorCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Listener:
    address: str
    local: int
    remote: int


class PortForwarder:
    """A port-forward session: :attr:`listeners` accept, the connection carries them.
    ``async with`` closes it; :meth:`wait_closed` returns when the server ends it."""

    def __init__(
        self,
        conn: Connection,
        on_error: ErrorCallback | None = None,
        on_connection: Callable[[int], None] | None = None,
    ) -> None:
        self.conn = conn
        self.on_error = on_error
        self.on_connection = on_connection
        self.listeners: list[Listener] = []
        #: Error-stream texts received, as (local, remote, text).
        self.errors: list[tuple[int, int, str]] = []
        self._servers: list[asyncio.Server] = []
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, addresses: Sequence[str], mappings: Sequence[PortMapping]) -> None:
        """Listen for each mapping on each address (a free port for local 0, the same on
        every address). An address that cannot be bound is skipped while another works
        for the mapping, as kubectl does for ``localhost``; OSError otherwise."""
        for mapping in mappings:
            local, bound = mapping.local, 0
            failure: OSError | None = None
            for address in addresses:
                try:
                    server = await asyncio.start_server(
                        self._handler(mapping.remote),
                        host=address,
                        port=local,
                        reuse_address=True,
                    )
                except OSError as exc:
                    failure = failure or exc
                    continue
                self._servers.append(server)
                local = server.sockets[0].getsockname()[1]
                self.listeners.append(Listener(address, local, mapping.remote))
                bound += 1
            if not bound:
                assert failure is not None
                raise OSError(failure.errno, f"unable to listen on port {mapping.local}: {failure}")

    def _handler(
        self, remote: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._forward(remote, reader, writer)
            finally:
                self._tasks.discard(task)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return handle

    async def _forward(
        self, remote: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        local = writer.get_extra_info("sockname")[1]
        if self.on_connection is not None:
            self.on_connection(remote)
        headers = {"port": str(remote), "requestid": str(next(self._ids))}
        try:
            error = await self.conn.open_stream({"streamtype": "error", **headers})
            await error.write_eof()
            data = await self.conn.open_stream({"streamtype": "data", **headers})
        except (ConnectionClosedError, HatchwayError) as exc:
            self._report(local, remote, f"error creating streams: {exc}")
            return
        error_text = asyncio.ensure_future(error.read_all(MAX_ERROR_TEXT))
        up = asyncio.ensure_future(_local_to_remote(reader, data))
        try:
            await _remote_to_local(data, writer)
        except (ConnectionError, OSError):
            pass  # the local peer went away; the error stream still says why, if anything
        finally:
            if not up.done():  # the pod's side ended first: client-go stops here too
                up.cancel()
                data.reset()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await up
        try:
            text = await error_text
        except (ConnectionClosedError, HatchwayError) as exc:
            text = f"error reading the error stream: {exc}".encode()
        if text:
            self._report(local, remote, text.decode("utf-8", "replace"))

    def _report(self, local: int, remote: int, text: str) -> None:
        self.errors.append((local, remote, text))
        if self.on_error is not None:
            self.on_error(local, remote, text)

    async def wait_closed(self) -> None:
        """Until the connection to the server ends."""
        await self.conn.wait_closed()

    async def close(self) -> None:
        """Stop listening, end the connection (every stream ends with it, so the
        connection handlers finish on their own), then cancel what has not finished
        within :data:`CLOSE_TIMEOUT` (a local peer that reads nothing)."""
        for server in self._servers:
            server.close()
        await self.conn.close()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers = []

    async def __aenter__(self) -> PortForwarder:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _local_to_remote(reader: asyncio.StreamReader, data: Stream) -> None:
    while chunk := await reader.read(READ_CHUNK):
        await data.write(chunk)
    await data.write_eof()


async def _remote_to_local(data: Stream, writer: asyncio.StreamWriter) -> None:
    while chunk := await data.read(READ_CHUNK):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def open_port_forward(
    rest: RestClient,
    namespace: str,
    pod: str,
    mappings: Sequence[PortMapping],
    *,
    addresses: Sequence[str] = ("127.0.0.1",),
    on_error: ErrorCallback | None = None,
    on_connection: Callable[[int], None] | None = None,
) -> PortForwarder:
    """Upgrade, then listen; the started :class:`PortForwarder`."""
    from hatchway.session import upgrade

    path = paths.pod_path(namespace, pod, "portforward")
    conn = await upgrade.dial_port_forward(rest, path)
    forwarder = PortForwarder(conn, on_error, on_connection)
    try:
        await forwarder.listen(addresses, mappings)
    except BaseException:
        await forwarder.close()
        raise
    return forwarder
