"""Watch responses: chunked JSON lines ``{"type": ..., "object": ...}``.

Events are filtered by the label and field selectors of the request. With an ``Accept``
asking for a Table (``kubectl get -w``), each object is sent as a one-row Table. The
stream ends after ``timeoutSeconds`` (if given), when the client goes away, or when the
store closes; a watch from a resourceVersion older than the history kept ends with an
``ERROR`` event carrying the 410 Expired Status, as Kubernetes does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from hatchway.api import table
from hatchway.api.selectors import FieldSelector, LabelSelector
from hatchway.api.status import StatusError
from hatchway.store.base import BOOKMARK, Store
from hatchway.transport.http import Response


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def watch_response(
    store: Store,
    resource: str,
    namespace: str | None,
    *,
    since_rv: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
    timeout: float | None,
    as_table: bool,
    include_object: str = "Metadata",
) -> Response:
    """A streaming response for ``?watch=true``."""

    def convert(obj: dict[str, Any]) -> dict[str, Any]:
        if not as_table:
            return obj
        return table.table(resource, [obj], now=datetime.now(UTC), include_object=include_object)

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        watch = store.watch(resource, namespace, since_rv=since_rv)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(watch)
                except (TimeoutError, StopAsyncIteration):
                    return
                except StatusError as exc:
                    yield _line("ERROR", exc.status)
                    return
                obj = event.object
                if event.type == BOOKMARK:
                    continue
                if labels.matches_object(obj) and fields.matches(obj):
                    yield _line(event.type, convert(obj))
        finally:
            await watch.close()

    content_type = "application/json"
    return Response(200, [("Content-Type", content_type)], body_iter=events())
