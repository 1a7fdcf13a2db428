"""What an exec session's API server holds while it runs (idle-session memory, bench
README "Where an idle session's memory goes"): once the splice runs, the upgrade request
-- its headers, query, the authenticated call -- and the connection's HTTP (h11) state
are let go, over SPDY and WebSocket alike, and the session still carries bytes both ways
and is audited at its end with the request's fields."""

from __future__ import annotations

import asyncio
import gc
import json

import h11
import pytest

from hatchway.apiserver.app import Call
from hatchway.transport.http import Request

from .test_proxy import EXEC_Q, PODS, SCALE, SPDY, WEBSOCKET, Client, FakeNode, api, data_dir, node

__all__ = ["api", "data_dir", "node"]  # the fixtures, used by name

EXEC_PATH = f"{PODS}/web/exec"


def _held() -> dict[str, int]:
    """The API server's objects of exec upgrade requests still alive (after a full
    collection: only what something really refers to)."""
    gc.collect()
    counts = {"requests": 0, "calls": 0, "switched h11 connections": 0}
    for obj in gc.get_objects():
        if isinstance(obj, Request) and obj.path == EXEC_PATH:
            counts["requests"] += 1
        elif isinstance(obj, Call) and obj.request.path == EXEC_PATH:
            counts["calls"] += 1
        elif (
            isinstance(obj, h11.Connection)
            and obj.our_role is h11.SERVER
            and obj.their_state is h11.SWITCHED_PROTOCOL
        ):
            counts["switched h11 connections"] += 1
    return counts


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_a_running_session_holds_no_upgrade_request(
    api, node: FakeNode, transport: str
) -> None:
    headers = SPDY if transport == "spdy" else WEBSOCKET
    admin = Client(api, "admin-m", ["system:masters"])
    assert _held() == {"requests": 0, "calls": 0, "switched h11 connections": 0}
    async with asyncio.timeout(20 * SCALE):
        opened = [await admin.upgrade(EXEC_PATH + EXEC_Q, headers=headers) for _ in range(2)]
        for resp, stream in opened:
            assert resp.status == 101 and stream is not None, (resp.status, resp.body)
            stream.write(b"hello")  # the splice runs: bytes go to the node and back
            await stream.drain()
            assert await stream.readexactly(5) == b"HELLO"
        assert api.http.app.exec_handler.slots.total == 2
        assert _held() == {"requests": 0, "calls": 0, "switched h11 connections": 0}
        for _, stream in opened:
            assert stream is not None
            stream.close()
        while api.http.app.exec_handler.slots.total:
            await asyncio.sleep(0.02)
    # The end is still audited with what the request said.
    assert api.paths.audit is not None
    ends: list[dict] = []
    async with asyncio.timeout(20 * SCALE):
        while len(ends) < 2:
            await asyncio.sleep(0.02)
            lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
            ends = [x for x in lines if x["type"] == "session_end" and x["user"] == "admin-m"]
    for end in ends:
        assert end["resource"] == "pods/exec" and end["container"] == "main", end
        assert end["command"] == ["echo", "hi"] and end["bytes_in"] == 5, end
