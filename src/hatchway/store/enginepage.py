"""Paged reads over an engine :class:`~hatchway.store.engine.Backend`, in one backend
call so a page and the checks before it see one state (protocol.md 10.5)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from hatchway.api import resources
from hatchway.errors import HatchwayError
from hatchway.store import paging

if TYPE_CHECKING:
    from hatchway.store.engine import Backend


def _split_start(resource: str, namespace: str | None, start: str) -> tuple[str, str]:
    """A continue token's start key (relative to the list's key prefix, as etcd's
    ``{ns}/{name}`` or ``{name}``) as the (namespace, name) position it stands for."""
    res = resources.by_name(resource)
    if namespace is not None or (res is not None and not res.namespaced):
        return namespace or "", start
    ns, _, name = start.partition("/")
    return ns, name


def _join_start(resource: str, namespace: str | None, ns: str, name: str) -> str:
    res = resources.by_name(resource)
    if namespace is not None or (res is not None and not res.namespaced):
        return name + "\0"
    return f"{ns}/{name}\0"


def op_page(
    backend: Backend,
    resource: str,
    namespace: str | None,
    *,
    limit: int,
    start: str,
    at: int,
    match: paging.Match | None,
) -> tuple[list[str], int, str, int | None]:
    """One page, read atomically: (JSON texts, list rv, next start key or "", remaining).

    ``at`` is the revision the list must show (0: now, as for a first page). Nothing in
    scope changed since ``at``: the objects as they are. Otherwise the objects changed
    since are put back as they were at ``at`` from the events' previous states; when
    those events are pruned (``at`` older than the history kept), :class:`StaleReadError`."""
    current = backend.rv()
    if at > current:
        raise paging.too_large(at, current)
    source = backend.page
    if 0 < at < current:
        changed, compacted = backend.changes(resource, namespace, at)
        if changed is None or at < compacted:
            raise StaleReadError(compacted)
        if changed:
            source = _snapshot(backend, resource, namespace, changed)
    rv = at or current
    position = _split_start(resource, namespace, start) if start else ("", "")
    texts: list[str] = []
    chunk = limit
    while True:
        rows, count = source(resource, namespace, position, chunk)
        for i, (ns, name, text) in enumerate(rows):
            if match is None or match(json.loads(text)):
                texts.append(text)
            if len(texts) == limit:
                more = i + 1 < count
                after = _join_start(resource, namespace, ns, name) if more else ""
                remaining = count - i - 1 if match is None else None
                return texts, rv, after, remaining if more else None
        if len(rows) >= count:
            return texts, rv, "", None
        ns, name, _ = rows[-1]
        position = (ns, name + "\0")
        chunk = min(chunk * 2, paging.MAX_LIMIT)


PageSource = Callable[
    [str, "str | None", tuple[str, str], int], tuple[list[tuple[str, str, str]], int]
]


def _snapshot(
    backend: Backend,
    resource: str,
    namespace: str | None,
    changed: dict[tuple[str, str], str | None],
) -> PageSource:
    """The scope as it was: today's objects with every changed key put back as it was
    (or left out, if it did not exist then). Reads the whole scope once."""
    rows, _ = backend.page(resource, namespace, ("", ""), EVERYTHING)
    state = {(ns, name): text for ns, name, text in rows}
    for key, then in changed.items():
        if then is None:
            state.pop(key, None)
        else:
            state[key] = then
    keys = sorted(state)

    def page(
        _resource: str, _namespace: str | None, start: tuple[str, str], limit: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        first = bisect.bisect_left(keys, start)
        chosen = keys[first : first + limit]
        return [(k[0], k[1], state[k]) for k in chosen], len(keys) - first

    return page


#: A limit that is no limit, for a backend's ``page``.
EVERYTHING = 2**62


class StaleReadError(HatchwayError):
    """A paged read at a revision this store can no longer show."""

    def __init__(self, compacted: int) -> None:
        super().__init__(compacted)
        self.compacted = compacted
