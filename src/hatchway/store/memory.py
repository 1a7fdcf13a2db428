"""An in-memory Store with the same semantics as SQLite's, for tests of other layers."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hatchway.store.engine import Backend, EngineStore, Row


class MemoryBackend(Backend):
    def __init__(self, history: int) -> None:
        self._objects: dict[tuple[str, str, str], str] = {}
        self._events: deque[tuple[int, str, str, str, str, str, str | None]] = deque()
        self._history = history
        self._rv = 0
        self._compacted = 0

    def read(self, resource: str, namespace: str, name: str) -> str | None:
        return self._objects.get((resource, namespace, name))

    def scan(self, resource: str, namespace: str | None) -> tuple[list[str], int]:
        keys = sorted(
            k
            for k in self._objects
            if k[0] == resource and (namespace is None or k[1] == namespace)
        )
        return [self._objects[k] for k in keys], self._rv

    def page(
        self, resource: str, namespace: str | None, start: tuple[str, str], limit: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        keys = sorted(
            k
            for k in self._objects
            if k[0] == resource and (namespace is None or k[1] == namespace) and k[1:] >= start
        )
        return [(k[1], k[2], self._objects[k]) for k in keys[:limit]], len(keys)

    def commit(self, resource: str, namespace: str, name: str, type_: str, obj: dict) -> str:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        text = json.dumps(obj, separators=(",", ":"))
        prev = self._objects.get((resource, namespace, name))
        if type_ == "DELETED":
            self._objects.pop((resource, namespace, name), None)
        else:
            self._objects[(resource, namespace, name)] = text
        self._events.append((self._rv, resource, namespace, type_, text, name, prev))
        while len(self._events) > self._history:
            self._compacted = self._events.popleft()[0]
        return text

    def history(self, resource: str, namespace: str | None, after: int) -> tuple[list[Row], int]:
        rows = [
            (rv, type_, text)
            for rv, res, ns, type_, text, _, _ in self._events
            if rv > after and res == resource and (namespace is None or ns == namespace)
        ]
        return rows, self._compacted

    def changes(
        self, resource: str, namespace: str | None, after: int
    ) -> tuple[dict[tuple[str, str], str | None] | None, int]:
        then: dict[tuple[str, str], str | None] = {}
        for rv, res, ns, _, _, name, prev in self._events:
            if rv > after and res == resource and (namespace is None or ns == namespace):
                then.setdefault((ns, name), prev)
        return then, self._compacted

    def rv(self) -> int:
        return self._rv

    def close(self) -> None:
        pass


class MemoryStore(EngineStore):
    """Objects in a dict, the last ``history`` events in a deque. Nothing survives."""

    def __init__(
        self,
        *,
        history: int = 10000,
        watch_queue: int = 1000,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(watch_queue=watch_queue, now=now)
        self._backend = MemoryBackend(history)

    def _submit(self, fn: Callable[[Backend], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(fn(self._backend))
        except Exception as exc:
            future.set_exception(exc)
        return future

    async def close(self) -> None:
        self._end_watches()
