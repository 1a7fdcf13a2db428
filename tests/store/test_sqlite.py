from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from hatchway.api.status import StatusError
from hatchway.store.sqlite import SqliteStore

from .contract import StoreContract, next_event, pod
from .contract_paging import PagingContract


@pytest.fixture
async def make_store(tmp_path):
    stores: list[SqliteStore] = []

    def make(**kwargs) -> SqliteStore:
        stores.append(SqliteStore(tmp_path / "state.db", **kwargs))
        return stores[-1]

    yield make
    for store in stores:
        await store.close()


class TestSqliteStore(StoreContract, PagingContract):
    pass


async def test_restart_keeps_objects_and_rv(make_store):
    store = make_store()
    await store.create("pods", pod("a"))
    b = await store.create("pods", pod("b"))
    await store.delete("pods", "default", "b")
    await store.close()

    store = make_store()
    assert (await store.get("pods", "default", "a"))["metadata"]["resourceVersion"] == "1"
    assert await store.current_rv() == "3"
    again = await store.create("pods", pod("b"))
    assert again["metadata"]["resourceVersion"] == "4"
    assert again["metadata"]["uid"] != b["metadata"]["uid"]
    w = store.watch("pods", since_rv="1")  # history survives too
    assert [(await next_event(w)).type for _ in range(3)] == ["ADDED", "DELETED", "ADDED"]
    await w.close()


async def test_restart_keeps_compaction_mark(make_store):
    store = make_store(history=2)
    for i in range(6):
        await store.create("pods", pod(f"p{i}"))
    await store.close()
    store = make_store(history=2)
    with pytest.raises(StatusError) as info:
        await next_event(store.watch("pods", since_rv="1"))
    assert info.value.code == 410


async def test_history_is_pruned_on_disk(tmp_path):
    store = SqliteStore(tmp_path / "s.db", history=10)
    for i in range(40):
        await store.create("pods", pod(f"p{i}"))
    await store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    try:
        assert db.execute("SELECT COUNT(*), MIN(rv) FROM events").fetchone() == (10, 31)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_clock_is_injected(tmp_path):
    store = SqliteStore(tmp_path / "s.db", now=lambda: datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC))
    created = await store.create("pods", pod("a"))
    assert created["metadata"]["creationTimestamp"] == "2024-02-03T04:05:06Z"
    await store.close()


async def test_closed_store_refuses(tmp_path):
    from hatchway.errors import ConnectionClosedError

    store = SqliteStore(tmp_path / "s.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(ConnectionClosedError):
        await store.get("pods", "default", "a")


async def test_bad_path_surfaces_on_first_call(tmp_path):
    store = SqliteStore(tmp_path / "missing-dir" / "s.db")
    with pytest.raises(sqlite3.OperationalError):
        await store.current_rv()
    store._executor.shutdown(wait=False)


async def test_a_database_from_before_paged_lists(tmp_path):
    """Old events have no previous states: a page at an old revision whose objects
    changed since is 410 (with a fresh token), never a wrong snapshot."""
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(
        "CREATE TABLE events (rv INTEGER PRIMARY KEY, resource TEXT NOT NULL,"
        " namespace TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);"
    )
    db.close()
    store = SqliteStore(tmp_path / "old.db")
    try:
        for name in "abc":
            await store.create("pods", pod(name))
        first = await store.list_page("pods", limit=1)
        await store.delete("pods", "default", "c")
        db = sqlite3.connect(tmp_path / "old.db")
        db.execute("UPDATE events SET prev = NULL")  # as the old schema left them
        db.commit()
        db.close()
        with pytest.raises(StatusError) as info:
            await store.list_page("pods", limit=1, continue_=first.continue_)
        assert info.value.code == 410 and info.value.status["metadata"]["continue"]
    finally:
        await store.close()
