"""A Store watch on an etcd watch stream (protocol.md 10.3).

One reader task per watch drains the stream into a bounded queue, so etcd is never
made to buffer for a slow consumer: a watcher more than ``watch_queue`` events behind is
dropped with 410, as the other stores do. A stream that breaks (an etcd member lost) is
reopened, on the next endpoint, from the revision after the last one delivered, so no
event is lost or repeated. A start at a compacted revision is 410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from hatchway.api import resources
from hatchway.api.status import StatusError, expired, internal_error
from hatchway.errors import ConnectionClosedError, ProtocolError
from hatchway.store import etcdwire as wire
from hatchway.store.base import ADDED, BOOKMARK, DELETED, MODIFIED, StoreWatch, WatchEvent
from hatchway.store.engine import _parse_rv

if TYPE_CHECKING:
    from hatchway.store.etcd import EtcdStore

#: The field of a stored value naming the write that stored it (protocol.md 10.6);
#: never shown to clients.
WRITE_MARKER = "hatchway.io/write"

#: Reopening a broken stream: attempts, and the first pause (doubling each time).
REOPEN_ATTEMPTS = 5
REOPEN_PAUSE = 0.2


def object_of(value: bytes, rev: int) -> dict[str, Any]:
    """A stored value as the object it holds, its resourceVersion set to ``rev``."""
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise StatusError(internal_error(f"etcd holds a value that is not JSON: {exc}")) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise StatusError(internal_error("etcd holds a value that is not an object"))
    obj.pop(WRITE_MARKER, None)
    obj["metadata"]["resourceVersion"] = str(rev)
    return obj


def _event(change: wire.Change) -> WatchEvent:
    kv = change.kv
    if not change.deleted:
        kind = ADDED if kv.create_revision == kv.mod_revision else MODIFIED
        return WatchEvent(kind, object_of(kv.value, kv.mod_revision))
    if change.prev is not None:
        return WatchEvent(DELETED, object_of(change.prev.value, kv.mod_revision))
    # The previous value was compacted away: name the key, as much as etcd still knows.
    name = kv.key.rsplit(b"/", 1)[-1].decode("utf-8", "replace")
    meta = {"name": name, "resourceVersion": str(kv.mod_revision)}
    return WatchEvent(DELETED, {"metadata": meta})


class EtcdWatch(StoreWatch["EtcdStore"]):
    def __init__(
        self, store: EtcdStore, resource: str, namespace: str | None, since: str | None
    ) -> None:
        super().__init__(store, resource, namespace, since)
        self._prefix = store.key_prefix(resource, namespace)
        self._queue: deque[WatchEvent] = deque()
        self._wake = asyncio.Event()
        self._ended: BaseException | None = None  # StopAsyncIteration or a StatusError
        self._reader: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._next_rev = 0  # the revision the stream resumes at

    async def _start(self) -> None:
        if self._lists_first:
            items, rv = await self._store.list(self._resource, self._namespace)
            self._queue.extend(WatchEvent(ADDED, obj) for obj in items)
            self._next_rev = int(rv) + 1
        else:
            self._next_rev = _parse_rv(self._since or "") + 1
        response = await self._open()
        self._reader = asyncio.get_running_loop().create_task(
            self._read(response), name=f"hatchway-etcd-watch-{self._resource}"
        )

    async def _open(self) -> Any:
        body = wire.watch_body(self._prefix, wire.prefix_end(self._prefix), self._next_rev)
        try:
            return await self._store.client.open_watch(body)
        except (wire.EtcdError, ConnectionClosedError) as exc:
            raise StatusError(internal_error(str(exc))) from exc

    async def _read(self, response: Any) -> None:
        attempt = 0
        while True:
            try:
                async with response:
                    await self._pump(response)
                if self._ended is not None:
                    return
                attempt = 0
            except StatusError as exc:
                self._end(exc)
                return
            except wire.EtcdError as exc:  # nonsense or too big: reopening would repeat it
                self._end(StatusError(internal_error(str(exc))))
                return
            except (ConnectionClosedError, OSError, ProtocolError):
                pass  # an etcd member went away, or cut a chunk: reopen where we were
            except Exception as exc:  # never leave the consumer waiting on a dead reader
                self._end(StatusError(internal_error(f"etcd watch failed: {exc!r}")))
                return
            attempt += 1
            if attempt > REOPEN_ATTEMPTS:
                self._end(StatusError(internal_error("etcd watch stream lost; watch again")))
                return
            await asyncio.sleep(REOPEN_PAUSE * 2 ** (attempt - 1))
            try:
                response = await self._open()
            except StatusError:
                continue

    async def _pump(self, response: Any) -> None:
        splitter = wire.LineSplitter(self._store.max_event)
        async for chunk in response:
            for line in splitter.feed(chunk):
                self._handle(wire.parse_watch(line))
            if self._ended is not None:
                return

    def _handle(self, message: wire.WatchMessage) -> None:
        if message.canceled:
            if message.compact_revision:
                since = self._next_rev - 1
                text = f"too old resource version: {since} ({message.compact_revision})"
                raise StatusError(expired(text))
            reason = message.cancel_reason or "no reason given"
            raise StatusError(internal_error(f"etcd cancelled the watch: {reason}"))
        for change in message.changes:
            self._offer(_event(change))
            self._next_rev = change.kv.mod_revision + 1
        if message.progress and message.revision >= self._next_rev - 1:
            self._next_rev = message.revision + 1
            if len(self._queue) < self._store.watch_queue:
                self._offer(self._bookmark(message.revision))

    def _bookmark(self, rev: int) -> WatchEvent:
        res = resources.by_name(self._resource)
        version = f"{res.group}/{res.version}" if res and res.group else "v1"
        head = {"kind": res.kind, "apiVersion": version} if res else {}
        return WatchEvent(BOOKMARK, {**head, "metadata": {"resourceVersion": str(rev)}})

    def _offer(self, event: WatchEvent) -> None:
        if len(self._queue) >= self._store.watch_queue:
            raise self._fell_behind(self._store.watch_queue)
        self._queue.append(event)
        self._wake.set()

    def _end(self, why: BaseException) -> None:
        if self._ended is None:
            self._ended = why
            if isinstance(why, StatusError) and why.code == 410 and "fell" in why.message:
                self._queue.clear()  # a dropped watcher gets the error, not the backlog
        self._wake.set()

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            try:
                await self._start()
            except BaseException:
                closed = self._closed
                await self.close()
                if closed:
                    raise StopAsyncIteration from None
                raise
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._ended is not None:
                await self.close()
                if isinstance(self._ended, StatusError):
                    raise self._ended
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._end(StopAsyncIteration())
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._store.forget(self)
