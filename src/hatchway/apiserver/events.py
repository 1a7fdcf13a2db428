"""The API server's own events (the scheduler's) and the expiry of everyone's.

:class:`EventStore` records an event straight into the store, a repeat as one more
occurrence of the first (:func:`hatchway.api.events.repeat`), and :meth:`EventStore.run`
deletes events last seen more than :data:`~hatchway.api.events.TTL` ago, every minute,
as the API server's ``--event-ttl`` does. Recording is best effort, as in Kubernetes: a
failed write is logged, never raised into the component that reported it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from hatchway.api import events
from hatchway.api.meta import parse_time
from hatchway.api.status import StatusError
from hatchway.store.base import Store

log = logging.getLogger(__name__)

#: How many distinct events the recorder remembers for aggregation.
REMEMBERED = 4096
COLLECT_INTERVAL = 60.0


class EventStore:
    def __init__(self, store: Store, *, ttl: float = events.TTL) -> None:
        self.store = store
        self.ttl = ttl
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()

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
        event = events.new_event(
            events.involved(obj, field_path),
            reason,
            message,
            type_=type_,
            component=component,
            now=time.time(),
        )
        key = events.key(event)
        try:
            if key in self._seen and await self._repeat(*self._seen[key]):
                self._seen.move_to_end(key)
                return
            created = await self.store.create("events", event)
        except (StatusError, OSError) as exc:
            log.warning("event %s about %s not recorded: %s", reason, event["involvedObject"], exc)
            return
        self._seen[key] = (created["metadata"]["namespace"], created["metadata"]["name"])
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

    async def _repeat(self, namespace: str, name: str) -> bool:
        try:
            stored = await self.store.get("events", namespace, name)
        except StatusError as exc:
            if exc.code == 404:
                return False  # expired or deleted: record it anew
            raise
        stored.update(events.repeat(stored, time.time()))
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

    async def run(self, interval: float = COLLECT_INTERVAL) -> None:
        while True:
            try:
                await self.collect_once()
            except (StatusError, OSError, RuntimeError):
                log.exception("event expiry pass failed")
            await asyncio.sleep(interval)
