"""``HATCHWAY_SERVER_TIMING=FILE``: where one request's time goes on a server.

Off unless the variable names a file: then every request the HTTP server reads gets a
:class:`Phases` in ``Request.context`` (:data:`KEY`); the server and its application
mark the end of each phase (``mark("authn")``), and when the request is over --
an exec session's audit end written, a plain request's answer sent -- one JSON line is
appended to FILE::

    {"server": "apiserver", "path": "/api/v1/...", "first": true,
     "wall_us": {"head": 210, ...}, "cpu_us": {"head": 180, ...}}

``first``: the connection's first request (it paid a TLS handshake). Work done between
requests writes lines of its own (``path`` in parentheses: the heap trim after sessions
end, :mod:`hatchway.session.heap`).

Each phase is measured from the end of the one before; the first from the moment the
connection was made (the TLS handshake done) for a connection's first request, else
from the end of the previous request on it. ``cpu_us`` is the serving thread's CPU time
(``thread_time``) over the same interval: on a server doing one thing at a time (the
bench) it is that request's; under concurrency it includes whatever else the event loop
ran meanwhile. Off, :data:`OFF` is used: its marks cost a method call.

For bench use: the file is opened, appended and closed per request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

ENV = "HATCHWAY_SERVER_TIMING"
#: Where a request's phases live in ``Request.context``.
KEY = "hatchway.phases"

log = logging.getLogger(__name__)


class Phases:
    """Named marks of one request (see module docstring)."""

    __slots__ = ("_cpu", "_done", "_first", "_last", "_path", "_phases", "_server")

    enabled = True

    def __init__(
        self,
        server: str,
        path: str,
        since_ns: int | None = None,
        since_cpu_ns: int | None = None,
        *,
        first: bool = False,
    ) -> None:
        self._server = server
        self._path = path
        self._first = first
        self._last = since_ns if since_ns is not None else time.perf_counter_ns()
        self._cpu = since_cpu_ns if since_cpu_ns is not None else time.thread_time_ns()
        self._phases: list[tuple[str, int, int]] = []
        self._done = False

    def mark(self, name: str) -> None:
        """End the phase ``name`` now (a name marked again adds to it)."""
        now, cpu = time.perf_counter_ns(), time.thread_time_ns()
        self._phases.append((name, now - self._last, cpu - self._cpu))
        self._last, self._cpu = now, cpu

    def skip(self) -> None:
        """Restart the clock without a phase (time spent waiting on the peer, say)."""
        self._last, self._cpu = time.perf_counter_ns(), time.thread_time_ns()

    def as_json(self) -> dict[str, Any]:
        wall: dict[str, int] = {}
        cpu: dict[str, int] = {}
        for name, took, used in self._phases:
            wall[name] = wall.get(name, 0) + took // 1000
            cpu[name] = cpu.get(name, 0) + used // 1000
        return {
            "server": self._server,
            "pid": os.getpid(),
            "path": self._path,
            "first": self._first,
            "wall_us": wall,
            "cpu_us": cpu,
        }

    def finish(self) -> None:
        """Append the request's line to the timing file, once."""
        if self._done:
            return
        self._done = True
        target = os.environ.get(ENV, "")
        if not target:
            return
        try:
            with open(target, "a", encoding="utf-8") as f:
                f.write(json.dumps(self.as_json(), separators=(",", ":")) + "\n")
        except OSError as exc:
            log.warning("cannot write the timing line to %s: %s", target, exc)


class _Off:
    """The no-op stand-in when timing is off."""

    __slots__ = ()

    enabled = False

    def mark(self, name: str) -> None:
        pass

    def skip(self) -> None:
        pass

    def finish(self) -> None:
        pass


OFF: Any = _Off()
#: A request's timer: its phases, or the no-op one.
Timer = Phases | _Off


def enabled() -> bool:
    """Whether requests are timed (the variable names a file)."""
    return bool(os.environ.get(ENV, ""))


def of(context: dict[str, Any]) -> Timer:
    """The request's phases, or :data:`OFF`."""
    return context.get(KEY, OFF)  # type: ignore[no-any-return]
