"""``events.k8s.io/v1`` Events: the core/v1 events, seen through the other group's names.

Kubernetes keeps one Event object and serves it in both groups, converting on the way
in and out (``regarding`` is ``involvedObject``, ``note`` is ``message``,
``reportingController`` is ``reportingComponent``, ``deprecatedSource``/
``deprecatedFirstTimestamp``/``deprecatedLastTimestamp``/``deprecatedCount`` are
``source``/``firstTimestamp``/``lastTimestamp``/``count``; :func:`~hatchway.api.events.to_v1`).
So does this handler (protocol.md 2.10): it converts a request to the core/v1 request it
stands for, lets the core resource handler (defaulting, validation, admission, node
restriction, dry run, storage) do the work, and converts the answer back -- objects,
lists, watch events, and the objects embedded in tables. RBAC has already authorised
the request against ``events.k8s.io``. A patch applies to the events.k8s.io form: the
stored event is read, converted, patched, converted back and written with its
``resourceVersion`` as precondition (so a concurrent write is a 409, never lost).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from hatchway.api import events, status
from hatchway.api.patch import apply_patch
from hatchway.api.status import StatusError, required
from hatchway.apiserver import apply
from hatchway.apiserver.app import Call, Handler
from hatchway.apiserver.rest_handlers import decode_body
from hatchway.store.base import Store
from hatchway.transport.http import Response

JSON = "application/json"


def _convert_answer(value: Any) -> Any:
    """An answer of the core handler in events.k8s.io/v1 form."""
    if not isinstance(value, dict):
        return value
    kind = value.get("kind")
    if kind == "Event" and value.get("apiVersion") == "v1":
        return events.to_v1(value)
    if kind == "EventList":
        return {
            **value,
            "apiVersion": events.EVENTS_API_VERSION,
            "items": [events.to_v1(e) for e in value.get("items") or []],
        }
    if kind == "Table":
        for row in value.get("rows") or []:
            if isinstance(row, dict):
                row["object"] = _convert_answer(row.get("object"))
        return value
    if kind is None and "type" in value and isinstance(value.get("object"), dict):
        return {**value, "object": _convert_answer(value["object"])}  # a watch event
    return value


async def _converted_lines(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Watch lines (one JSON event per chunk, as :mod:`.watch` writes them), converted."""
    pending = b""
    async for chunk in body:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                event = _convert_answer(json.loads(line))
                yield json.dumps(event, separators=(",", ":")).encode() + b"\n"
    if pending.strip():
        yield pending


class EventsV1Handler:
    """Serves ``/apis/events.k8s.io/v1/...events...`` through the core resource handler."""

    def __init__(self, core: Handler, store: Store) -> None:
        self.core = core
        self.store = store

    async def __call__(self, call: Call) -> Response:
        info = call.info
        if info.resource != "events" or info.api_version != "v1" or info.subresource:
            raise StatusError(status.not_found_path())
        method = call.request.method
        if method == "PATCH" and info.name and not apply.is_apply(self._content_type(call)):
            return await self._patch(call)
        if method in ("POST", "PUT") and call.request.body:
            body = decode_body(call)
            if not isinstance(body, dict):
                raise StatusError(status.bad_request("the request body must be an Event"))
            if method == "POST":
                self._check_create(body)
            if body.get("apiVersion") not in (None, "", events.EVENTS_API_VERSION):
                raise StatusError(
                    status.bad_request(f"the body must be {events.EVENTS_API_VERSION}, Kind=Event")
                )
            call = self._as_core(call, events.to_core(body))
        else:
            call = self._as_core(call, None)
        return self._answer(await self.core(call))

    @staticmethod
    def _content_type(call: Call) -> str:
        return call.request.header("content-type") or ""

    @staticmethod
    def _check_create(body: dict[str, Any]) -> None:
        missing = [required(name) for name in events.V1_REQUIRED if not body.get(name)]
        if missing:
            name = str((body.get("metadata") or {}).get("name") or "")
            raise StatusError(status.invalid("Event", name, missing, events.EVENTS_GROUP))

    def _as_core(self, call: Call, body: dict[str, Any] | None) -> Call:
        info = dataclasses.replace(call.info, api_prefix="api", api_group="")
        request = call.request
        query = dict(request.query)
        if query.get("fieldSelector"):
            query["fieldSelector"] = [events.core_field_selector(query["fieldSelector"][0])]
        changes: dict[str, Any] = {"query": query}
        if body is not None:
            headers = [(k, v) for k, v in request.headers if k != "content-type"]
            changes["headers"] = [*headers, ("content-type", JSON)]
            changes["body"] = json.dumps(body).encode()
        return dataclasses.replace(call, info=info, request=dataclasses.replace(request, **changes))

    def _answer(self, response: Response) -> Response:
        if response.body_iter is not None:
            response.body_iter = _converted_lines(response.body_iter)
            return response
        media = dict(response.headers).get("Content-Type", "")
        if not response.body or not media.startswith(JSON):
            return response
        converted = _convert_answer(json.loads(response.body))
        response.body = json.dumps(converted, separators=(",", ":")).encode()
        return response

    async def _patch(self, call: Call) -> Response:
        """Patch the events.k8s.io form, write the core form with its resourceVersion."""
        info = call.info
        doc = decode_body(call)
        old = await self.store.get("events", info.namespace, info.name)
        patched = apply_patch(self._content_type(call), events.to_v1(old), doc)
        if not isinstance(patched, dict):
            raise StatusError(status.bad_request("the patched object must be an Event"))
        core = events.to_core(patched)
        meta = core.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise StatusError(status.bad_request("metadata must be an object"))
        meta.setdefault("resourceVersion", old["metadata"].get("resourceVersion"))
        put = dataclasses.replace(call, request=dataclasses.replace(call.request, method="PUT"))
        return self._answer(await self.core(self._as_core(put, core)))


def with_events_v1(core: Handler, store: Store) -> Handler:
    """``core`` for every resource request, but events.k8s.io's through :class:`EventsV1Handler`."""
    v1 = EventsV1Handler(core, store)

    async def handle(call: Call) -> Response:
        if call.info.api_group == events.EVENTS_GROUP:
            return await v1(call)
        return await core(call)

    return handle
