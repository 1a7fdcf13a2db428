"""The Store contract and etcd-specific behaviour on a real etcd process (etcd_process.py).

Each test gets its own key prefix on one etcd per module, so resourceVersions (etcd's
global revision) are counted from the start of each test.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from etcd_process import ETCD, SCALE, EtcdProcess
from hatchway.api.status import StatusError
from hatchway.store import etcdwire as wire
from hatchway.store.base import BOOKMARK, MODIFIED
from hatchway.store.etcd import EtcdStore
from hatchway.store.etcdclient import EtcdClient
from hatchway.transport import tls
from hatchway.transport.http import HttpClient

from .contract import StoreContract, next_event, pod
from .contract_paging import PagingContract
from .cut_proxy import CutProxy

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (etcd-server)")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    server = EtcdProcess(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture
async def make_store(etcd):
    stores: list[EtcdStore] = []
    prefix = f"/t-{uuid.uuid4().hex[:8]}/registry"

    def make(**kwargs) -> EtcdStore:
        kwargs.setdefault("compaction_interval", 0)
        client = EtcdClient([etcd.url], HttpClient(), ssl_context=etcd.ssl_context())
        stores.append(EtcdStore(client, prefix=prefix, **kwargs))
        return stores[-1]

    yield make
    for store in stores:
        await store.close()


class TestEtcdStore(StoreContract, PagingContract):
    SHORT_HISTORY: dict = {}

    async def forget_history(self, store) -> None:
        await store.compact(int(await store.current_rv()))


async def test_keys_and_values_as_kubernetes_lays_them_out(make_store):
    store = make_store()
    created = await store.create("pods", pod("a"))
    await store.create("nodes", {"metadata": {"name": "n1"}})
    prefix = store.prefix.encode()
    kv, _ = await store._read(prefix + b"/pods/default/a")
    assert kv is not None and kv.mod_revision == int(created["metadata"]["resourceVersion"])
    assert "resourceVersion" not in json.loads(kv.value)["metadata"]
    assert (await store._read(prefix + b"/nodes/n1"))[0] is not None
    with pytest.raises(StatusError) as info:
        await store.get("pods", "default", "../x")
    assert info.value.code == 400


async def test_watch_resumes_from_a_revision(make_store):
    store = make_store()
    rvs = [(await store.create("pods", pod(n)))["metadata"]["resourceVersion"] for n in "abcde"]
    async with store.watch("pods", since_rv=rvs[2]) as w:
        names = [(await next_event(w)).object["metadata"]["name"] for _ in range(2)]
    assert names == ["d", "e"]


async def test_410_after_compaction(make_store):
    store = make_store()
    first = await store.create("pods", pod("a"))
    for n in "bcd":
        await store.create("pods", pod(n))
    page = await store.list_page("pods", limit=2)
    assert [p["metadata"]["name"] for p in page.items] == ["a", "b"]
    await store.create("pods", pod("e"))  # the list's revision is now history
    await store.compact(int(await store.current_rv()))
    w = store.watch("pods", since_rv=first["metadata"]["resourceVersion"])
    with pytest.raises(StatusError) as info:
        await next_event(w)
    assert info.value.code == 410 and info.value.message.startswith("too old resource version")
    with pytest.raises(StatusError) as info:
        await store.list_page("pods", limit=2, continue_=page.continue_)
    assert info.value.code == 410 and "continue parameter is too old" in info.value.message
    fresh = await store.list_page(
        "pods", limit=5, continue_=info.value.status["metadata"]["continue"]
    )
    assert [p["metadata"]["name"] for p in fresh.items] == ["c", "d", "e"]  # inconsistent rest
    items, _ = await store.list("pods")  # a fresh list still works
    assert len(items) == 5


async def test_list_pagination_across_many_keys(make_store):
    store = make_store(page_size=40)
    names = sorted(f"p{i:04d}" for i in range(300))
    for chunk in range(0, 300, 30):
        await asyncio.gather(*(store.create("pods", pod(n)) for n in names[chunk : chunk + 30]))
    got: list[str] = []
    page = await store.list_page("pods", "default", limit=70)
    rv, token = page.resource_version, page.continue_
    got += [p["metadata"]["name"] for p in page.items]
    await store.create("pods", pod("p9999"))  # after the list's revision: not in it
    await store.delete("pods", "default", names[-1])  # still in it
    while token:
        page = await store.list_page("pods", "default", limit=70, continue_=token)
        assert page.resource_version == rv
        token = page.continue_
        got += [p["metadata"]["name"] for p in page.items]
    assert got == names
    items, _ = await store.list("pods")  # pages of 40 inside
    assert [i["metadata"]["name"] for i in items] == [*names[:-1], "p9999"]
    with pytest.raises(StatusError) as info:
        await store.list_page("pods", limit=5, continue_="bm90IGpzb24=")
    assert info.value.code == 400


async def test_periodic_compaction(make_store):
    store = make_store(compaction_interval=0.2 * SCALE)
    other = make_store(compaction_interval=0.2 * SCALE)  # a second API server sharing etcd
    first = await store.create("pods", pod("a"))
    await other.create("pods", pod("b"))
    deadline = asyncio.get_running_loop().time() + 15 * SCALE
    while True:
        try:
            await next_event(store.watch("pods", since_rv=first["metadata"]["resourceVersion"]))
        except StatusError as exc:
            assert exc.code == 410
            break
        assert asyncio.get_running_loop().time() < deadline, "never compacted"
        await asyncio.sleep(0.1)


async def test_watch_event_larger_than_the_bound_ends_the_watch(make_store):
    store = make_store(max_event=4096)
    async with store.watch("pods", since_rv=await store.current_rv()) as w:
        big = pod("big")
        big["metadata"]["annotations"] = {"x": "y" * 8000}
        await store.create("pods", big)
        with pytest.raises(StatusError) as info:
            await next_event(w)
    assert info.value.code == 500 and "longer than 4096 bytes" in info.value.message


async def test_watch_survives_an_etcd_restart(tmp_path):
    server = EtcdProcess(tmp_path).start()
    store = EtcdStore(EtcdClient([server.url], HttpClient()), compaction_interval=0)
    try:
        async with store.watch("pods", since_rv=await store.current_rv()) as w:
            await store.create("pods", pod("before"))
            assert (await next_event(w)).object["metadata"]["name"] == "before"
            port = server.url.rsplit(":", 1)[1]
            server.stop()
            server.start_on(int(port))
            await store.create("pods", pod("after"))
            event = await next_event(w)
            assert event.object["metadata"]["name"] == "after"
    finally:
        await store.close()
        server.stop()


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    interval = ("--experimental-watch-progress-notify-interval", "500ms")
    server = EtcdProcess(tmp_path_factory.mktemp("etcd-tls"), tls=True, args=interval).start()
    yield server
    server.stop()


async def test_mutual_tls_and_bookmarks(tls_etcd):
    ctx = tls.client_context(
        ca_file=tls_etcd.ca, cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key
    )
    store = EtcdStore(
        EtcdClient([tls_etcd.url], HttpClient(), ssl_context=ctx), compaction_interval=0
    )
    try:
        created = await store.create("pods", pod("a"))
        assert (await store.get("pods", "default", "a")) == created
        async with store.watch("pods", since_rv=created["metadata"]["resourceVersion"]) as w:
            obj = dict(created, status={"phase": "Running"})
            await store.update("pods", obj)
            assert (await next_event(w)).type == MODIFIED
            bookmark = await asyncio.wait_for(w.__anext__(), 10 * SCALE)
        assert bookmark.type == BOOKMARK and bookmark.object["kind"] == "Pod"
        assert bookmark.resource_version >= int(created["metadata"]["resourceVersion"]) + 1
    finally:
        await store.close()


async def test_tls_etcd_refuses_a_client_without_certificate(tls_etcd):
    no_cert = tls.client_context(ca_file=tls_etcd.ca)
    store = EtcdStore(
        EtcdClient([tls_etcd.url], HttpClient(), ssl_context=no_cert),
        compaction_interval=0,
        retry_for=0,
    )
    try:
        with pytest.raises(StatusError) as info:
            await store.get("pods", "default", "a")
        assert info.value.code == 500 and "etcd unreachable" in info.value.message
    finally:
        await store.close()


def test_line_splitter_bounds_and_splits():
    splitter = wire.LineSplitter(10)
    assert splitter.feed(b'{"a"') == []
    assert splitter.feed(b':1}\n{"b":2}\n{') == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(wire.EtcdError):
        splitter.feed(b"x" * 20)
    assert wire.prefix_end(b"/registry/pods/") == b"/registry/pods0"
    assert wire.prefix_end(b"a\xff") == b"b"


@pytest.mark.parametrize("endpoints", ["proxy", "proxy-then-direct"])
async def test_a_lost_answer_is_our_write_not_a_conflict(etcd, endpoints):
    """The connection is cut after etcd applied a txn, before its answer: the retry (on
    the same endpoint, or the client's next one) finds our own write and reports it once
    as success, never 409 or 404, and it is applied once."""
    host, port = etcd.url.removeprefix("http://").rsplit(":", 1)
    proxy = await CutProxy(host, int(port)).start()
    urls = [proxy.url] if endpoints == "proxy" else [proxy.url, etcd.url]
    prefix = f"/t-{uuid.uuid4().hex[:8]}/registry"
    store = EtcdStore(EtcdClient(urls, HttpClient()), prefix=prefix, compaction_interval=0)

    def cut() -> None:
        proxy.cut_next()
        store.client._current = 0  # through the proxy again, after a failover to etcd itself

    try:
        cut()
        created = await store.create("pods", pod("a"))
        rv = created["metadata"]["resourceVersion"]
        assert proxy.cuts == 1 and await store.get("pods", "default", "a") == created
        async with store.watch("pods", since_rv=rv) as w:
            cut()
            updated = await store.update(
                "pods", dict(created, status={"phase": "Run"}), expect_rv=rv
            )
            assert proxy.cuts == 2
            assert int(updated["metadata"]["resourceVersion"]) == int(rv) + 1
            assert await store.current_rv() == updated["metadata"]["resourceVersion"]  # once
            assert await store.get("pods", "default", "a") == updated
            cut()
            gone = await store.delete(
                "pods", "default", "a", expect_rv=updated["metadata"]["resourceVersion"]
            )
            assert proxy.cuts == 3 and gone["metadata"]["name"] == "a"
            await store.create("pods", pod("sentinel"))
            events = [await next_event(w) for _ in range(3)]
        assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
            ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "sentinel"),
        ]  # fmt: skip
        assert "hatchway.io/write" not in events[0].object
    finally:
        await store.close()
        await proxy.close()


async def test_identical_writes_from_two_writers_are_told_apart(make_store, etcd):
    """Two writers computing the same bytes from the same revision: the one whose answer
    was lost must not take the other's write for its own (the write marker)."""
    store = make_store()
    created = await store.create("pods", pod("a"))
    rv = created["metadata"]["resourceVersion"]
    body = dict(created, status={"phase": "Same"})
    first = await store.update("pods", body, expect_rv=rv)
    with pytest.raises(StatusError) as info:
        await store.update("pods", body, expect_rv=rv)
    assert info.value.code == 409 and first["metadata"]["resourceVersion"] != rv
