"""Follow-log streams are bounded per user and in total, over real TLS with the fake
node of test_proxy: 429 with Retry-After beyond, the slot back when the client leaves
or the node ends the stream; logs without follow are not counted."""

from __future__ import annotations

import asyncio
import json

from hatchway.apiserver.exec_handler import SessionLimits, SessionSlots
from hatchway.transport import http

from .test_proxy import PODS, SCALE, Client, FakeNode, api, data_dir, node

__all__ = ["api", "data_dir", "node"]  # the fixtures, used by name


async def _follow(user: Client) -> http.StreamingResponse:
    resp = await http.stream("GET", f"{user.base}{PODS}/web/log?follow=true", ssl=user.ctx)
    return resp


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(10 * SCALE):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_follow_streams_are_bounded_and_given_back(api, node: FakeNode) -> None:
    follows: SessionSlots = api.http.app.log_handler.follows
    follows.limits = SessionLimits(per_user=2, total=3)
    node.log_gate = asyncio.Event()
    alice = Client(api, "alice", ["system:masters"])
    bob = Client(api, "bob", ["system:masters"])
    streams = [await _follow(alice), await _follow(alice)]
    assert [s.status for s in streams] == [200, 200]
    refused = await _follow(alice)
    body = json.loads(await refused.read())
    assert refused.status == 429 and refused.header("retry-after") == "1"
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "too many follow-log streams for user 'alice'"
    plain = await http.request("GET", f"{alice.base}{PODS}/web/log", ssl=alice.ctx)
    assert plain.status == 200  # without follow: not counted
    streams.append(await _follow(bob))
    refused = await _follow(bob)  # three in total
    assert refused.status == 429
    assert json.loads(await refused.read())["message"].endswith("on this API server")
    await refused.aclose()
    assert follows.total == 3
    # The client goes away: its slot comes back.
    await streams.pop(0).aclose()
    await _until(lambda: follows.total == 2)
    again = await _follow(alice)
    assert again.status == 200
    streams.append(again)
    # The node ends the streams: every slot comes back.
    node.log_gate.set()
    for stream in streams:
        assert b"".join([chunk async for chunk in stream]) == b"line 0\nline 1\nline 2\n"
    await _until(lambda: follows.total == 0)
    assert not follows.by_user
    # A HEAD never streams its body: the slot (and the node's stream) goes back all the same.
    node.log_gate = asyncio.Event()
    head = await http.request("HEAD", f"{alice.base}{PODS}/web/log?follow=true", ssl=alice.ctx)
    assert head.status == 200
    await _until(lambda: follows.total == 0)
