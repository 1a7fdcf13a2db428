"""Session slots of the exec proxy against clients that leave before their 101, over
real TLS with the fake node of test_proxy (which can hold its 101): every slot comes
back, exactly once, and the node's side of an abandoned upgrade is closed."""

from __future__ import annotations

import asyncio
import urllib.parse

from hatchway.apiserver.exec_handler import SessionLimits, SessionSlots
from hatchway.transport.bytestream import ByteStream

from .test_proxy import EXEC_Q, PODS, SCALE, Client, FakeNode, api, data_dir, node

__all__ = ["api", "data_dir", "node"]  # the fixtures, used by name

HEAD = (
    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
)


async def _send_exec_and_hold(client: Client) -> ByteStream:
    """A raw connection that sends an exec upgrade and reads nothing."""
    port = urllib.parse.urlsplit(client.base).port
    assert port is not None
    stream = await ByteStream.connect(
        "127.0.0.1", port, ssl=client.ctx, server_hostname="127.0.0.1"
    )
    stream.write(HEAD.format(path=f"{PODS}/web/exec{EXEC_Q}").encode())
    await stream.drain()
    return stream


async def test_clients_leaving_before_the_101_give_their_slots_back(api, node: FakeNode) -> None:
    slots: SessionSlots = api.http.app.exec_handler.slots
    assert slots.limits.per_user == 2
    users = [Client(api, f"admin-{i}", ["system:masters"]) for i in range(4)]
    node.gate = asyncio.Event()  # the node holds every 101
    async with asyncio.timeout(20 * SCALE):
        raw = [await _send_exec_and_hold(u) for u in users for _ in range(2)]
        while len(node.requests) < len(raw):  # every one has a slot and is dialling
            await asyncio.sleep(0.01)
        assert slots.total == 8
        for stream in raw:
            stream.abort()  # gone before the 101
        while slots.total:  # given back during the dial, not after the node's answer
            await asyncio.sleep(0.02)
        assert not slots.by_user
        node.gate.set()
    assert slots.total == 0
    node.gate = None
    for user in users:  # per user 2: each gets both its sessions again
        held = [await user.upgrade(f"{PODS}/web/exec{EXEC_Q}") for _ in range(2)]
        assert [resp.status for resp, _ in held] == [101, 101]
        for _, stream in held:
            assert stream is not None
            stream.close()


async def test_a_slot_is_released_exactly_once() -> None:
    slots = SessionSlots(SessionLimits(per_user=1, total=1))
    slot = await slots.acquire("u")
    slot.release()
    slot.release()
    assert slots.total == 0 and not slots.by_user
    again = await slots.acquire("u")  # the one place is free again, and only one
    assert slots.total == 1 and again.user == "u"


async def test_a_101_the_client_left_before_is_abandoned(api, node: FakeNode) -> None:
    """The client goes after the node's 101 reached the handler, before the HTTP layer
    wrote it: the slot comes back through the response's abandon, once."""
    slots: SessionSlots = api.http.app.exec_handler.slots
    handler = api.http.app.exec_handler
    proxy = handler.proxy
    dial = proxy.dial
    raw: list[ByteStream] = []

    async def dial_then_lose_the_client(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("client", None)  # no early give-up: the 101 arrives
        answer = await dial(*args, **kwargs)
        raw[0].abort()
        await asyncio.sleep(0.1)  # the server has seen the client go
        return answer

    proxy.dial = dial_then_lose_the_client
    user = Client(api, "admin-x", ["system:masters"])
    async with asyncio.timeout(20 * SCALE):
        raw.append(await _send_exec_and_hold(user))
        while not node.requests:
            await asyncio.sleep(0.01)
        while slots.total:
            await asyncio.sleep(0.02)
    proxy.dial = dial
    assert not slots.by_user
    resp, stream = await user.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.status == 101 and stream is not None
    stream.close()


async def test_an_ended_session_is_followed_by_a_heap_trim(api, node: FakeNode) -> None:
    """The API server gives the memory of ended sessions back (issue 10, item 6), as the
    node agent does: a session's end schedules one trim."""
    trimmer = api.http.app.exec_handler.trimmer
    trimmer.delay = 0.05
    before = trimmer.trims
    user = Client(api, "admin-t", ["system:masters"])
    resp, stream = await user.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.status == 101 and stream is not None
    stream.close()
    async with asyncio.timeout(20 * SCALE):
        while trimmer.trims == before:
            await asyncio.sleep(0.02)
