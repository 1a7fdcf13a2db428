"""The Store semantics written once over a small synchronous :class:`Backend`.

Each operation (create, update, delete) reads, checks and commits inside one backend
call, so it is atomic however the backend runs it (inline for memory, on SQLite's worker
thread). Writes are serialised by an asyncio lock that also covers publishing the event,
so watchers receive events in resourceVersion order. A watcher subscribes before it
reads the list or the history and drops what it already has (rv <= the last one it
delivered), so no change falls between the two.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hatchway.api import resources
from hatchway.api.meta import format_time
from hatchway.api.status import (
    CONFLICT_MODIFIED,
    StatusError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
    required,
)
from hatchway.errors import ConnectionClosedError
from hatchway.store import paging
from hatchway.store.base import ADDED, DELETED, MODIFIED, Store, StoreWatch, Watch, WatchEvent
from hatchway.store.enginepage import StaleReadError, op_page

Row = tuple[int, str, str]  # (rv, event type, object JSON)


class Backend(abc.ABC):
    """Synchronous primitives; never called from two threads at once."""

    @abc.abstractmethod
    def read(self, resource: str, namespace: str, name: str) -> str | None: ...

    @abc.abstractmethod
    def scan(self, resource: str, namespace: str | None) -> tuple[list[str], int]:
        """Objects sorted by (namespace, name), and the current rv, consistently."""

    @abc.abstractmethod
    def page(
        self, resource: str, namespace: str | None, start: tuple[str, str], limit: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        """Up to ``limit`` (namespace, name, JSON) rows at or after ``start`` in
        (namespace, name) order, and how many rows there are from ``start`` on."""

    @abc.abstractmethod
    def commit(self, resource: str, namespace: str, name: str, type_: str, obj: dict) -> str:
        """Allocate the next rv, stamp it into ``obj``, store (or delete, for DELETED) the
        object and record the event (with the object's previous JSON); returns the
        object's JSON."""

    @abc.abstractmethod
    def history(self, resource: str, namespace: str | None, after: int) -> tuple[list[Row], int]:
        """Events after rv ``after``, oldest first, and the compacted rv (every event at or
        below it has been pruned)."""

    @abc.abstractmethod
    def changes(
        self, resource: str, namespace: str | None, after: int
    ) -> tuple[dict[tuple[str, str], str | None] | None, int]:
        """Every (namespace, name) changed after rv ``after``, with its JSON as of
        ``after`` (None: it did not exist), or None when the events cannot tell; and the
        compacted rv."""

    @abc.abstractmethod
    def rv(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...


_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes' generateName draws from


def _group(resource: str) -> str:
    res = resources.by_name(resource)
    return res.group if res else ""


def _key(resource: str, obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise StatusError(bad_request("object has no metadata"))
    res = resources.by_name(resource)
    namespace = str(meta.get("namespace") or "")
    if res is not None and not res.namespaced:
        namespace = ""
    elif res is not None and not namespace:
        raise StatusError(bad_request(f"{resource} are namespaced: metadata.namespace is required"))
    return namespace, str(meta.get("name") or "")


def _precondition(resource: str, name: str, stored: dict[str, Any], expect: str | None) -> None:
    have = stored["metadata"].get("resourceVersion")
    if expect and expect != have:
        raise StatusError(conflict(resource, name, _group(resource), CONFLICT_MODIFIED))


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def op_create(backend: Backend, resource: str, obj: dict[str, Any], now: str, uid: str) -> str:
    namespace, name = _key(resource, obj)
    meta = obj["metadata"]
    if not name:
        prefix = meta.get("generateName")
        if not prefix:
            res = resources.by_name(resource)
            cause = required("metadata.name", "name or generateName is required")
            kind = res.kind if res else resource
            raise StatusError(invalid(kind, "", [cause], _group(resource)))
        for _ in range(8):
            name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
            if backend.read(resource, namespace, name) is None:
                break
        meta["name"] = name
    if backend.read(resource, namespace, name) is not None:
        raise StatusError(already_exists(resource, name, _group(resource)))
    if not meta.get("uid"):
        meta["uid"] = uid
    if not meta.get("creationTimestamp"):
        meta["creationTimestamp"] = now
    return backend.commit(resource, namespace, name, ADDED, obj)


def op_update(
    backend: Backend, resource: str, obj: dict[str, Any], expect: str | None
) -> tuple[str, bool]:
    """The stored JSON after the update, and whether anything changed."""
    namespace, name = _key(resource, obj)
    text = backend.read(resource, namespace, name)
    if text is None:
        raise StatusError(not_found(resource, name, _group(resource)))
    stored = json.loads(text)
    _precondition(resource, name, stored, expect or obj["metadata"].get("resourceVersion"))
    for key in ("uid", "creationTimestamp"):
        if key in stored["metadata"]:
            obj["metadata"][key] = stored["metadata"][key]
    if _without_rv(obj) == _without_rv(stored):
        return text, False
    return backend.commit(resource, namespace, name, MODIFIED, obj), True


def op_delete(
    backend: Backend, resource: str, namespace: str, name: str, expect: str | None
) -> str:
    res = resources.by_name(resource)
    if res is not None and not res.namespaced:
        namespace = ""
    text = backend.read(resource, namespace, name)
    if text is None:
        raise StatusError(not_found(resource, name, _group(resource)))
    stored = json.loads(text)
    _precondition(resource, name, stored, expect)
    return backend.commit(resource, namespace, name, DELETED, stored)


class _Subscriber:
    """A watcher's bounded inbox; overflowing it ends the watch instead of growing."""

    def __init__(self, resource: str, namespace: str | None, limit: int) -> None:
        self.resource = resource
        self.namespace = namespace
        self.limit = limit
        self.items: deque[Row] = deque()
        self.wake = asyncio.Event()
        self.ended: str | None = None  # "closed" or "overflow"

    def offer(self, resource: str, namespace: str, row: Row) -> None:
        if self.ended or resource != self.resource:
            return
        if self.namespace is not None and namespace != self.namespace:
            return
        if len(self.items) >= self.limit:
            self.ended = "overflow"
            self.items.clear()
        else:
            self.items.append(row)
        self.wake.set()

    def end(self, why: str) -> None:
        if not self.ended:
            self.ended = why
        self.wake.set()


class EngineStore(Store):
    """A Store over a Backend; subclasses say how backend calls run (:meth:`_call`)."""

    def __init__(
        self,
        *,
        watch_queue: int = 1000,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._watch_queue = watch_queue
        self._subscribers: set[_Subscriber] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    @abc.abstractmethod
    def _submit(self, fn: Callable[[Backend], Any]) -> asyncio.Future[Any]:
        """Start ``fn(backend)`` where the backend lives; its result as a future."""

    async def _call(self, fn: Callable[[Backend], Any]) -> Any:
        return await self._submit(fn)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError("store is closed")

    async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        self._check_open()
        res = resources.by_name(resource)
        if res is not None and not res.namespaced:
            namespace = ""
        text = await self._call(lambda b: b.read(resource, namespace, name))
        if text is None:
            raise StatusError(not_found(resource, name, _group(resource)))
        return json.loads(text)

    async def list(
        self, resource: str, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self._check_open()
        texts, rv = await self._call(lambda b: b.scan(resource, namespace))
        return [json.loads(t) for t in texts], str(rv)

    async def list_page(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        limit: int,
        continue_: str | None = None,
        resource_version: str | None = None,
        exact: bool = False,
        match: paging.Match | None = None,
    ) -> paging.ListPage:
        self._check_open()
        limit = paging.clamp_limit(limit)
        start, at = "", 0
        if continue_:
            at, start = paging.decode_continue(continue_)
            at = max(at, 0)  # LATEST: read now
        elif resource_version and resource_version != "0":
            wanted = paging.parse_rv(resource_version)
            if exact:
                at = wanted
            elif wanted > (current := int(await self.current_rv())):
                raise paging.too_large(wanted, current)

        def run(b: Backend) -> tuple[list[str], int, str, int | None]:
            return op_page(b, resource, namespace, limit=limit, start=start, at=at, match=match)

        try:
            texts, rv, after, remaining = await self._call(run)
        except StaleReadError as stale:
            if continue_:
                raise paging.continue_expired(start) from None
            message = f"too old resource version: {at} ({stale.compacted})"
            raise StatusError(expired(message)) from None
        token = paging.encode_continue(rv, after) if after else ""
        return paging.ListPage([json.loads(t) for t in texts], str(rv), token, remaining)

    async def current_rv(self) -> str:
        self._check_open()
        return str(await self._call(lambda b: b.rv()))

    async def _write(self, fn: Callable[[Backend], tuple[str, Callable[[], None]]]) -> str:
        self._check_open()
        async with self._lock:
            future = self._submit(fn)
            try:
                text, publish = await asyncio.shield(future)
            except asyncio.CancelledError:
                # The backend may commit anyway: publish it, or watchers would miss an rv.
                with contextlib.suppress(Exception):
                    _, publish = await future
                    publish()
                raise
            publish()
            return text

    def _publish(self, resource: str, type_: str, text: str) -> None:
        obj = json.loads(text)
        meta = obj["metadata"]
        row = (int(meta["resourceVersion"]), type_, text)
        for sub in list(self._subscribers):
            sub.offer(resource, str(meta.get("namespace") or ""), row)
            if sub.ended:
                self._subscribers.discard(sub)

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(json.dumps(obj))
        now, uid = format_time(self._now()), str(uuid.uuid4())

        def run(b: Backend) -> str:
            text = op_create(b, resource, data, now, uid)
            return text

        text = await self._write(self._and_publish(resource, ADDED, run))
        return json.loads(text)

    async def update(
        self, resource: str, obj: dict[str, Any], *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        data = json.loads(json.dumps(obj))
        changed: list[bool] = []

        def run(b: Backend) -> str:
            text, did = op_update(b, resource, data, expect_rv)
            changed.append(did)
            return text

        text = await self._write(self._and_publish(resource, MODIFIED, run, lambda: changed[0]))
        return json.loads(text)

    async def delete(
        self, resource: str, namespace: str, name: str, *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        def run(b: Backend) -> str:
            return op_delete(b, resource, namespace, name, expect_rv)

        text = await self._write(self._and_publish(resource, DELETED, run))
        return json.loads(text)

    def _and_publish(
        self,
        resource: str,
        type_: str,
        run: Callable[[Backend], str],
        changed: Callable[[], bool] = lambda: True,
    ) -> Callable[[Backend], tuple[str, Callable[[], None]]]:
        """Wrap a backend op so its result carries the publication to make in the loop."""

        def wrapped(b: Backend) -> tuple[str, Callable[[], None]]:
            text = run(b)

            def publish() -> None:
                if changed():
                    self._publish(resource, type_, text)

            return text, publish

        return wrapped

    def watch(
        self, resource: str, namespace: str | None = None, *, since_rv: str | None = None
    ) -> Watch:
        self._check_open()
        return _EngineWatch(self, resource, namespace, since_rv)

    def _subscribe(self, resource: str, namespace: str | None) -> _Subscriber:
        self._check_open()
        sub = _Subscriber(resource, namespace, self._watch_queue)
        self._subscribers.add(sub)
        return sub

    def _unsubscribe(self, sub: _Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.end("closed")

    def _end_watches(self) -> None:
        self._closed = True
        for sub in list(self._subscribers):
            sub.end("closed")
        self._subscribers.clear()


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise StatusError(bad_request(f"invalid resource version: {text!r}"))
    return value


class _EngineWatch(StoreWatch[EngineStore]):
    def __init__(
        self, store: EngineStore, resource: str, namespace: str | None, since: str | None
    ) -> None:
        super().__init__(store, resource, namespace, since)
        # Subscribed now, not at the first event: what happens from here on is queued.
        self._sub = store._subscribe(resource, namespace)
        self._started = False
        self._buffer: deque[Row] = deque()
        self._last = 0
        self._closed = False

    async def _start(self) -> None:
        store, resource, namespace = self._store, self._resource, self._namespace
        if self._lists_first:
            texts, rv = await store._call(lambda b: b.scan(resource, namespace))
            self._buffer.extend((0, ADDED, t) for t in texts)
            self._last = rv
            return
        since = _parse_rv(self._since or "")
        rows, compacted = await store._call(lambda b: b.history(resource, namespace, since))
        if since < compacted:
            raise StatusError(expired(f"too old resource version: {since} ({compacted})"))
        self._buffer.extend(rows)
        self._last = max([since, *(r[0] for r in rows)])

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            try:
                await self._start()
            except BaseException:
                await self.close()
                raise
        while True:
            if self._buffer:
                _, type_, text = self._buffer.popleft()
                return WatchEvent(type_, json.loads(text))
            sub = self._sub
            while sub.items:
                rv, type_, text = sub.items.popleft()
                if rv > self._last:
                    self._last = rv
                    return WatchEvent(type_, json.loads(text))
            if sub.ended == "overflow":
                await self.close()
                raise self._fell_behind(sub.limit)
            if sub.ended:
                await self.close()
                raise StopAsyncIteration
            sub.wake.clear()
            await sub.wake.wait()

    async def close(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._store._unsubscribe(self._sub)
