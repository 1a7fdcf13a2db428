"""The API server's event recorder: ExecDenied's rate limit (a token bucket per reporter
and object, the counts of what it held back kept and written later) and the bounds of
its tables."""

from __future__ import annotations

from typing import Any

import pytest

from hatchway.api import events
from hatchway.apiserver import events as recorder
from hatchway.apiserver.events import EventStore
from hatchway.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """Counts the writes the recorder makes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        return await super().create(resource, obj)

    async def update(self, resource: str, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.writes += 1
        return await super().update(resource, obj, **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _pod(name: str = "p") -> dict[str, Any]:
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"}
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta}


async def _deny(rec: EventStore, pod: dict[str, Any], user: str = "bob") -> None:
    text = events.exec_denied_message("exec", user, "cannot exec into a privileged container")
    await rec.record_limited(pod, events.EXEC_DENIED, text, component=events.APISERVER)


async def _denials(store: MemoryStore) -> list[dict[str, Any]]:
    items, _ = await store.list("events")
    return [e for e in items if e["reason"] == events.EXEC_DENIED]


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_flood_costs_the_burst_and_the_count_stays_true(clock: Clock) -> None:
    store = CountingStore()
    rec = EventStore(store, clock=clock)
    for _ in range(events.SPAM_BURST):
        await _deny(rec, _pod())
    (event,) = await _denials(store)
    assert event["count"] == events.SPAM_BURST and event["type"] == events.WARNING
    assert event["message"].startswith('exec by user "bob" refused: ')
    assert event["source"] == {"component": events.APISERVER}
    writes = store.writes
    for _ in range(1000):
        await _deny(rec, _pod())
    assert store.writes == writes  # held back, counted
    assert (await _denials(store))[0]["count"] == events.SPAM_BURST
    assert await rec.flush() == 0  # no token yet
    clock.now += 1 / events.SPAM_RATE
    assert await rec.flush() == 1
    (event,) = await _denials(store)
    assert event["count"] == events.SPAM_BURST + 1000
    assert store.writes == writes + 1  # the 1000 in one write
    assert await rec.flush() == 0


async def test_the_next_refusal_with_a_token_carries_the_held_back_count(clock: Clock) -> None:
    store = MemoryStore()
    rec = EventStore(store, clock=clock)
    for _ in range(events.SPAM_BURST + 3):
        await _deny(rec, _pod())
    clock.now += 1 / events.SPAM_RATE
    await _deny(rec, _pod())
    (event,) = await _denials(store)
    assert event["count"] == events.SPAM_BURST + 4


async def test_the_bucket_is_per_object_not_per_message(clock: Clock) -> None:
    """Many users refused on one pod share its bucket; another pod has its own."""
    store = MemoryStore()
    rec = EventStore(store, clock=clock)
    for i in range(events.SPAM_BURST + 10):
        await _deny(rec, _pod("a"), user=f"user-{i}")
    stored = await _denials(store)
    assert len(stored) == events.SPAM_BURST  # one event per user, until the bucket ran dry
    await _deny(rec, _pod("b"))
    assert len(await _denials(store)) == events.SPAM_BURST + 1


async def test_tables_are_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "REMEMBERED", 8)
    monkeypatch.setattr(events, "SPAM_BURST", 1)
    rec = EventStore(MemoryStore(), clock=clock)
    for i in range(50):
        for _ in range(3):
            await _deny(rec, _pod(f"p{i}"))
    assert len(rec._buckets) <= 8 and len(rec._pending) <= 8 and len(rec._seen) <= 8


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = events.TokenBucket(2, 0.5, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(1.0) is False  # half a token
    assert bucket.take(2.0) is True
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]  # capped at burst


async def test_two_events_in_one_instant_both_stored(clock: Clock) -> None:
    """Names are ``<object>.<hex ns>``: the second of an instant moves on a nanosecond
    instead of failing with AlreadyExists."""
    store = MemoryStore()
    rec = EventStore(store, clock=clock)
    await rec.record(_pod(), "Scheduled", "one")
    await rec.record(_pod(), "Pulled", "two")
    items, _ = await store.list("events")
    assert sorted(e["reason"] for e in items) == ["Pulled", "Scheduled"]
    assert len({e["metadata"]["name"] for e in items}) == 2


async def test_events_expire_an_hour_after_they_were_last_seen(clock: Clock) -> None:
    """The collector deletes what was last seen more than ``--event-ttl`` (1 h) ago; an
    event repeated since is kept, from its last occurrence."""
    assert events.TTL == 3600
    store = MemoryStore()
    rec = EventStore(store, clock=clock)
    await rec.record(_pod("old"), "Scheduled", "old")
    await rec.record(_pod("again"), "BackOff", "again")
    clock.now += 3000
    await rec.record(_pod("again"), "BackOff", "again")  # a repeat: last seen moves on
    await rec.record(_pod("new"), "Started", "new")
    assert await rec.collect_once(clock.now + 599) == 0  # "old" is 3599 s old
    assert await rec.collect_once(clock.now + 601) == 1
    items, _ = await store.list("events")
    assert sorted(e["involvedObject"]["name"] for e in items) == ["again", "new"]
    assert [e["count"] for e in items if e["involvedObject"]["name"] == "again"] == [2]
    assert await rec.collect_once(clock.now + 3601) == 2
    assert (await store.list("events"))[0] == []
