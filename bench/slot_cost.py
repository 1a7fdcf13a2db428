"""What counting session slots across API servers adds to one exec (protocol.md 11.4).

    .venv/bin/python bench/slot_cost.py [--n 500] [--etcd]

Times ``SessionSlots.acquire`` + ``release`` per user session, on this process's own
counters (the old, per-server path) and with the store-backed ledger, on SQLite in a
temporary directory (the single-server default) and, with ``--etcd``, on a real etcd
started for the run (tests/etcd_process.py). Prints the median and p90 per slot in
microseconds and the ratio to the local-only path.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from hatchway.apiserver.exec_handler import SessionLimits, SessionSlots
from hatchway.apiserver.leader import IdentityLease
from hatchway.apiserver.slots import SlotLedger
from hatchway.store.base import Store
from hatchway.store.sqlite import SqliteStore


async def _time(slots: SessionSlots, n: int) -> list[float]:
    spent = []
    for i in range(n):
        start = time.perf_counter()
        slot = await slots.acquire(f"user-{i % 8}")
        slot.release()
        spent.append(time.perf_counter() - start)
        if slots.ledger is not None:
            await slots.ledger.publish()  # the background write of the release, untimed
    return spent


async def _ledger(store: Store) -> SessionSlots:
    identity = IdentityLease(store, "bench_1")
    await identity.renew()
    return SessionSlots(SessionLimits(), ledger=SlotLedger(store, identity.name, identity.live))


def _row(name: str, spent: list[float], base: float | None) -> str:
    median = statistics.median(spent) * 1e6
    p90 = statistics.quantiles(spent, n=10)[-1] * 1e6
    ratio = f"{median / base:.0f}x" if base else "1x"
    return f"| {name} | {median:.0f} | {p90:.0f} | {ratio} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--etcd", action="store_true")
    args = parser.parse_args()
    print("| path | median µs | p90 µs | vs local |\n| --- | --- | --- | --- |")
    local = await _time(SessionSlots(SessionLimits()), args.n)
    base = statistics.median(local) * 1e6
    print(_row("local counters only", local, None))
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(pathlib.Path(tmp) / "h.db")
        print(_row("ledger on SQLite", await _time(await _ledger(store), args.n), base))
        await store.close()
        if args.etcd:
            from etcd_process import EtcdProcess
            from hatchway.store.etcd import EtcdStore
            from hatchway.store.etcdclient import EtcdClient
            from hatchway.transport.http import HttpClient

            (pathlib.Path(tmp) / "etcd").mkdir()
            etcd = EtcdProcess(pathlib.Path(tmp) / "etcd").start()
            try:
                etcd_store = EtcdStore(EtcdClient([etcd.url], HttpClient()))
                spent = await _time(await _ledger(etcd_store), args.n)
                print(_row("ledger on etcd", spent, base))
                await etcd_store.close()
            finally:
                etcd.stop()


if __name__ == "__main__":
    asyncio.run(main())
