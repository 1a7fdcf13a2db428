"""Session slots counted across every API server sharing the store (protocol.md 11.4).

Each API server keeps one record in the store (resource ``sessionslots``, internal:
never served), named after its identity Lease (:mod:`.leader`), holding how many slots
each user holds through it, per kind (``exec sessions``, ``follow-log streams``).
Taking a slot is *publish, then read*: the server writes its own counts, the new slot
included, with a resourceVersion precondition, then lists every record and sums those
of live servers. Of two servers taking the last slot at once, the one that reads second
sees both claims, so the bound can be undershot under a race but never exceeded.
Giving a slot back only lowers the counts; it is written in the background, coalesced.

A record counts only while the identity Lease of its server is live: a crashed server's
slots are free once its Lease expires, and the renewal loop of any server deletes the
records of servers without one. With no other server's record holding anything the
Leases are not read at all: a single API server pays one write and one list per slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.store.base import Store

log = logging.getLogger(__name__)

RESOURCE = "sessionslots"
KIND = "SessionSlots"
API_VERSION = "hatchway.dev/v1"
WRITE_TRIES = 5

Counts = dict[str, dict[str, int]]  # kind -> user -> slots


class SlotLedger:
    """This server's record, and the sums over everyone's (see module docstring)."""

    def __init__(
        self, store: Store, server: str, live_servers: Callable[[], Awaitable[set[str]]]
    ) -> None:
        self.store = store
        self.server = server
        self.live_servers = live_servers
        self._counts: Counts = {}
        self._written: Counts | None = None
        self._rv: str | None = None
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def note(self, kind: str, by_user: Mapping[str, int]) -> None:
        self._counts[kind] = {u: n for u, n in by_user.items() if n > 0}

    async def claim(self, kind: str, by_user: Mapping[str, int], user: str) -> tuple[int, int]:
        """Publish ``by_user`` (this server's counts, the new slot included), then what
        the other live servers hold: (slots of ``user``, slots in total)."""
        self.note(kind, by_user)
        await self.publish()
        records, _ = await self.store.list(RESOURCE)
        others = [
            r
            for r in records
            if r["metadata"]["name"] != self.server and any(_counts(r).get(kind, {}).values())
        ]
        if others:
            live = await self.live_servers()
            others = [r for r in others if r["metadata"]["name"] in live]
        of_user = sum(_counts(r).get(kind, {}).get(user, 0) for r in others)
        total = sum(sum(_counts(r).get(kind, {}).values()) for r in others)
        return of_user, total

    def released(self, kind: str, by_user: Mapping[str, int]) -> None:
        """A slot went back: write the lower counts soon (coalesced, in the background)."""
        self.note(kind, by_user)
        if self._closed or (self._flusher is not None and not self._flusher.done()):
            return
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush(), name="hatchway-slot-ledger"
        )

    async def _flush(self) -> None:
        try:
            await self.publish()
        except (StatusError, OSError) as exc:  # the next claim or release writes again
            log.warning("session slots of %s not written: %s", self.server, exc)

    async def publish(self) -> None:
        """Write this server's counts if they changed since the last write."""
        async with self._lock:
            for _ in range(WRITE_TRIES):
                counts = {k: dict(v) for k, v in self._counts.items() if v}
                if counts == self._written:
                    return
                if await self._write(counts):
                    self._written = counts
                    return
            raise StatusError(
                status.internal_error(f"session slots of {self.server}: too many conflicts")
            )

    async def _write(self, counts: Counts) -> bool:
        obj: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.server},
            "slots": counts,
        }
        try:
            if self._rv is None:
                stored = await self.store.create(RESOURCE, obj)
            else:
                stored = await self.store.update(RESOURCE, obj, expect_rv=self._rv)
        except StatusError as exc:
            if exc.code not in (404, 409):
                raise
            # Ours was collected (a lease that lapsed) or written elsewhere: read again.
            try:
                current = await self.store.get(RESOURCE, "", self.server)
                self._rv = current["metadata"]["resourceVersion"]
            except StatusError as missing:
                if missing.code != 404:
                    raise
                self._rv = None
            return False
        self._rv = stored["metadata"]["resourceVersion"]
        return True

    async def collect(self, live: set[str]) -> None:
        """Delete the records of servers whose identity Lease is gone or expired."""
        records, _ = await self.store.list(RESOURCE)
        for record in records:
            meta = record["metadata"]
            if meta["name"] in live or meta["name"] == self.server:
                continue
            with contextlib.suppress(StatusError):
                await self.store.delete(
                    RESOURCE, "", meta["name"], expect_rv=meta.get("resourceVersion")
                )
                log.info("session slots of %s freed: its identity lease expired", meta["name"])

    async def close(self) -> None:
        """Stop writing and remove this server's record (its sessions are over)."""
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(StatusError, OSError):
            await self.store.delete(RESOURCE, "", self.server)


def _counts(record: Mapping[str, Any]) -> Counts:
    slots = record.get("slots")
    return slots if isinstance(slots, dict) else {}
