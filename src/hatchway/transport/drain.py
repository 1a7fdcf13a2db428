"""Is the peer still reading? What a closing :class:`~.bytestream.ByteStream` watches.

Progress is the kernel's count of bytes the peer acknowledged (``tcpi_bytes_acked`` of
``TCP_INFO``, Linux 4.1+): it moves only when the peer's receive window opens, that is
when the peer reads, whatever TLS or event-loop buffers sit above the socket. Where it
is unknown (another OS, a Unix socket), our send buffer shrinking counts instead.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Awaitable
from typing import Any, Protocol

try:  # Linux: the kernel's send queue of a TCP socket (SIOCOUTQ is TIOCOUTQ)
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except ImportError:  # pragma: no cover
    _SIOCOUTQ = None

#: How often a draining stream looks at the peer's progress.
POLL = 1.0
#: ``struct tcp_info``: the offset of ``tcpi_bytes_acked`` (u64), and the size to ask for.
_TCPI_BYTES_ACKED = 120
_TCP_INFO_SIZE = 256
_TCP = (socket.AF_INET, socket.AF_INET6)


class Sender(Protocol):
    """What is watched: a ByteStream."""

    @property
    def bytes_acked(self) -> int | None: ...
    @property
    def write_buffered(self) -> int: ...
    @property
    def unsent(self) -> int: ...


class Cuttable(Sender, Protocol):
    """A sender that can cut its peer: a ByteStream."""

    drain_idle_timeout: float

    def give_up(self, stalled: float) -> None: ...


def _tcp_info(sock: Any) -> bytes:
    """``sock``'s ``struct tcp_info``; ``b""`` where unknown (not TCP, not Linux)."""
    if sock is None or sock.family not in _TCP:
        return b""
    try:
        return bytes(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE))
    except (OSError, AttributeError, ValueError):
        return b""


def bytes_acked(sock: Any) -> int | None:
    """Bytes the peer's kernel acknowledged on ``sock``, None where unknown."""
    info = _tcp_info(sock)
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0])


#: ``tcpi_state`` (linux/tcp_states.h) once the peer ended the connection: TCP_CLOSE
#: (it reset) and TCP_CLOSE_WAIT (it sent FIN).
_ENDED_STATES = {7, 8}


def peer_ended(sock: Any) -> bool:
    """The peer closed or reset ``sock``'s connection (the kernel knows, whether or not
    anyone reads the socket: a paused reader never sees it). False where unknown (another
    OS, a Unix socket).

    Only for the serving side of an exec connection, where the peer ending the connection
    mid-session always means the client is gone. A client must not use it: a server that
    finished sends FIN (or a reset, when our last pings were unread) with its last output
    still in our receive buffer, for a slow consumer to read (stopping there lost the
    tail of slow readers' output in the soak)."""
    info = _tcp_info(sock)
    return bool(info) and info[0] in _ENDED_STATES


async def wait_unless_ended(
    sock: Any,
    event: asyncio.Event,
    closed: asyncio.Future[Any] | None = None,
    poll: float = POLL,
) -> bool:
    """Wait for ``event``; False (without it) once the peer ended the connection (or
    ``closed``, the connection's own end, is done).

    For a reader that stopped reading the socket (backpressure): nothing else would see
    the peer go, and a session blocked both ways would wait for ever."""
    while not event.is_set():
        if peer_ended(sock) or (closed is not None and closed.done()):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll):
                await event.wait()
    return True


def kernel_unsent(sock: Any) -> int:
    """Bytes in ``sock``'s kernel send queue not yet acknowledged (0 where unknown)."""
    if sock is None or _SIOCOUTQ is None or sock.family not in _TCP:
        return 0
    out = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), _SIOCOUTQ, out)
    except (OSError, AttributeError, ValueError):
        return 0
    return int(out[0])


class Progress:
    """How long the peer has taken none of our output."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._acked = sender.bytes_acked
        self._buffered = sender.write_buffered
        self._since = time.monotonic()

    def stalled(self) -> float:
        now = time.monotonic()
        acked, buffered = self._sender.bytes_acked, self._sender.write_buffered
        if acked is not None and self._acked is not None:
            moved = acked > self._acked
        else:
            moved = buffered < self._buffered
        self._acked, self._buffered = acked, buffered
        if moved:
            self._since = now
        return now - self._since


async def wait_draining(
    sender: Sender, aw: Awaitable[object], idle_timeout: float, settle: float | None = None
) -> str:
    """Wait for ``aw`` for as long as the peer keeps taking what ``sender`` sent.

    ``"done"``; ``"stalled"`` once the peer took none of it for ``idle_timeout``;
    ``"delivered"`` when, with ``settle`` given, everything sent has been acknowledged
    for that long and ``aw`` still is not done. ``aw`` is cancelled unless done."""
    fut = asyncio.ensure_future(aw)
    progress = Progress(sender)
    delivered_at: float | None = None
    try:
        while True:
            stalled = progress.stalled()
            if stalled >= idle_timeout:
                return "stalled"
            wait = min(POLL, idle_timeout - stalled)
            if settle is not None:
                now = time.monotonic()
                if sender.unsent:
                    delivered_at = None
                elif delivered_at is None:
                    delivered_at = now
                elif now - delivered_at >= settle:
                    return "delivered"
                if delivered_at is not None:
                    wait = min(wait, delivered_at + settle - now)
            done, _ = await asyncio.wait({fut}, timeout=wait)
            if done:
                return "done"
    finally:
        if not fut.done():
            fut.cancel()
            await asyncio.gather(fut, return_exceptions=True)


async def wait_or_cut(sender: Cuttable, aw: Awaitable[object], settle: float | None = None) -> str:
    """:func:`wait_draining` for a closing connection, with the sender's own
    ``drain_idle_timeout``. ``"done"``; ``"cut"`` when the peer took none of our output
    for that long with some of it still unsent: it is cut (``sender.give_up``);
    ``"delivered"`` when everything sent was acknowledged for ``settle``, or when the
    idle timeout passed with nothing unsent (the peer has it all: nothing to cut it for,
    and a false "cut" would say output may have been lost)."""
    end = await wait_draining(sender, aw, sender.drain_idle_timeout, settle)
    if end != "stalled":
        return end
    if sender.unsent:
        sender.give_up(sender.drain_idle_timeout)
        return "cut"
    return "delivered"


__all__ = [
    "POLL",
    "Progress",
    "bytes_acked",
    "kernel_unsent",
    "peer_ended",
    "wait_draining",
    "wait_or_cut",
    "wait_unless_ended",
]
