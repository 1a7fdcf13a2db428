"""Memory given back after exec sessions end (issue 10, item 6): glibc's malloc_trim
really returns freed heap pages; one trim per burst of session ends, one per interval
under churn; and through a real node agent (runc), ended sessions leave no session
objects behind and a trim follows."""

from __future__ import annotations

import asyncio
import gc

import pytest
import pytest_asyncio

from hatchway.session.heap import HeapTrimmer, freeze_startup, malloc_trim
from hatchway.session.server import ServerSession

from .conftest import SCALE, needs_runc
from .endpoint_harness import Node, finish, pod, running_node


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_malloc_trim_gives_freed_heap_memory_back() -> None:
    trim = malloc_trim()
    if trim is None:
        pytest.skip("the C library has no malloc_trim (not glibc)")
    # 64 KiB blocks come from the heap (below glibc's mmap threshold), zero-filled so
    # resident; the last one stays, so the freed ones are below the top and glibc
    # keeps them by itself.
    blocks = [bytes(64 * 1024) for _ in range(400)]
    pin = bytes(64 * 1024)
    trim(0)
    del blocks
    before = _rss_kib()
    trim(0)
    after = _rss_kib()
    assert before - after > 16 * 1024, (before, after)
    assert pin


class _CountingTrim:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, pad: int) -> int:
        self.calls += 1
        return 1


class _Cycle:
    """An object in a reference cycle with itself: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_start_up_is_skipped_and_later_cycles_still_collected() -> None:
    import weakref

    old = _Cycle()
    stale = _Cycle()
    stale_ref = weakref.ref(stale)
    del stale  # garbage before the freeze: the collection in freeze_startup frees it
    try:
        freeze_startup()
        assert stale_ref() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is old for o in gc.get_objects())  # out of every generation
        late = _Cycle()
        late_ref = weakref.ref(late)
        del late
        gc.collect()  # what a trim runs: made after the freeze, so still collected
        assert late_ref() is None
    finally:
        gc.unfreeze()
    assert any(o is old for o in gc.get_objects())


async def test_a_burst_of_session_ends_costs_one_trim() -> None:
    trim = _CountingTrim()
    trimmer = HeapTrimmer(trim, delay=0.2, interval=60)
    for _ in range(100):
        trimmer.session_ended()
        await asyncio.sleep(0)
    async with asyncio.timeout(5 * SCALE):
        while trimmer.trims < 1:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert (trim.calls, trimmer.trims) == (1, 1)
    await trimmer.aclose()


#: uvloop (the node's loop) schedules timers in whole milliseconds, rounded.
TIMER_RESOLUTION = 0.001


async def test_steady_churn_still_trims_at_the_interval() -> None:
    """Ends keep coming (each would push the delay back): the trim is due no later than
    the interval after the first end not yet trimmed for, and then runs."""
    trim = _CountingTrim()
    trimmer = HeapTrimmer(trim, delay=60, interval=0.3)
    loop = asyncio.get_running_loop()
    trimmer.session_ended()
    due = trimmer._handle.when()  # type: ignore[union-attr]
    assert due <= loop.time() + 0.3 + TIMER_RESOLUTION
    for _ in range(5):
        await asyncio.sleep(0.01)
        trimmer.session_ended()
        assert trimmer._handle.when() == due  # type: ignore[union-attr]
    async with asyncio.timeout(10 * SCALE):
        while trimmer.trims < 1:
            await asyncio.sleep(0.01)
    assert trim.calls == 1
    trimmer.session_ended()  # a new round starts from this end
    assert trimmer._handle.when() > due  # type: ignore[union-attr]
    await trimmer.aclose()
    assert trim.calls == 1  # closed before it was due


SLEEPER = pod("p", [{"name": "main", "image": "busybox", "command": ["sleep", "100000"]}])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory):
    async with running_node(str(tmp_path_factory.mktemp("node")), [SLEEPER]) as n:
        yield n


def _server_sessions() -> int:
    gc.collect()
    return sum(isinstance(o, ServerSession) for o in gc.get_objects())


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_ended_sessions_leave_nothing_behind_and_are_trimmed(node: Node, transport: str):
    endpoint = node.agent._endpoint
    assert endpoint is not None
    endpoint.trimmer.delay = 0.1
    trims = endpoint.trimmer.trims
    protocols = ("v4.channel.k8s.io",) if transport == "spdy" else ("v5.channel.k8s.io",)
    sessions = [
        await node.open(["sh", "-c", "echo ready; read go"], stdin=True, transport=transport,
                        protocols=protocols)
        for _ in range(10)
    ]  # fmt: skip
    assert _server_sessions() == 10
    results = await asyncio.gather(*(finish(s, b"go\n") for s in sessions))
    assert [r.code for r in results] == [0] * 10
    node.sessions.clear()
    del sessions
    async with asyncio.timeout(10 * SCALE):
        while endpoint.sessions or endpoint.trimmer.trims == trims:
            await asyncio.sleep(0.05)
    assert _server_sessions() == 0
