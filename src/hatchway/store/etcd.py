"""The Store on etcd v3, keyed and versioned the way kube-apiserver uses etcd.

Keys are ``{prefix}/{resource}/{namespace}/{name}`` (``{prefix}/{resource}/{name}`` for
cluster-scoped resources; ``prefix`` is ``/registry`` as ``--etcd-prefix`` defaults in
Kubernetes). Values are the object's JSON without ``resourceVersion``: an object's
resourceVersion is its key's mod revision, stamped in on every read. Create is a
transaction on ``create_revision == 0``; update and delete are transactions comparing
the mod revision read just before (a stale precondition, or a race lost with no
precondition given too many times, is 409 Conflict); each stored value carries its
write's marker, so a write whose answer was lost is recognised as ours on retry, never a
409 (protocol.md 10.6). Lists read page by page (``limit``) at the first page's
revision, so a list is one consistent snapshot however large (protocol.md 10.5). Watches
start at a revision; a start that etcd has compacted is 410 Expired; etcd's progress
notifications become BOOKMARK events. Compaction runs every ``compaction_interval``
seconds and compacts to the revision seen one interval before, guarded by a key all API
servers share so several of them compact once per interval, as kube-apiserver's
compactor does. See :mod:`hatchway.store.etcdclient` for why the JSON gateway over our
own HTTP client is the client (protocol.md 10.2, 10.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
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
    internal_error,
    invalid,
    not_found,
    required,
)
from hatchway.errors import ConnectionClosedError
from hatchway.store import etcdwire as wire
from hatchway.store import paging
from hatchway.store.base import Store, Watch
from hatchway.store.engine import _NAME_CHARS, _group, _key, _without_rv
from hatchway.store.etcdclient import EtcdClient, EtcdUnavailableError
from hatchway.store.etcdwatch import WRITE_MARKER, EtcdWatch, object_of

log = logging.getLogger(__name__)

#: How many times an update or delete without a precondition rereads after losing a race.
RETRIES = 16
#: gRPC codes etcd answers while it has no leader or a proposal timed out: retried (and
#: such a write may still have been applied).
TRANSIENT = frozenset({4, 14})


def _segment(text: str, what: str) -> str:
    if "/" in text or text in (".", ".."):
        raise StatusError(bad_request(f"invalid {what} {text!r}: it may not contain '/'"))
    return text


class EtcdStore(Store):
    """``EtcdStore(client)``: a Store on the etcd cluster ``client`` talks to.

    ``page_size`` bounds each range read; ``watch_queue`` bounds each watcher's backlog
    (falling further behind ends the watch with 410, as the other stores do);
    ``compaction_interval`` (seconds, 0 for never) is kube-apiserver's
    ``--etcd-compaction-interval``; ``history`` (revisions, optional) also compacts
    whenever more than twice that many revisions accumulated since the last compaction,
    keeping the last ``history``; ``retry_for`` (seconds) is how long a request is
    retried while no etcd member answers or the cluster has no leader (an election after
    a member is lost). Construct it inside a running event loop.
    """

    def __init__(
        self,
        client: EtcdClient,
        *,
        prefix: str = "/registry",
        page_size: int = 500,
        watch_queue: int = 1000,
        max_event: int = 8 * 1024 * 1024,
        compaction_interval: float = 300.0,
        history: int | None = None,
        retry_for: float = 10.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.retry_for = retry_for
        self.prefix = prefix.rstrip("/")
        self.page_size = page_size
        self.watch_queue = watch_queue
        self.max_event = max_event
        self.history = history
        self._now = now or (lambda: datetime.now(UTC))
        self._watches: set[EtcdWatch] = set()
        self._closed = False
        self._compacted = 0  # the last revision this store compacted to (or saw at start)
        self._compact_lock = asyncio.Lock()
        self._compactor: asyncio.Task[None] | None = None
        if compaction_interval > 0:
            self._compactor = asyncio.get_running_loop().create_task(
                self._compact_every(compaction_interval), name="hatchway-etcd-compactor"
            )

    # -- keys ----------------------------------------------------------------------------
    def key(self, resource: str, namespace: str, name: str) -> bytes:
        res = resources.by_name(resource)
        parts = [self.prefix, _segment(resource, "resource")]
        if namespace and (res is None or res.namespaced):
            parts.append(_segment(namespace, "namespace"))
        parts.append(_segment(name, "name"))
        return "/".join(parts).encode()

    def key_prefix(self, resource: str, namespace: str | None) -> bytes:
        parts = [self.prefix, _segment(resource, "resource")]
        res = resources.by_name(resource)
        if namespace is not None and (res is None or res.namespaced):
            parts.append(_segment(namespace, "namespace"))
        return ("/".join(parts) + "/").encode()

    # -- requests ------------------------------------------------------------------------
    async def call(self, path: str, body: bytes) -> dict[str, Any]:
        return (await self._call(path, body))[0]

    async def _call(self, path: str, body: bytes) -> tuple[dict[str, Any], bool]:
        """The answer, and whether the request may also have been applied by an earlier
        attempt whose answer was lost. Retried for ``retry_for`` seconds while etcd is
        unreachable or has no leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        pause, maybe_sent = 0.05, False
        while True:
            if self._closed:
                raise ConnectionClosedError("store is closed")
            try:
                data, resent = await self.client.call_write(path, body)
                return data, maybe_sent or resent
            except wire.EtcdError as exc:
                if exc.code == wire.OUT_OF_RANGE:
                    raise StatusError(expired(f"too old resource version: {exc}")) from exc
                if exc.code not in TRANSIENT or loop.time() + pause > deadline:
                    raise StatusError(internal_error(str(exc))) from exc
                maybe_sent = True  # a timed-out proposal may still commit
            except EtcdUnavailableError as exc:
                maybe_sent |= exc.maybe_sent
                if loop.time() + pause > deadline:
                    raise StatusError(internal_error(str(exc))) from exc
            except ConnectionClosedError as exc:
                raise StatusError(internal_error(str(exc))) from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _read(self, key: bytes) -> tuple[wire.KeyValue | None, int]:
        result = wire.parse_range(await self.call("/v3/kv/range", wire.range_body(key)))
        return (result.kvs[0] if result.kvs else None), result.revision

    @staticmethod
    def _encode(obj: dict[str, Any], marker: str) -> bytes:
        return json.dumps(
            {**_without_rv(obj), WRITE_MARKER: marker}, separators=(",", ":")
        ).encode()

    # -- Store ---------------------------------------------------------------------------
    async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        kv, _ = await self._read(self.key(resource, namespace, name))
        if kv is None:
            raise StatusError(not_found(resource, name, _group(resource)))
        return object_of(kv.value, kv.mod_revision)

    async def list(
        self, resource: str, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.list_page(resource, namespace, limit=self.page_size, continue_=token)
            items.extend(page.items)
            token = page.continue_
            if not token:
                break
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return items, page.resource_version

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
        """Pages in key order; every page of one list reads at the first page's revision
        (kube-apiserver's etcd3 ``GetList``, protocol.md 10.5)."""
        limit = paging.clamp_limit(limit)
        prefix = self.key_prefix(resource, namespace)
        start, rev, at_least = prefix, 0, 0
        if continue_:
            rev, suffix = paging.decode_continue(continue_)
            rev = max(rev, 0)  # LATEST: read now
            start = prefix + suffix.encode()
        elif resource_version and resource_version != "0":
            wanted = paging.parse_rv(resource_version)
            rev, at_least = (wanted, 0) if exact else (0, wanted)
        items: list[dict[str, Any]] = []
        chunk = min(limit, self.page_size) if match else limit
        while True:
            result = await self._range_page(start, prefix, rev, chunk, bool(continue_))
            if result.revision < at_least:
                raise paging.too_large(at_least, result.revision)
            rev = rev or result.revision
            for i, kv in enumerate(result.kvs):
                obj = object_of(kv.value, kv.mod_revision)
                if match is None or match(obj):
                    items.append(obj)
                if len(items) == limit:
                    if i + 1 == len(result.kvs) and not result.more:
                        return paging.ListPage(items, str(rev))
                    token = paging.encode_continue(rev, (kv.key[len(prefix) :] + b"\0").decode())
                    remaining = result.count - i - 1 if match is None else None
                    return paging.ListPage(items, str(rev), token, remaining)
            if not result.more or not result.kvs:
                return paging.ListPage(items, str(rev))
            start = result.kvs[-1].key + b"\0"
            chunk = min(chunk * 2, paging.MAX_LIMIT)

    async def _range_page(
        self, start: bytes, prefix: bytes, rev: int, limit: int, continuing: bool
    ) -> wire.RangeResult:
        body = wire.range_body(start, wire.prefix_end(prefix), rev=rev, limit=limit)
        try:
            return wire.parse_range(await self.call("/v3/kv/range", body))
        except StatusError as exc:
            if exc.code != 410:
                raise
            if "future revision" in exc.message:
                current = int(await self.current_rv())
                raise paging.too_large(rev, current) from None
            if continuing:
                raise paging.continue_expired(start[len(prefix) :].decode()) from None
            raise StatusError(expired(f"too old resource version: {rev}")) from None

    async def current_rv(self) -> str:
        body = wire.range_body(self.prefix.encode() + b"/", count_only=True)
        return str(wire.revision(await self.call("/v3/kv/range", body)))

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(json.dumps(obj))
        namespace, name = _key(resource, data)
        meta = data["metadata"]
        generated = not name
        if generated and not meta.get("generateName"):
            _missing_name(resource)
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = meta.get("creationTimestamp") or format_time(self._now())
        marker = uuid.uuid4().hex
        for _ in range(8 if generated else 1):
            if generated:
                meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
            key = self.key(resource, namespace, meta["name"])
            txn, _ = await self._txn(wire.create_txn(key, self._encode(data, marker)))
            if (rev := _written(txn, marker)) is not None:
                meta["resourceVersion"] = str(rev)
                await self._after_write(rev)
                return data
        raise StatusError(already_exists(resource, meta["name"], _group(resource)))

    async def update(
        self, resource: str, obj: dict[str, Any], *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        data = json.loads(json.dumps(obj))
        namespace, name = _key(resource, data)
        key = self.key(resource, namespace, name)
        expect = expect_rv or data["metadata"].get("resourceVersion")
        kv, _ = await self._read(key)
        marker = uuid.uuid4().hex
        for _ in range(RETRIES):
            if kv is None:
                raise StatusError(not_found(resource, name, _group(resource)))
            if expect and expect != str(kv.mod_revision):
                break
            stored = object_of(kv.value, kv.mod_revision)
            for field in ("uid", "creationTimestamp"):
                if field in stored["metadata"]:
                    data["metadata"][field] = stored["metadata"][field]
            if _without_rv(data) == _without_rv(stored):
                return stored
            value = self._encode(data, marker)
            txn, _ = await self._txn(wire.update_txn(key, value, kv.mod_revision))
            if (rev := _written(txn, marker)) is not None:
                data["metadata"]["resourceVersion"] = str(rev)
                await self._after_write(rev)
                return data
            kv = txn.current
        raise StatusError(conflict(resource, name, _group(resource), CONFLICT_MODIFIED))

    async def delete(
        self, resource: str, namespace: str, name: str, *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        key = self.key(resource, namespace, name)
        kv, _ = await self._read(key)
        for _ in range(RETRIES):
            if kv is None:
                raise StatusError(not_found(resource, name, _group(resource)))
            if expect_rv and expect_rv != str(kv.mod_revision):
                break
            txn, maybe_sent = await self._txn(wire.delete_txn(key, kv.mod_revision))
            if txn.succeeded or (maybe_sent and txn.current is None):
                # Gone after an attempt whose answer was lost: that was our delete (its
                # revision is then known only as at most the answer's, protocol.md 10.6).
                await self._after_write(txn.revision)
                return object_of(kv.value, txn.revision)
            kv = txn.current
        raise StatusError(conflict(resource, name, _group(resource), CONFLICT_MODIFIED))

    async def _txn(self, body: bytes) -> tuple[wire.TxnResult, bool]:
        data, maybe_sent = await self._call("/v3/kv/txn", body)
        return wire.parse_txn(data), maybe_sent

    def watch(
        self, resource: str, namespace: str | None = None, *, since_rv: str | None = None
    ) -> Watch:
        if self._closed:
            raise ConnectionClosedError("store is closed")
        watch = EtcdWatch(self, resource, namespace, since_rv)
        self._watches.add(watch)
        return watch

    def forget(self, watch: EtcdWatch) -> None:
        self._watches.discard(watch)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        for watch in list(self._watches):
            await watch.close()
        await self.client.close()

    # -- compaction ----------------------------------------------------------------------
    async def compact(self, rev: int) -> None:
        """Compact etcd's history to ``rev``: watches and reads before it get 410."""
        async with self._compact_lock:
            if rev <= self._compacted:
                return
            try:
                await self.call("/v3/kv/compaction", wire.compaction_body(rev))
            except StatusError as exc:
                if exc.code != 410:  # already compacted further: as good
                    raise
            self._compacted = rev

    async def _after_write(self, rev: int) -> None:
        if self.history is None:
            return
        if not self._compacted:
            self._compacted = max(1, rev - 1)
        if rev - self._compacted > 2 * self.history:
            await self.compact(rev - self.history)

    async def _compact_every(self, interval: float) -> None:
        """kube-apiserver's compactor: each tick bump a shared key if nobody else did
        since our last look, and compact to the revision of the previous tick."""
        guard = self.prefix.encode() + b"/compact_rev_key"
        version, previous = 0, 0
        while True:
            await asyncio.sleep(interval)
            try:
                txn_body = wire.guard_txn(guard, version, b"")
                data = await self.call("/v3/kv/txn", txn_body)
                txn = wire.parse_txn(data)
                if txn.succeeded:
                    version += 1
                    if previous:
                        await self.compact(previous)
                    previous = txn.revision
                else:
                    ranged = (data.get("responses") or [{}])[0].get("response_range", {})
                    version = wire.version_of(ranged)
                    previous = 0
            except (StatusError, wire.EtcdError) as exc:
                log.warning("etcd compaction skipped: %s", exc)


def _written(txn: wire.TxnResult, marker: str) -> int | None:
    """The revision our write is at: the txn's, or, when the compare failed because an
    earlier attempt of this very write was applied (its answer lost), the key's."""
    if txn.succeeded:
        return txn.revision
    current = txn.current
    if current is not None and _marker_of(current.value) == marker:
        return current.mod_revision
    return None


def _marker_of(value: bytes) -> str | None:
    try:
        obj = json.loads(value)
    except ValueError:
        return None
    return obj.get(WRITE_MARKER) if isinstance(obj, dict) else None


def _missing_name(resource: str) -> None:
    res = resources.by_name(resource)
    cause = required("metadata.name", "name or generateName is required")
    raise StatusError(invalid(res.kind if res else resource, "", [cause], _group(resource)))
