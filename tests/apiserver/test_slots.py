"""Session slots hold across API servers sharing a store (protocol.md 11.4): the per-user
and total bounds count every live server's sessions; a slot given back on one server is
free on the others; a crashed server's slots are free once its identity Lease expires,
and its record is then collected. On the memory store shared in-process, and on a real
etcd with two API servers, each with its own etcd client."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from etcd_process import ETCD, EtcdProcess
from hatchway.api.status import StatusError
from hatchway.apiserver.exec_handler import SessionLimits, SessionSlots, Slot
from hatchway.apiserver.leader import IdentityLease
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.apiserver.slots import RESOURCE, SlotLedger
from hatchway.store.base import Store
from hatchway.store.memory import MemoryStore

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
LIMITS = SessionLimits(per_user=2, total=3)


def _config(data_dir: Path, **kw: object) -> ApiServerConfig:
    return ApiServerConfig(
        data_dir=data_dir, port=0, exec_limits=LIMITS, log_follow_limits=LIMITS, **kw
    )


def _slots(server: ApiServer) -> SessionSlots:
    assert server.http is not None
    return server.http.app.exec_handler.slots  # type: ignore[attr-defined, no-any-return]


async def _refused(slots: SessionSlots, user: str) -> str:
    with pytest.raises(StatusError) as caught:
        await slots.acquire(user)
    assert caught.value.code == 429
    assert caught.value.status["details"]["retryAfterSeconds"] == 1
    return caught.value.message


async def _acquired_soon(slots: SessionSlots, user: str, timeout: float = 20.0) -> Slot:
    """The release on the other server is written in the background: retry until seen."""
    async with asyncio.timeout(timeout * SCALE):
        while True:
            try:
                return await slots.acquire(user)
            except StatusError as exc:
                if exc.code != 429:
                    raise
            await asyncio.sleep(0.05)


async def _bounds_hold_across(a: ApiServer, b: ApiServer) -> None:
    on_a, on_b = _slots(a), _slots(b)
    held = [await on_a.acquire("alice"), await on_a.acquire("alice")]
    assert await _refused(on_b, "alice") == "too many exec sessions for user 'alice'"
    assert on_b.total == 0 and not on_b.by_user  # the refused claim was taken back
    bob = await on_b.acquire("bob")  # 3 in the cluster: the total bound
    assert await _refused(on_a, "carol") == "too many exec sessions in the cluster"
    assert await _refused(on_b, "carol") == "too many exec sessions in the cluster"
    held[0].release()
    alice = await _acquired_soon(on_b, "alice")  # the place alice gave back on a
    assert (on_a.total, on_b.total) == (1, 2)
    for slot in (held[1], bob, alice):
        slot.release()
    carol = await _acquired_soon(on_a, "carol")
    # the other kind is counted apart: follow-log streams are not exec sessions
    assert b.http is not None
    follows: SessionSlots = b.http.app.log_handler.follows  # type: ignore[attr-defined]
    follow = await follows.acquire("alice")
    carol.release()
    follow.release()


async def test_the_bounds_hold_across_two_api_servers_on_one_store(tmp_path: Path) -> None:
    store = MemoryStore()
    async with (
        ApiServer(_config(tmp_path / "data"), store=store) as a,
        ApiServer(_config(tmp_path / "data"), store=store) as b,
    ):
        await _bounds_hold_across(a, b)
    records, _ = await store.list(RESOURCE)
    assert records == []  # a clean close removes its record


async def _crashed_server(store: Store, user: str, count: int) -> IdentityLease:
    """Another API server's share, left behind: an identity Lease of 1 s never renewed."""
    identity = IdentityLease(store, "crashed_1", duration=1.0)
    await identity.renew()
    ledger = SlotLedger(store, identity.name, identity.live)
    slots = SessionSlots(LIMITS, ledger=ledger)
    for _ in range(count):
        await slots.acquire(user)
    return identity


async def test_a_crashed_servers_slots_are_free_once_its_lease_expired(tmp_path: Path) -> None:
    store = MemoryStore()
    async with ApiServer(_config(tmp_path / "data"), store=store) as b:
        crashed = await _crashed_server(store, "alice", 2)
        on_b = _slots(b)
        assert await _refused(on_b, "alice") == "too many exec sessions for user 'alice'"
        slot = await _acquired_soon(on_b, "alice")  # after the second of its lease
        slot.release()
        assert b.identity is not None
        live = await b.identity.collect()
        assert crashed.name not in live and b.identity.name in live
        leases, _ = await store.list("leases", "kube-system")
        assert crashed.name not in {lease["metadata"]["name"] for lease in leases}
        records, _ = await store.list(RESOURCE)
        assert [r["metadata"]["name"] for r in records] == [b.identity.name]


async def test_a_single_server_reads_no_leases_per_slot(tmp_path: Path) -> None:
    """The single-server path: one write and one list of the records per slot taken."""
    store = MemoryStore()
    async with ApiServer(_config(tmp_path / "data"), store=store) as a:
        assert a.identity is not None
        asked: list[str] = []
        live = a.identity.live

        async def counted() -> set[str]:
            asked.append("live")
            return await live()

        assert a.ledger is not None
        a.ledger.live_servers = counted
        slot = await _slots(a).acquire("alice")
        assert asked == []
        await _crashed_server(store, "bob", 1)  # now someone else holds a slot
        slot.release()
        await _slots(a).acquire("alice")
        assert asked == ["live"]


@pytest.mark.skipif(ETCD is None or shutil.which("etcd") is None, reason="etcd not installed")
async def test_the_bounds_hold_across_two_api_servers_on_etcd(tmp_path: Path) -> None:
    etcd = EtcdProcess(tmp_path / "etcd", tls=True).start()
    try:
        config = _config(
            tmp_path / "data",
            etcd_servers=(etcd.url,),
            etcd_cafile=etcd.ca,
            etcd_certfile=etcd.client_cert,
            etcd_keyfile=etcd.client_key,
        )
        async with ApiServer(config) as a, ApiServer(config) as b:
            assert a.store is not b.store  # two clients of one etcd
            await _bounds_hold_across(a, b)
            crashed = await _crashed_server(a.store, "dave", 2)  # type: ignore[arg-type]
            assert await _refused(_slots(b), "dave") == "too many exec sessions for user 'dave'"
            await _acquired_soon(_slots(b), "dave")
            assert crashed.name not in await a.identity.live()  # type: ignore[union-attr]
    finally:
        etcd.stop()


async def test_on_its_own_sqlite_file_a_server_counts_locally(tmp_path: Path) -> None:
    """Nobody else opens the SQLite file: no record is written per session there."""
    async with ApiServer(_config(tmp_path / "data")) as a:
        assert a.ledger is None and _slots(a).ledger is None
        slot = await _slots(a).acquire("alice")
        assert a.store is not None
        assert (await a.store.list(RESOURCE))[0] == []
        slot.release()
