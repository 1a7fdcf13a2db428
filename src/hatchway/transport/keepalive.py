"""A bound on the kept-alive connections an HTTP server holds idle (issue 13).

An idle keep-alive connection is one TLS connection the server keeps for a client that
may never send on it again: ``kubectl exec`` GETs the pod on one connection and then
dials another for the upgrade, and the first sits in its pool, idle, until Go's 90 s
``IdleConnTimeout`` -- for the whole of a long session. Each costs the server about
45 KiB (OpenSSL's connection state ~27 KiB with ``SSL_MODE_RELEASE_BUFFERS``, the event
loop's TLS protocol, the touched pages of its receive buffer): as much again as the
session's own two connections on the API server.

:class:`IdleConnections` keeps the connections waiting for their next request in the
order they went idle; beyond ``limit`` the longest idle one is closed, as at its idle
timeout (protocol.md 2.7, 8). RFC 9112 section 9.5 lets a server close an idle
connection at any time, and clients retry a request that met such a close on a reused
connection (Go's transport and :class:`~hatchway.transport.httpclient.HttpClient`, for
idempotent requests); one whose next request has already arrived (bytes buffered) is
not closed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_IDLE", "IdleConnections"]

#: Idle kept-alive connections a server holds at most (``HttpLimits.max_idle_connections``).
DEFAULT_MAX_IDLE = 32


class IdleConnections:
    """Connections waiting for their next request, oldest first; see the module docstring.

    A waiting connection registers itself with ``busy`` (whether its next request has
    arrived meanwhile) and ``close``: a graceful close (TLS close_notify, FIN), after
    which the wait reads EOF and the connection ends as at its idle timeout -- rather
    than a cancelled wait, which would drop a request that arrived in the same loop
    iteration unread."""

    def __init__(self, limit: int = DEFAULT_MAX_IDLE) -> None:
        self.limit = limit
        self._waiting: collections.OrderedDict[
            object, tuple[Callable[[], bool], Callable[[], None]]
        ]
        self._waiting = collections.OrderedDict()
        #: Connections closed because the bound was reached (for tests and logs).
        self.closed = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: object, busy: Callable[[], bool], close: Callable[[], None]) -> None:
        """A connection began waiting; closes the longest idle beyond the bound."""
        self._waiting[key] = (busy, close)
        while len(self._waiting) > self.limit:
            _, (oldest_busy, oldest_close) = self._waiting.popitem(last=False)
            if oldest_busy():
                continue  # its request is in: it is being served, not idle
            oldest_close()
            self.closed += 1

    def discard(self, key: object) -> None:
        """The connection stopped waiting (a request arrived, or it closed)."""
        self._waiting.pop(key, None)
