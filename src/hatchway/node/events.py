"""The node agent's events about its pods (``kubelet`` as the reporting component).

:meth:`NodeEvents.emit` never waits and never fails: events go through a bounded queue
to one task that writes them to the API server (``POST .../events``; a repeat of the
same event as a ``PATCH`` of the first one's ``count`` and ``lastTimestamp``, as the
kubelet's recorder aggregates). Events are best effort, as in Kubernetes: when the API
server cannot be reached, or more than :data:`QUEUE` are waiting, they are dropped, and
the log says how many.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from hatchway.api import events
from hatchway.errors import ApiError, HatchwayError
from hatchway.rest import RestClient

log = logging.getLogger(__name__)

QUEUE = 1000
REMEMBERED = 4096


class NodeEvents:
    def __init__(self, rest: RestClient, host: str) -> None:
        self.rest = rest
        self.host = host
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()

    def emit(
        self,
        pod: dict[str, Any],
        reason: str,
        message: str,
        *,
        type_: str = events.NORMAL,
        field_path: str = "",
    ) -> None:
        obj = {"kind": "Pod", "apiVersion": "v1", **pod}
        event = events.new_event(
            events.involved(obj, field_path),
            reason,
            message,
            type_=type_,
            host=self.host,
            now=time.time(),
        )
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped()

    def _dropped(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning("%d event(s) dropped: the API server does not take them", self.dropped)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._write(event)
            except (HatchwayError, OSError) as exc:
                log.info("event %s not written: %s", event.get("reason"), exc)
                self._dropped()

    async def _write(self, event: dict[str, Any]) -> None:
        key = events.key(event)
        known = self._seen.get(key)
        if known is not None:
            namespace, name, count = known
            path = f"/api/v1/namespaces/{namespace}/events/{name}"
            patch = {"count": count + 1, "lastTimestamp": event["lastTimestamp"]}
            try:
                await self.rest.patch(path, patch)
                self._seen[key] = (namespace, name, count + 1)
                self._seen.move_to_end(key)
                return
            except ApiError as exc:
                if exc.code != 404:
                    raise
        namespace = event["metadata"]["namespace"]
        await self.rest.create(f"/api/v1/namespaces/{namespace}/events", event)
        self._seen[key] = (namespace, event["metadata"]["name"], 1)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
