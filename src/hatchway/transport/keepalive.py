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
timeout. RFC 9112 section 9.5 lets a server close an idle connection at any time, and
clients retry a request that met such a close on a reused connection (Go's transport
for idempotent requests, :class:`~hatchway.transport.httpclient.HttpClient` once for
any); a connection whose next request has already arrived (bytes buffered) is not
closed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_IDLE", "IdleConnections"]

#: Idle kept-alive connections a server holds at most (``HttpLimits.max_idle_connections``).
DEFAULT_MAX_IDLE = 32


class IdleConnections:
    """Connections waiting for their next request, oldest first; see the module docstring.

    A waiting connection registers the deadline it waits under (an ``asyncio.timeout``)
    and whether its next request has begun; closing one is expiring that deadline now."""

    def __init__(self, limit: int = DEFAULT_MAX_IDLE) -> None:
        self.limit = limit
        self._waiting: collections.OrderedDict[asyncio.Timeout, Callable[[], bool]] = (
            collections.OrderedDict()
        )
        #: Connections closed because the bound was reached (for tests and logs).
        self.closed = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, deadline: asyncio.Timeout, busy: Callable[[], bool]) -> None:
        """A connection began waiting under ``deadline``; ``busy()`` tells whether its
        next request has arrived meanwhile. Closes the longest idle beyond the bound."""
        self._waiting[deadline] = busy
        while len(self._waiting) > self.limit:
            oldest, oldest_busy = self._waiting.popitem(last=False)
            if oldest_busy():
                continue  # its request is in: it is being served, not idle
            oldest.reschedule(asyncio.get_running_loop().time())
            self.closed += 1

    def discard(self, deadline: asyncio.Timeout) -> None:
        """The connection stopped waiting (a request arrived, or it closed)."""
        self._waiting.pop(deadline, None)
