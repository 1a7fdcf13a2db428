"""Leader election over the store, and each API server's identity Lease (protocol.md 11).

Several API servers may share one store (etcd). The controllers that must run once in a
cluster (scheduler, node lifecycle, namespace deletion, event expiry) run only in the
API server that holds the Lease ``kube-system/hatchway-controller-manager``, as
kube-controller-manager's do: one Lease for all of them, since they share one store and
one failure mode and one renewal write per period is cheaper than five.
:class:`LeaderElector` follows client-go's ``leaderelection`` package:

* ``tryAcquireOrRenew``: read the Lease; a holder other than us whose record we have
  seen *unchanged* for less than its ``leaseDurationSeconds`` (timed on our own
  monotonic clock from when we saw it change, never by comparing ``renewTime`` with our
  wall clock) keeps it; otherwise write ourselves in with the resourceVersion we read
  (optimistic concurrency: of two candidates one gets 409 and loses). A renewal keeps
  ``acquireTime`` and ``leaseTransitions``; taking it over counts one more transition.
* while leading, renew every ``retry_period``; no renewal for ``renew_deadline`` (or
  another holder seen) means leadership is lost: the controllers are cancelled and
  awaited before anything else happens, then the elector is a candidate again.
* ``ReleaseOnCancel``: on a clean shutdown the holder is cleared (duration 1 s), so a
  successor takes over at its next retry instead of waiting out the lease.

:class:`IdentityLease` is kube-apiserver's ``kube-system/apiserver-<hash>`` Lease
(label ``apiserver.kubernetes.io/identity=kube-apiserver``), renewed every
``renew_interval``; expired ones (and the session-slot records of their servers,
:mod:`.slots`) are deleted by every server's renewal loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hatchway.api import lease as lease_api
from hatchway.api.status import StatusError
from hatchway.store.base import Store

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
CONTROLLER_LEASE = "hatchway-controller-manager"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY_VALUE = "kube-apiserver"
HOSTNAME_LABEL = "kubernetes.io/hostname"

Controller = Callable[[], Awaitable[None]]


def process_identity() -> str:
    """``<hostname>_<uuid>``: unique per process, as client-go's users build it."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaderTimings:
    """client-go's LeaderElectionConfig durations (kube-controller-manager's defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")


class LeaderElector:
    """Runs ``controllers`` while this process holds the Lease (see module docstring)."""

    def __init__(
        self,
        store: Store,
        identity: str,
        controllers: list[Controller],
        timings: LeaderTimings | None = None,
        *,
        name: str = CONTROLLER_LEASE,
        namespace: str = NAMESPACE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _wall,
        sole: bool = False,
    ) -> None:
        self.store = store
        self.identity = identity
        self.controllers = controllers
        #: No other process can open the store (its SQLite file): a Lease held by another
        #: identity is a dead process's, taken at once instead of after its duration.
        self.sole = sole
        self.timings = timings or LeaderTimings()
        self.name, self.namespace = name, namespace
        self.clock, self.wall = clock, wall
        self._election = lease_api.Election(identity, self.timings.lease_duration)
        self._observed: tuple[Any, float] | None = None  # (spec, when we saw it change)
        self.is_leader = False
        #: Set while leading (tests and callers wait on it).
        self.leading = asyncio.Event()
        self.transitions_seen = 0

    # -- one attempt ---------------------------------------------------------------------
    def _observe(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        if self._observed is None or self._observed[0] != spec:
            self._observed = (spec, self.clock())

    async def try_acquire_or_renew(self) -> bool:
        """One tryAcquireOrRenew; True if we hold the Lease after it."""
        try:
            current = await self.store.get("leases", self.namespace, self.name)
        except StatusError as exc:
            if exc.code != 404:
                raise
            spec = self._election.acquire_spec(None, self.wall())
            obj = lease_api.lease_object(self.namespace, self.name, spec)
            try:
                created = await self.store.create("leases", obj)
            except StatusError as exc2:
                if exc2.code == 409:
                    return False
                raise
            self._observe(created)
            return True
        self._observe(current)
        holder = lease_api.holder(current)
        if holder and holder != self.identity and not self.sole and not self._expired(current):
            return False
        update = dict(current)
        update["spec"] = self._election.acquire_spec(current, self.wall())
        try:
            stored = await self.store.update(
                "leases", update, expect_rv=current["metadata"].get("resourceVersion")
            )
        except StatusError as exc:
            if exc.code in (404, 409):
                return False
            raise
        self._observe(stored)
        return True

    def _expired(self, current: dict[str, Any]) -> bool:
        assert self._observed is not None
        duration = (current.get("spec") or {}).get("leaseDurationSeconds")
        seconds = duration if isinstance(duration, int) and duration > 0 else 1
        return self._observed[1] + seconds <= self.clock()

    async def _attempt(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout(deadline):
                return await self.try_acquire_or_renew()
        except (StatusError, OSError, TimeoutError) as exc:
            log.info("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Candidate, leader, candidate again..., until cancelled; then release."""
        try:
            while True:
                await self._acquire()
                await self._lead()
        except asyncio.CancelledError:
            await self.release()
            raise

    async def _acquire(self) -> None:
        t = self.timings
        while True:
            if await self._attempt(t.renew_deadline):
                break
            await asyncio.sleep(t.retry_period * (1 + 0.2 * random.random()))  # JitterUntil
        log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)

    async def _lead(self) -> None:
        self.is_leader = True
        self.leading.set()
        self.transitions_seen += 1
        running = asyncio.create_task(self._run_controllers(), name="hatchway-leading")
        try:
            await self._renew_loop()
        finally:
            self.is_leader = False
            self.leading.clear()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        log.warning("%s lost leadership of %s/%s", self.identity, self.namespace, self.name)

    async def _run_controllers(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for controller in self.controllers:
                    group.create_task(controller())
        except Exception:  # a controller's bug must not end the renewals unnoticed
            log.exception("a controller failed while leading")

    async def _renew_loop(self) -> None:
        t = self.timings
        renewed = self.clock()
        while True:
            await asyncio.sleep(t.retry_period)
            left = t.renew_deadline - (self.clock() - renewed)
            if left > 0 and await self._attempt(left):
                renewed = self.clock()
                continue
            if self._observed is not None and (
                lease_api.holder({"spec": self._observed[0]}) not in ("", self.identity)
            ):
                return  # someone else holds it: no point waiting for the deadline
            if self.clock() - renewed >= t.renew_deadline:
                return

    async def release(self) -> bool:
        """Clear the holder if it is us (ReleaseOnCancel); True if released."""
        if self._observed is None:  # never got as far as reading the Lease
            return False
        try:
            async with asyncio.timeout(self.timings.renew_deadline):
                current = await self.store.get("leases", self.namespace, self.name)
                if lease_api.holder(current) != self.identity:
                    return False
                update = dict(current)
                update["spec"] = self._election.release_spec(current, self.wall())
                await self.store.update(
                    "leases", update, expect_rv=current["metadata"].get("resourceVersion")
                )
        except (StatusError, OSError, TimeoutError) as exc:
            log.info("lease %s/%s not released: %s", self.namespace, self.name, exc)
            return False
        log.info("%s released %s/%s", self.identity, self.namespace, self.name)
        return True


def identity_lease_name(identity: str) -> str:
    """``apiserver-<26 base32 characters of sha256(identity)>``, as kube-apiserver names
    its identity Lease (it hashes the hostname; we hash the per-process identity, since
    several API servers may share a host)."""
    digest = hashlib.sha256(identity.encode()).digest()[:16]
    return "apiserver-" + base64.b32encode(digest).decode().rstrip("=").lower()


class IdentityLease:
    """This API server's identity Lease, renewed; expired ones of others collected."""

    def __init__(
        self,
        store: Store,
        identity: str,
        *,
        duration: float = 60.0,
        renew_interval: float = 10.0,
        on_expired: Callable[[set[str]], Awaitable[None]] | None = None,
        wall: Callable[[], datetime] = _wall,
    ) -> None:
        self.store = store
        self.identity = identity
        self.name = identity_lease_name(identity)
        self.duration = duration
        self.renew_interval = renew_interval
        self.on_expired = on_expired
        self.wall = wall

    def _spec(self) -> dict[str, Any]:
        stamp = lease_api.format_micro(self.wall())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": stamp,
            "renewTime": stamp,
        }

    async def renew(self) -> None:
        """Create or renew the Lease (it is ours alone: a conflict means a stale read)."""
        labels = {IDENTITY_LABEL: IDENTITY_VALUE, HOSTNAME_LABEL: socket.gethostname()}
        for _ in range(3):
            try:
                current = await self.store.get("leases", NAMESPACE, self.name)
            except StatusError as exc:
                if exc.code != 404:
                    raise
                obj = lease_api.lease_object(NAMESPACE, self.name, self._spec(), labels)
                with contextlib.suppress(StatusError):
                    await self.store.create("leases", obj)
                    return
                continue
            spec = self._spec()
            acquired = (current.get("spec") or {}).get("acquireTime")
            spec["acquireTime"] = acquired or spec["renewTime"]
            update = dict(current, spec=spec)
            try:
                await self.store.update(
                    "leases", update, expect_rv=current["metadata"].get("resourceVersion")
                )
                return
            except StatusError as exc:
                if exc.code not in (404, 409):
                    raise

    async def live(self) -> set[str]:
        """The names of the identity Leases not expired (by this server's wall clock)."""
        items, _ = await self.store.list("leases", NAMESPACE)
        now = self.wall()
        return {
            item["metadata"]["name"]
            for item in items
            if _is_identity(item) and not lease_api.expired(item, now)
        }

    async def collect(self) -> set[str]:
        """Delete expired identity Leases (resourceVersion-checked: one just renewed
        stays); the set of the live ones."""
        items, _ = await self.store.list("leases", NAMESPACE)
        now = self.wall()
        live = set()
        for item in items:
            if not _is_identity(item):
                continue
            meta = item["metadata"]
            if not lease_api.expired(item, now):
                live.add(meta["name"])
                continue
            with contextlib.suppress(StatusError):
                await self.store.delete(
                    "leases", NAMESPACE, meta["name"], expect_rv=meta.get("resourceVersion")
                )
                log.info("identity lease %s expired: deleted", meta["name"])
        if self.on_expired is not None:
            await self.on_expired(live)
        return live

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                await self.collect()
            except (StatusError, OSError, RuntimeError) as exc:
                log.warning("identity lease %s: %s", self.name, exc)
            await asyncio.sleep(self.renew_interval)

    async def delete(self) -> None:
        """At a clean shutdown: nothing of this server should outlive it."""
        with contextlib.suppress(StatusError, OSError):
            await self.store.delete("leases", NAMESPACE, self.name)


def _is_identity(item: dict[str, Any]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return labels.get(IDENTITY_LABEL) == IDENTITY_VALUE
