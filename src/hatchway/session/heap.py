"""Memory given back to the system once exec sessions end (issue 10, item 6): the node
agent and the API server each run one :class:`HeapTrimmer`.

glibc's malloc keeps what a process frees: only a free top chunk above
``M_TRIM_THRESHOLD`` goes back by itself, free chunks below the top stay resident. After
1,000 sessions had ended the node agent still held all of their memory. After sessions
end, :class:`HeapTrimmer` runs one full ``gc.collect()`` (a session's reference cycles --
tasks, futures, exceptions and their frames -- otherwise wait for a generation-2 pass an
idle agent rarely makes) and then ``malloc_trim(0)``, which hands every whole free page
back to the kernel, in every arena.

Rate-limited: the trim runs :data:`TRIM_DELAY` seconds after the last session end, or
:data:`TRIM_INTERVAL` seconds after the first end not yet trimmed for, whichever comes
first -- a burst of ends costs one trim, a steady churn one per interval. The trim
itself runs in a worker thread (it walks the whole heap); the collection, which needs
the interpreter anyway, on the loop.

What this cannot give back: pymalloc's arenas (objects of 512 bytes or less) are
returned only when wholly empty, so a few long-lived objects keep an arena's freed
pools resident (measured: about 40 KiB per ended session of the 70 KiB it held).
Where glibc is not the C library (musl has no ``malloc_trim``) nothing is trimmed.

The collection's cost is the number of objects it traverses, and most of a server's
are its start-up's (modules, the OpenAPI tables, the seeded policy): 10-17 ms of CPU
per collection, paid after every session that ends a second after the previous one
(an interactive user's execs), more than the exec's own request handling. A serving
process calls :func:`freeze_startup` once it has started: what start-up made moves
to the permanent generation (``gc.freeze``), which collections skip, so they traverse
only what sessions and requests made since. Cyclic garbage among the frozen objects is
never collected (the refcounted kind still is); hence a collection just before.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from collections.abc import Callable

from hatchway.transport import phases

log = logging.getLogger(__name__)

TRIM_DELAY = 1.0
TRIM_INTERVAL = 10.0


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def _timed_trim(trim: Callable[[int], int], timed: phases.Phases) -> Callable[[int], int]:
    """``trim``, its thread's CPU added to ``timed`` as the phase ``malloc_trim``."""

    def run(pad: int) -> int:
        timed.skip()
        try:
            return trim(pad)
        finally:
            timed.mark("malloc_trim")
            timed.finish()

    return run


def freeze_startup() -> None:
    """Collect once, then leave every object alive now out of later collections (see
    module docstring). For a serving process's entry point, after its start-up."""
    gc.collect()
    gc.freeze()


class HeapTrimmer:
    """Call :meth:`session_ended` as each session ends (from the event loop)."""

    def __init__(
        self,
        trim: Callable[[int], int] | None = None,
        *,
        delay: float = TRIM_DELAY,
        interval: float = TRIM_INTERVAL,
    ) -> None:
        self._trim = trim if trim is not None else malloc_trim()
        self.delay = delay
        self.interval = interval
        self._first: float | None = None  # loop time of the first end not yet trimmed for
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # the loop time ``_handle`` was asked for
        self._running: asyncio.Future[None] | None = None
        #: Trims done (for tests and logs).
        self.trims = 0

    def session_ended(self) -> None:
        if self._trim is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._first is None:
            self._first = now
        due = min(now + self.delay, self._first + self.interval)
        if self._handle is not None:
            if due == self._due:  # held at the interval's bound: the timer stands
                return
            self._handle.cancel()
        self._due = due
        self._handle = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._first = None
        if self._running is not None and not self._running.done():
            return  # the previous trim is still walking the heap
        timed = phases.Phases("", "(heap trim)") if phases.enabled() else phases.OFF
        gc.collect()
        timed.mark("gc")
        assert self._trim is not None
        trim = self._trim if not timed.enabled else _timed_trim(self._trim, timed)
        self._running = asyncio.get_running_loop().run_in_executor(None, trim, 0)
        self._running.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("malloc_trim failed: %s", future.exception())
            return
        self.trims += 1

    async def aclose(self) -> None:
        """Cancel a pending trim and wait for a running one."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
