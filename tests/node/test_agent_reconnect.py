"""The node agent when its API server goes away (through a load balancer: the connection
drops): the pod watch resumes from the last resourceVersion it saw, lists again only on
410 Gone, and retries with a bounded, jittered backoff. A scripted API server stands in
for the real one (tests/ha kills real ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hatchway.errors import ApiError
from hatchway.node.agent import Backoff, NodeAgent, NodeConfig


def _pod(name: str, rv: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"u-{name}",
            "resourceVersion": rv,
        }
    }


class ScriptedApi:
    """``get`` answers lists in order; each ``watch`` plays the next script: events, then
    an exception (the connection dropped) or the end of the stream."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str]] = []
        self.done = asyncio.Event()

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        self.calls.append(("list", ""))
        return self.lists.pop(0)

    async def watch(self, path: str, params: Any = None) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", params["resourceVersion"]))
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        for item in self.watches.pop(0):
            if isinstance(item, BaseException):
                raise item
            yield item


def _agent(api: ScriptedApi) -> NodeAgent:
    agent = NodeAgent.__new__(NodeAgent)  # no runtime: only the watch loop runs
    agent.config = NodeConfig(data_dir="/nonexistent", apiserver="https://x", node_name="n")
    agent.config.retry_initial = agent.config.retry_max = 0.001
    agent.rest = api  # type: ignore[assignment]
    agent._pods = {}
    agent._dirty = asyncio.Event()
    return agent


Play = Callable[[ScriptedApi], Awaitable[NodeAgent]]


@pytest.fixture
async def play() -> AsyncIterator[Play]:
    """Run an agent's watch loop against a :class:`ScriptedApi` until every script is
    played (the next watch finds none) and return the agent; the loop is cancelled at
    the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    async def run(api: ScriptedApi) -> NodeAgent:
        agent = _agent(api)
        tasks.append(asyncio.create_task(agent._watch_loop()))
        await asyncio.wait_for(api.done.wait(), 10)
        return agent

    yield run
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_resumes_from_the_last_resource_version_and_relists_on_410(
    play: Play,
) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    api = ScriptedApi(
        lists=[
            {"metadata": {"resourceVersion": "5"}, "items": [_pod("a", "4")]},
            {"metadata": {"resourceVersion": "20"}, "items": [_pod("b", "19")]},
        ],
        watches=[
            [{"type": "ADDED", "object": _pod("b", "6")}, ConnectionResetError("cut")],
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}}],
            [{"type": "MODIFIED", "object": _pod("b", "9")}],  # the stream just ends
            [gone],
        ],
    )
    agent = await play(api)
    assert api.calls == [
        ("list", ""),
        ("watch", "5"),
        ("watch", "6"),  # after the cut: from the ADDED's resourceVersion, no list
        ("watch", "8"),  # a bookmark moves it on
        ("watch", "9"),
        ("list", ""),  # 410: list again
        ("watch", "20"),
    ]
    assert set(agent._pods) == {"u-b"}


async def test_api_errors_back_off_and_410_from_the_request_relists(play: Play) -> None:
    api = ScriptedApi(
        lists=[
            {"metadata": {"resourceVersion": "5"}, "items": []},
            {"metadata": {"resourceVersion": "30"}, "items": []},
        ],
        watches=[
            [ApiError({"kind": "Status", "code": 503, "message": "unavailable"})],
            [ApiError({"kind": "Status", "code": 410, "message": "gone"})],
        ],
    )
    await play(api)
    assert api.calls == [
        ("list", ""),
        ("watch", "5"),
        ("watch", "5"),
        ("list", ""),
        ("watch", "30"),
    ]


def test_backoff_doubles_to_its_bound_with_jitter_and_resets() -> None:
    backoff = Backoff(0.2, 5.0)
    bounds = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    for bound in bounds:
        delay = backoff.next()
        assert 0.1 <= delay <= bound
    delays = {round(backoff.next(), 6) for _ in range(20)}
    assert len(delays) > 1  # jittered: many agents do not retry in step
    assert max(delays) <= 5.0
    backoff.reset()
    assert backoff.next() <= 0.2
