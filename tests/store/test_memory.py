from __future__ import annotations

import pytest

from hatchway.store.memory import MemoryStore

from .contract import StoreContract
from .contract_paging import PagingContract


@pytest.fixture
async def make_store():
    stores: list[MemoryStore] = []

    def make(**kwargs) -> MemoryStore:
        stores.append(MemoryStore(**kwargs))
        return stores[-1]

    yield make
    for store in stores:
        await store.close()


class TestMemoryStore(StoreContract, PagingContract):
    pass
