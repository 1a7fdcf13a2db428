"""The API server's own events (the scheduler's, exec admission's) and the expiry of
everyone's.

:class:`EventStore` records an event straight into the store, a repeat as one more
occurrence of the first (:func:`hatchway.api.events.repeat`), and :meth:`EventStore.run`
deletes events last seen more than :data:`~hatchway.api.events.TTL` ago, every minute,
as the API server's ``--event-ttl`` does. Recording is best effort, as in Kubernetes: a
failed write is logged, never raised into the component that reported it.

Events a client can provoke at will (``ExecDenied``: a refused exec or attach) go
through :meth:`EventStore.record_limited`, client-go's event correlator in small: a token
bucket per reporter and object (:class:`~hatchway.api.events.TokenBucket`, 25 at once
then one per 5 minutes) decides when a write happens; occurrences without a token are
counted in memory and added to the event's ``count`` by the next write (or by the
minute's pass of :meth:`EventStore.run`), so a flood of refusals costs a few writes and
the count stays true. Both tables are bounded (:data:`REMEMBERED`, oldest forgotten).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hatchway.api import events
from hatchway.api.meta import parse_time
from hatchway.api.status import StatusError
from hatchway.store.base import Store

log = logging.getLogger(__name__)

#: How many distinct events the recorder remembers for aggregation.
REMEMBERED = 4096
COLLECT_INTERVAL = 60.0
#: Names tried for one new event (see :meth:`EventStore._create`).
NAME_TRIES = 64


class EventStore:
    def __init__(
        self, store: Store, *, ttl: float = events.TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, ...], events.TokenBucket] = OrderedDict()
        #: Occurrences not written yet: event key -> (the event, how many).
        self._pending: OrderedDict[tuple[str, ...], tuple[dict[str, Any], int]] = OrderedDict()

    async def record_limited(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        type_: str = events.WARNING,
        component: str = events.SCHEDULER,
    ) -> None:
        """:meth:`record`, rate-limited per reporter and object (see the module doc)."""
        now = self.clock()
        event = events.new_event(
            events.involved(obj), reason, message, type_=type_, component=component, now=now
        )
        key = events.key(event)
        _, waiting = self._pending.pop(key, (event, 0))
        if not self._bucket(events.source_object(event), now).take(now):
            self._pending[key] = (event, waiting + 1)
            while len(self._pending) > REMEMBERED:
                self._pending.popitem(last=False)
            return
        await self._write(event, now, 1 + waiting)

    def _bucket(self, source: tuple[str, ...], now: float) -> events.TokenBucket:
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = events.TokenBucket(events.SPAM_BURST, events.SPAM_RATE, now)
        self._buckets[source] = bucket
        while len(self._buckets) > REMEMBERED:
            self._buckets.popitem(last=False)
        return bucket

    async def flush(self) -> int:
        """Write the counted occurrences whose bucket has a token again; how many went."""
        now = self.clock()
        written = 0
        for key, (event, waiting) in list(self._pending.items()):
            if self._bucket(events.source_object(event), now).take(now):
                del self._pending[key]
                await self._write(event, now, waiting)
                written += 1
        return written

    async def record(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        type_: str = events.NORMAL,
        component: str = events.SCHEDULER,
        field_path: str = "",
    ) -> None:
        now = self.clock()
        event = events.new_event(
            events.involved(obj, field_path),
            reason,
            message,
            type_=type_,
            component=component,
            now=now,
        )
        await self._write(event, now, 1)

    async def _write(self, event: dict[str, Any], now: float, times: int) -> None:
        """Store ``times`` occurrences of ``event``: a new event, or a repeat of the first."""
        key = events.key(event)
        try:
            if key in self._seen and await self._repeat(*self._seen[key], now, times):
                self._seen.move_to_end(key)
                return
            event["count"] = times
            created = await self._create(event)
        except (StatusError, OSError) as exc:
            reason, about = event["reason"], event["involvedObject"]
            log.warning("event %s about %s not recorded: %s", reason, about, exc)
            return
        self._seen[key] = (created["metadata"]["namespace"], created["metadata"]["name"])
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

    async def _create(self, event: dict[str, Any]) -> dict[str, Any]:
        """Create ``event``; its name (``<object>.<hex nanoseconds>``) moves on a
        nanosecond when another event took it in the same instant."""
        meta = event["metadata"]
        base, _, stamp = meta["name"].rpartition(".")
        for attempt in range(NAME_TRIES):
            try:
                return await self.store.create("events", event)
            except StatusError as exc:
                if exc.code != 409 or attempt == NAME_TRIES - 1:
                    raise
                meta["name"] = f"{base}.{int(stamp, 16) + attempt + 1:x}"
        raise AssertionError("unreachable")

    async def _repeat(self, namespace: str, name: str, now: float, times: int) -> bool:
        try:
            stored = await self.store.get("events", namespace, name)
        except StatusError as exc:
            if exc.code == 404:
                return False  # expired or deleted: record it anew
            raise
        stored.update(events.repeat(stored, now, times))
        await self.store.update("events", stored, expect_rv=stored["metadata"]["resourceVersion"])
        return True

    async def collect_once(self, now: float | None = None) -> int:
        """Delete the events last seen before ``now - ttl``; how many went."""
        cutoff = (time.time() if now is None else now) - self.ttl
        items, _ = await self.store.list("events")
        gone = 0
        for event in items:
            seen = parse_time(events.last_seen(event))
            if seen is not None and seen.timestamp() >= cutoff:
                continue
            meta = event["metadata"]
            with contextlib.suppress(StatusError):
                await self.store.delete("events", meta.get("namespace", ""), meta["name"])
                gone += 1
        return gone

    async def run(
        self, interval: float = COLLECT_INTERVAL, *, expire: Callable[[], bool] | None = None
    ) -> None:
        """Flush counted occurrences and, when ``expire()`` says so (the leader, of
        several API servers on one store), delete expired events; every ``interval``."""
        while True:
            try:
                await self.flush()
                if expire is None or expire():
                    await self.collect_once()
            except (StatusError, OSError, RuntimeError):
                log.exception("event expiry pass failed")
            await asyncio.sleep(interval)
