"""The Store interface: Kubernetes-shaped objects by (resource, namespace, name), with a
global, monotonically increasing ``resourceVersion`` and watches that replay history.

Objects are plain JSON dicts. Every failure is an :class:`hatchway.api.status.StatusError`
carrying the Status a Kubernetes API server would answer with: NotFound (404),
AlreadyExists (409), Conflict (409), Expired (410, "too old resource version").
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hatchway.api.status import StatusError, expired
from hatchway.store.paging import ListPage, Match

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``type`` is ADDED, MODIFIED, DELETED (or BOOKMARK); ``object`` the
    object after the change (for DELETED, its last state, with the deletion's
    resourceVersion)."""

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> int:
        return int(self.object["metadata"]["resourceVersion"])

    def to_json(self) -> dict[str, Any]:
        """The watch stream line: ``{"type": ..., "object": ...}``."""
        return {"type": self.type, "object": self.object}


class Watch(abc.ABC, AsyncIterator[WatchEvent]):
    """An open watch: iterate for events, close when done (also ``async with``).

    Iteration raises StatusError 410 Expired if the starting resourceVersion is older
    than the history kept, or if this watcher fell too far behind and was dropped; it
    ends (StopAsyncIteration) when the watch or the store is closed.
    """

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Watch:
        return self


class Store(abc.ABC):
    """Asynchronous storage of objects, keyed by (resource, namespace, name).

    ``namespace`` is ``""`` for cluster-scoped resources. Objects returned are the
    caller's to modify.
    """

    @abc.abstractmethod
    async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """The object, or StatusError 404 NotFound."""

    @abc.abstractmethod
    async def list(
        self, resource: str, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects of ``resource`` (in ``namespace``, or in all namespaces when None),
        sorted by namespace then name, and the store's current resourceVersion."""

    @abc.abstractmethod
    async def list_page(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        limit: int,
        continue_: str | None = None,
        resource_version: str | None = None,
        exact: bool = False,
        match: Match | None = None,
    ) -> ListPage:
        """At most ``limit`` objects (clamped to ``paging.MAX_LIMIT``; 0 is that
        maximum) in key order from where ``continue_`` says, those ``match`` accepts.

        Without ``continue_``: the list as of now, or with ``resource_version`` as of no
        earlier than it (504 if the store is not there yet), or exactly at it when
        ``exact`` (410 if that is no longer available). Every later page of one list
        shows the same revision as its first; a token whose revision is gone is 410 with
        a fresh token in the Status's ``metadata.continue`` (protocol.md 10.5), a token
        that does not parse is 400."""

    @abc.abstractmethod
    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object; assigns resourceVersion, and uid, creationTimestamp and a
        name from ``generateName`` when missing. 409 AlreadyExists if the key is taken."""

    @abc.abstractmethod
    async def update(
        self, resource: str, obj: dict[str, Any], *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        """Replace an existing object (404 if none). The precondition is ``expect_rv``,
        else ``obj``'s own ``metadata.resourceVersion`` if set: a stale one is 409
        Conflict. uid and creationTimestamp are kept from the stored object. An update
        that changes nothing returns the stored object unchanged, with no event."""

    @abc.abstractmethod
    async def delete(
        self, resource: str, namespace: str, name: str, *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        """Remove and return the object (with the deletion's resourceVersion); 404 if
        missing, 409 Conflict if ``expect_rv`` is stale."""

    @abc.abstractmethod
    def watch(
        self, resource: str, namespace: str | None = None, *, since_rv: str | None = None
    ) -> Watch:
        """Changes to ``resource`` (in ``namespace``, or all). With ``since_rv`` unset,
        ``""`` or ``"0"``: synthetic ADDED events for what exists now, then live
        changes. Otherwise: the changes after ``since_rv`` from history, then live."""

    @abc.abstractmethod
    async def current_rv(self) -> str:
        """The resourceVersion of the latest change."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; open watches end."""


StoreT = TypeVar("StoreT", bound=Store)


class StoreWatch(Watch, Generic[StoreT]):
    """What every store's watch starts from: the store, ``resource`` (in ``namespace``,
    or in all when None) and the resourceVersion ``since`` as :meth:`Store.watch` was
    given it."""

    def __init__(
        self, store: StoreT, resource: str, namespace: str | None, since: str | None
    ) -> None:
        self._store = store
        self._resource = resource
        self._namespace = namespace
        self._since = since

    @property
    def _lists_first(self) -> bool:
        """Whether the watch begins with ADDED events for what exists (no ``since``, or
        ``""`` or ``"0"``) rather than with the history after ``since``."""
        return self._since in (None, "", "0")

    def _fell_behind(self, limit: int) -> StatusError:
        """The 410 for a watcher dropped for having more than ``limit`` events queued."""
        message = f"watch of {self._resource} fell more than {limit} events behind"
        return StatusError(expired(message + "; list and watch again"))
