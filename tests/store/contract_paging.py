"""The paged-list and concurrency parts of the Store contract (see contract.py), run on
memory, SQLite and etcd. :meth:`PagingContract.forget_history` is how a test makes a
store drop the history a list's revision needs (etcd overrides it: compaction)."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import pytest

from hatchway.api.status import StatusError
from hatchway.store import paging

from .contract import next_event, pod


def _token(**fields) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


def _names(items) -> list[str]:
    return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in items]


async def _walk(store, namespace=None, **kwargs):
    """Every page of one list: (names, rvs, remaining counts, tokens)."""
    names, rvs, remaining, tokens = [], [], [], []
    token = None
    while True:
        page = await store.list_page("pods", namespace, continue_=token, **kwargs)
        names += _names(page.items)
        rvs.append(page.resource_version)
        remaining.append(page.remaining)
        token = page.continue_
        tokens.append(token)
        if not token:
            return names, rvs, remaining, tokens


class PagingContract:
    #: make_store() arguments for a store that keeps little history.
    SHORT_HISTORY: dict = {"history": 3}

    async def forget_history(self, store) -> None:
        for i in range(4):
            await store.create("nodes", {"metadata": {"name": f"n{i}"}})

    async def _fill(self, store) -> list[str]:
        keys = [("a", "p1"), ("a", "p10"), ("a", "p2"), ("b", "x"), ("b", "y"), ("c", "z")]
        for ns, name in keys:
            await store.create("pods", pod(name, ns, app="web" if name < "q" else "db"))
        return [f"{ns}/{name}" for ns, name in keys]

    async def test_pages_walk_every_object_once_in_key_order(self, make_store):
        store = make_store()
        everything = await self._fill(store)
        rv = await store.current_rv()
        names, rvs, remaining, tokens = await _walk(store, limit=4)
        assert names == everything and rvs == [rv, rv]
        assert remaining == [2, None] and tokens[-1] == ""
        names, _, remaining, _ = await _walk(store, "a", limit=1)
        assert names == ["a/p1", "a/p10", "a/p2"] and remaining == [2, 1, None]
        page = await store.list_page("pods", limit=6)  # exactly all: no token
        assert _names(page.items) == everything and page.continue_ == ""

    async def test_token_is_kubernetes_format(self, make_store):
        store = make_store()
        await self._fill(store)
        page = await store.list_page("pods", limit=2)
        raw = base64.urlsafe_b64decode(page.continue_ + "=" * (-len(page.continue_) % 4))
        assert "=" not in page.continue_
        assert json.loads(raw) == {
            "v": "meta.k8s.io/v1",
            "rv": int(page.resource_version),
            "start": "a/p10\0",
        }
        page = await store.list_page("pods", "b", limit=1)
        assert json.loads(base64.urlsafe_b64decode(page.continue_ + "=="))["start"] == "x\0"

    async def test_filtered_pages_hold_limit_matches(self, make_store):
        store = make_store()
        await self._fill(store)

        def web(obj) -> bool:
            return obj["metadata"]["labels"]["app"] == "web"

        names, _, remaining, tokens = await _walk(store, limit=2, match=web)
        assert names == ["a/p1", "a/p10", "a/p2"]
        assert all(r is None for r in remaining) and len(tokens) == 2

    async def test_a_page_after_a_change(self, make_store):
        store = make_store()
        await self._fill(store)
        first = await store.list_page("pods", limit=2)
        await store.delete("pods", "c", "z")
        await store.create("pods", pod("w", "b"))
        rest = await store.list_page("pods", limit=10, continue_=first.continue_)
        assert _names(rest.items) == ["a/p2", "b/x", "b/y", "c/z"]  # as it was
        assert rest.resource_version == first.resource_version
        assert int(rest.items[-1]["metadata"]["resourceVersion"]) <= int(first.resource_version)

    async def test_a_token_older_than_the_history_is_410(self, make_store):
        store = make_store(**self.SHORT_HISTORY)
        await self._fill(store)
        first = await store.list_page("pods", limit=2)
        await store.create("pods", pod("w", "b"))
        await self.forget_history(store)
        with pytest.raises(StatusError) as info:
            await store.list_page("pods", limit=10, continue_=first.continue_)
        assert info.value.code == 410 and info.value.reason == "Expired"
        assert info.value.message == paging.INCONSISTENT_CONTINUE
        fresh = info.value.status["metadata"]["continue"]
        rest = await store.list_page("pods", limit=10, continue_=fresh)  # inconsistent rest
        assert _names(rest.items) == ["a/p2", "b/w", "b/x", "b/y", "c/z"]
        assert rest.resource_version == await store.current_rv()

    async def test_bad_tokens_are_400(self, make_store):
        store = make_store()
        await self._fill(store)
        bad = [
            "!!!",
            base64.b64encode(b"not json").decode(),
            _token(v="v1", rv=1, start="a"),
            _token(v="meta.k8s.io/v1", rv=0, start="a"),
            _token(v="meta.k8s.io/v1", rv="5", start="a"),
            _token(v="meta.k8s.io/v1", rv=1, start=""),
            _token(v="meta.k8s.io/v1", rv=1, start="../secrets/x"),
            _token(v="meta.k8s.io/v1", rv=1, start="a/./b"),
            "A" * 9000,
        ]
        for token in bad:
            with pytest.raises(StatusError) as info:
                await store.list_page("pods", limit=2, continue_=token)
            assert info.value.code == 400, token
            assert "continue key is not valid" in info.value.message

    async def test_limit_is_clamped(self, make_store):
        store = make_store()
        everything = await self._fill(store)
        page = await store.list_page("pods", limit=10**18)
        assert _names(page.items) == everything and page.continue_ == ""
        assert paging.clamp_limit(10**18) == paging.MAX_LIMIT == paging.clamp_limit(0)

    async def test_list_at_a_resource_version(self, make_store):
        store = make_store()
        await self._fill(store)
        rv = int(await store.current_rv())
        page = await store.list_page("pods", limit=0, resource_version=str(rv), exact=True)
        assert page.resource_version == str(rv) and len(page.items) == 6
        page = await store.list_page("pods", limit=0, resource_version=str(rv - 3))
        assert page.resource_version == str(rv)  # not older than: now
        for exact in (False, True):
            with pytest.raises(StatusError) as info:
                await store.list_page("pods", limit=1, resource_version=str(rv + 5), exact=exact)
            assert info.value.code == 504 and "Too large resource version" in info.value.message
        await store.delete("pods", "c", "z")
        await store.update("pods", dict(page.items[0], status={"phase": "Changed"}))
        page = await store.list_page("pods", limit=0, resource_version=str(rv), exact=True)
        assert len(page.items) == 6 and page.resource_version == str(rv)
        assert "status" not in page.items[0] and _names(page.items)[-1] == "c/z"

    async def test_100_concurrent_writers_on_one_key(self, make_store):
        """Read-modify-write with the resourceVersion as precondition: no lost update,
        every revision has exactly one winner, and a watch sees each winner once."""
        store = make_store()
        counter = pod("counter")
        counter["metadata"]["annotations"] = {"n": "0"}
        start = await store.create("pods", counter)
        watch = store.watch("pods", since_rv=start["metadata"]["resourceVersion"])
        wins: list[tuple[str, str, int]] = []  # (rv read, rv written, value written)
        conflicts = 0

        async def writer() -> None:
            nonlocal conflicts
            while True:
                obj = await store.get("pods", "default", "counter")
                seen = obj["metadata"]["resourceVersion"]
                value = int(obj["metadata"]["annotations"]["n"]) + 1
                obj["metadata"]["annotations"]["n"] = str(value)
                await asyncio.sleep(0)  # a client's round trip: let the others read too
                try:
                    written = await store.update("pods", obj, expect_rv=seen)
                except StatusError as exc:
                    assert exc.code == 409
                    conflicts += 1
                    await asyncio.sleep(random.random() * 0.01)
                    continue
                wins.append((seen, written["metadata"]["resourceVersion"], value))
                return

        await asyncio.gather(*(writer() for _ in range(100)))
        final = await store.get("pods", "default", "counter")
        assert len(wins) == 100
        assert final["metadata"]["annotations"]["n"] == "100"  # no lost update
        assert len({seen for seen, _, _ in wins}) == 100  # one winner per revision read
        assert len({rv for _, rv, _ in wins}) == 100  # distinct revisions written
        assert sorted(value for _, _, value in wins) == list(range(1, 101))
        events = [await next_event(watch) for _ in range(100)]
        await watch.close()
        assert sorted(e.resource_version for e in events) == sorted(int(r) for _, r, _ in wins)
        assert [e.object["metadata"]["annotations"]["n"] for e in events] == [
            str(i) for i in range(1, 101)
        ]
        assert conflicts > 0  # they did race
