"""The etcd store on a 3-member etcd cluster: losing the leader to SIGKILL costs no
reads, writes or watch events, and the member rejoins when started again."""

from __future__ import annotations

import pytest

from etcd_process import ETCD, EtcdCluster
from hatchway.store.etcd import EtcdStore
from hatchway.store.etcdclient import EtcdClient
from hatchway.transport.http import HttpClient

from .contract import next_event, pod

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (etcd-server)")


async def test_the_store_survives_losing_the_leader(tmp_path):
    cluster = EtcdCluster(tmp_path, 3).start()
    store = EtcdStore(EtcdClient(cluster.urls, HttpClient()), compaction_interval=0)
    rejoined = None
    try:
        leader = cluster.leader()
        store.client._current = leader  # the watch and every request start on the leader
        created = await store.create("pods", pod("before"))
        async with store.watch("pods", since_rv=created["metadata"]["resourceVersion"]) as w:
            await store.create("pods", pod("b0"))
            assert (await next_event(w)).object["metadata"]["name"] == "b0"
            cluster.members[leader].kill()
            written = [await store.create("pods", pod(f"after{i}")) for i in range(5)]
            again = await store.update("pods", dict(written[0], status={"phase": "X"}))
            assert (await store.get("pods", "default", "after4")) == written[4]
            items, _ = await store.list("pods")
            assert len(items) == 7
            events = [await next_event(w) for _ in range(6)]
            seen = [(e.type, e.object["metadata"]["name"], e.resource_version) for e in events]
            want = [
                ("ADDED", o["metadata"]["name"], int(o["metadata"]["resourceVersion"]))
                for o in written
            ]
            assert seen == [
                *want,
                ("MODIFIED", "after0", int(again["metadata"]["resourceVersion"])),
            ]
            assert cluster.leader() != leader  # a new one was elected
            assert store.client._current != leader  # served by the others

            cluster.restart(leader)
            await store.create("pods", pod("rejoined"))
            assert (await next_event(w)).object["metadata"]["name"] == "rejoined"  # no dupes
        rejoined = EtcdStore(
            EtcdClient([cluster.urls[leader]], HttpClient()), compaction_interval=0
        )
        assert (await rejoined.get("pods", "default", "rejoined"))["metadata"]["name"]
        assert cluster.members[leader].status()["leader"]  # it follows someone again
    finally:
        if rejoined is not None:
            await rejoined.close()
        await store.close()
        cluster.stop()
