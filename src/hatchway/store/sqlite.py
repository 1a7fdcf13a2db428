"""The default Store: one SQLite file in the data directory (stdlib ``sqlite3``, WAL).

All database work runs on one dedicated worker thread with one connection, so writes are
serialised and the event loop never blocks on disk. Objects live in ``objects``; every
change is also appended to ``events``, pruned to the last ``history`` resourceVersions,
which is what watches replay from. The rv counter and the compaction mark live in
``meta``, so both survive a restart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from hatchway.store.engine import Backend, EngineStore, Row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
    type TEXT NOT NULL, data TEXT NOT NULL, name TEXT, prev TEXT
);
CREATE INDEX IF NOT EXISTS events_by_resource ON events (resource, rv);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('rv', 0), ('compacted', 0);
"""


class SqliteBackend(Backend):
    def __init__(self, path: str, history: int) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        for column in ("name", "prev") if "prev" not in columns else ():
            # A database from before paged lists: its old events cannot tell (NULL).
            self._db.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT")
        self._history = history

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def read(self, resource: str, namespace: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        ).fetchone()
        return row[0] if row else None

    def scan(self, resource: str, namespace: str | None) -> tuple[list[str], int]:
        with self._db:  # one read transaction: the list and its rv agree
            self._db.execute("BEGIN")
            if namespace is None:
                cur = self._db.execute(
                    "SELECT data FROM objects WHERE resource=? ORDER BY namespace, name",
                    (resource,),
                )
            else:
                cur = self._db.execute(
                    "SELECT data FROM objects WHERE resource=? AND namespace=? ORDER BY name",
                    (resource, namespace),
                )
            return [r[0] for r in cur], self._meta("rv")

    def page(
        self, resource: str, namespace: str | None, start: tuple[str, str], limit: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        where = "resource=? AND (namespace, name) >= (?, ?)"
        args: tuple[Any, ...] = (resource, *start)
        if namespace is not None:
            where += " AND namespace=?"
            args += (namespace,)
        with self._db:  # one read transaction: the page and its count agree
            self._db.execute("BEGIN")
            sql = f"SELECT namespace, name, data FROM objects WHERE {where}"
            rows = self._db.execute(sql + " ORDER BY namespace, name LIMIT ?", (*args, limit))
            page = [(r[0], r[1], r[2]) for r in rows]
            count = self._db.execute(f"SELECT COUNT(*) FROM objects WHERE {where}", args)
            return page, int(count.fetchone()[0])

    def commit(self, resource: str, namespace: str, name: str, type_: str, obj: dict) -> str:
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            rv = self._meta("rv") + 1
            obj["metadata"]["resourceVersion"] = str(rv)
            text = json.dumps(obj, separators=(",", ":"))
            prev = self.read(resource, namespace, name)
            if type_ == "DELETED":
                db.execute(
                    "DELETE FROM objects WHERE resource=? AND namespace=? AND name=?",
                    (resource, namespace, name),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                    (resource, namespace, name, rv, text),
                )
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rv, resource, namespace, type_, text, name, "" if prev is None else prev),
            )
            db.execute("UPDATE meta SET value=? WHERE key='rv'", (rv,))
            self._prune(rv)
        return text

    def _prune(self, rv: int) -> None:
        horizon = rv - self._history
        if horizon > self._meta("compacted"):
            self._db.execute("DELETE FROM events WHERE rv <= ?", (horizon,))
            self._db.execute("UPDATE meta SET value=? WHERE key='compacted'", (horizon,))

    def history(self, resource: str, namespace: str | None, after: int) -> tuple[list[Row], int]:
        with self._db:
            self._db.execute("BEGIN")
            sql = "SELECT rv, type, data FROM events WHERE resource=? AND rv>?"
            args: tuple[Any, ...] = (resource, after)
            if namespace is not None:
                sql += " AND namespace=?"
                args += (namespace,)
            rows = [(int(r[0]), r[1], r[2]) for r in self._db.execute(sql + " ORDER BY rv", args)]
            return rows, self._meta("compacted")

    def changes(
        self, resource: str, namespace: str | None, after: int
    ) -> tuple[dict[tuple[str, str], str | None] | None, int]:
        sql = "SELECT namespace, name, prev FROM events WHERE resource=? AND rv>?"
        args: tuple[Any, ...] = (resource, after)
        if namespace is not None:
            sql += " AND namespace=?"
            args += (namespace,)
        then: dict[tuple[str, str], str | None] = {}
        with self._db:
            self._db.execute("BEGIN")
            for ns, name, prev in self._db.execute(sql + " ORDER BY rv", args):
                if name is None or prev is None:
                    return None, self._meta("compacted")
                then.setdefault((ns, name), prev or None)
            return then, self._meta("compacted")

    def rv(self) -> int:
        return self._meta("rv")

    def close(self) -> None:
        self._db.close()


class SqliteStore(EngineStore):
    """``SqliteStore(path)``: opens (creating if needed) the database at ``path``.

    ``history`` is how many resourceVersions of events watches can replay; a watch from
    older than that gets 410 Expired. ``watch_queue`` bounds each watcher's backlog.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        history: int = 10000,
        watch_queue: int = 1000,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(watch_queue=watch_queue, now=now)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hatchway-sqlite")
        self._backend_future = self._executor.submit(SqliteBackend, str(path), history)

    def _run(self, fn: Callable[[Backend], Any]) -> Any:
        return fn(self._backend_future.result())

    def _submit(self, fn: Callable[[Backend], Any]) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self._executor.submit(self._run, fn))

    async def close(self) -> None:
        if self._closed:
            return
        self._end_watches()
        async with self._lock:  # let a write in flight finish and publish
            pass
        try:
            await asyncio.wrap_future(self._executor.submit(self._run, lambda b: b.close()))
        finally:
            self._executor.shutdown(wait=False)
