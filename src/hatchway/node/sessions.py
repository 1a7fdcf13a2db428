"""What each exec/attach session on this node came to, for the API server's audit log.

The API server sends its request id with every upgrade, in the ``Audit-ID`` header (as
Kubernetes does). The node notes each session's outcome under that id, and serves it::

    GET /sessions/{id}     200 {"id": ID, "finished": true, "exitCode": 42, "error": "",
                                "clientGone": false}
                           404 for an id the node does not hold (never sent, or dropped)

so the API server can write the exit code into its audit line when the splice ends
without ever parsing the stream it splices. The route is served like every node route:
mutual TLS, the API server's identity only. A session still running is waited for up
to ``wait`` seconds (the API server asks right after the splice ended, usually before
the node has finished closing), then answered with ``"finished": false``.

The id is trusted for nothing but this correlation: it names no file, selects no
container, and an id that is not 1-64 characters of ``[A-Za-z0-9._-]`` is not
recorded. At most ``capacity`` ids are held (the oldest dropped first) and a finished
one for at most ``ttl`` seconds. Two sessions under one id (only a confused API server
could send that) make the entry answer ``error: "conflicting sessions for this id"``
rather than either exit code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hatchway.session.server import SessionOutcome
from hatchway.transport.http import Request, Response

__all__ = ["AUDIT_ID_HEADER", "PREFIX", "SessionOutcomes", "SessionRecord"]

AUDIT_ID_HEADER = "audit-id"
PREFIX = "/sessions/"
DEFAULT_CAPACITY = 4096
DEFAULT_TTL = 600.0
DEFAULT_WAIT = 1.0
CONFLICT = "conflicting sessions for this id"
NO_OUTCOME = "the session ended without an outcome"
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class SessionRecord:
    """One session's outcome, filled in when it ends."""

    id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    error: str = ""
    client_gone: bool = False
    conflict: bool = False
    finished_at: float = 0.0

    def as_json(self) -> dict[str, object]:
        finished = self.done.is_set()
        error = CONFLICT if self.conflict else self.error
        return {
            "id": self.id,
            "finished": finished,
            "exitCode": None if self.conflict or not finished else self.exit_code,
            "error": error,
            "clientGone": self.client_gone,
        }


class SessionOutcomes:
    """A bounded LRU of session outcomes by request id (see module docstring)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        ttl: float = DEFAULT_TTL,
        wait: float = DEFAULT_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.wait = wait
        self._clock = clock
        self._records: collections.OrderedDict[str, SessionRecord] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def begin(self, session_id: str | None) -> SessionRecord | None:
        """A record for a session starting under ``session_id`` (None: not recorded)."""
        if not session_id or not _ID.fullmatch(session_id):
            return None
        self._expire()
        found = self._records.get(session_id)
        if found is not None:
            found.conflict = True
            return found
        record = self._records[session_id] = SessionRecord(session_id)
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)
        return record

    def finish(self, record: SessionRecord | None, outcome: SessionOutcome | None) -> None:
        """The session ended: with ``outcome``, or None when it failed without one."""
        if record is None:
            return
        if outcome is None:
            record.error = record.error or NO_OUTCOME
        else:
            record.exit_code = outcome.exit_code
            record.error = outcome.error
            record.client_gone = outcome.client_gone
        record.finished_at = self._clock()
        record.done.set()

    def get(self, session_id: str) -> SessionRecord | None:
        self._expire()
        record = self._records.get(session_id)
        if record is not None and self._expired(record):
            del self._records[session_id]  # behind an older record still running
            return None
        return record

    async def lookup(self, session_id: str) -> SessionRecord | None:
        """The record, once finished or after waiting ``wait`` seconds for it."""
        record = self.get(session_id)
        if record is not None and not record.done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.wait):
                    await record.done.wait()
        return record

    async def serve(self, request: Request) -> Response:
        """``GET /sessions/{id}``; the caller's identity is checked before this."""
        if request.method not in ("GET", "HEAD"):
            return _text(405, "405 method not allowed")
        session_id = request.path[len(PREFIX) :]
        record = await self.lookup(session_id) if _ID.fullmatch(session_id) else None
        if record is None:
            return _text(404, "session not found")
        body = json.dumps(record.as_json(), separators=(",", ":")).encode()
        return Response(200, [("content-type", "application/json")], body)

    def _expire(self) -> None:
        """Drop finished records older than ``ttl`` from the old end."""
        while self._records and self._expired(next(iter(self._records.values()))):
            self._records.popitem(last=False)

    def _expired(self, record: SessionRecord) -> bool:
        return record.done.is_set() and record.finished_at <= self._clock() - self.ttl


def _text(status: int, text: str) -> Response:
    return Response(status, [("content-type", "text/plain; charset=utf-8")], text.encode() + b"\n")
