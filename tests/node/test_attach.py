"""Attach to a container's main process and follow its logs, through the node agent's
endpoint into real busybox containers in runc."""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_asyncio

from hatchway.transport import httpclient

from .conftest import SCALE, needs_runc
from .endpoint_harness import Node, close_quietly, finish, pod, running_node
from .test_agent import read_until

pytestmark = [needs_runc, pytest.mark.runc, pytest.mark.asyncio(loop_scope="module")]

V5 = {"transport": "websocket", "protocols": ("v5.channel.k8s.io",)}
V4 = {"protocols": ("v4.channel.k8s.io",)}
TICK = "i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.1; done"

READER = pod(
    "reader",
    [
        {
            "name": "main",
            "image": "busybox",
            "stdin": True,
            "command": ["sh", "-c", "while read l; do echo got $l; done"],
        }
    ],
)
TICKER = pod("ticker", [{"name": "main", "image": "busybox", "command": ["sh", "-c", TICK]}])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory):
    async with running_node(str(tmp_path_factory.mktemp("node")), [READER, TICKER]) as n:
        yield n


def attach(node: Node, pod_name: str, *, stdin: bool = True, **kw):  # type: ignore[no-untyped-def]
    return node.open(pod_name=pod_name, action="attach", stdin=stdin, **kw)


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_attach_writes_stdin_and_reads_output(node: Node, kw):
    session = await attach(node, "reader", **kw)
    await session.write_stdin(b"hello\n")
    await read_until(session.stdout, b"got hello\n")
    await session.write_stdin(b"world\n")
    await read_until(session.stdout, b"got world\n")
    await session.close()  # detach
    assert await node.agent.manager.container_running("default", "reader", "main")
    # The container's stdin outlives an attach (stdinOnce is false).
    again = await attach(node, "reader", **kw)
    await again.write_stdin(b"again\n")
    await read_until(again.stdout, b"got again\n")
    await again.close()


async def test_attach_with_the_api_server_spelling_and_stdin_eof(node: Node):
    session = await attach(node, "reader", spelling="apiserver", **V4)
    await session.write_stdin(b"one\n")
    await session.close_stdin()  # the client's EOF does not end the container's input
    await read_until(session.stdout, b"got one\n")
    await session.close()
    assert await node.agent.manager.container_running("default", "reader", "main")
    later = await attach(node, "reader", **V5)
    await later.write_stdin(b"two\n")
    await read_until(later.stdout, b"got two\n")
    await later.close()


async def test_attach_follows_output_from_now_on(node: Node):
    await asyncio.sleep(0.5)  # a few ticks before the attach
    session = await attach(node, "ticker", stdin=False, **V5)
    out = await read_until(session.stdout, b"tick", timeout=5)
    # The shim keeps the streams apart (the shell shim's log mixed them into stdout).
    errors = await read_until(session.stderr, b"tock", timeout=5)
    assert b"tick" not in errors
    ticks = [int(n) for n in re.findall(rb"tick (\d+)", out)]
    assert ticks and ticks[0] > 1, out
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    await session.close()
    assert await node.agent.manager.container_running("default", "ticker", "main")


async def test_client_disconnect_only_detaches(node: Node):
    for kw in (V4, V5):
        session = await attach(node, "reader", **kw)
        session.conn.abort()
        await close_quietly(session)
    await asyncio.sleep(0.3)
    assert await node.agent.manager.container_running("default", "reader", "main")
    result = await node.run(["true"], pod_name="reader")
    assert result.code == 0


async def test_stdin_is_ignored_when_the_container_has_none(node: Node):
    session = await attach(node, "ticker", **V4)
    await session.write_stdin(b"ignored\n")
    await read_until(session.stdout, b"tick")
    await session.close()
    assert await node.agent.manager.container_running("default", "ticker", "main")


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_attach_ends_with_success_when_the_container_exits(node: Node, kw):
    name = "ender-" + ("ws" if kw is V5 else "spdy")
    ender = pod(
        name,
        [
            {
                "name": "main",
                "image": "busybox",
                "stdin": True,
                "command": ["sh", "-c", "read l; echo bye $l; exit 3"],
            }
        ],
    )
    manager = node.agent.manager
    await manager.reconcile([READER, TICKER, ender])
    try:
        async with asyncio.timeout(30 * SCALE):
            while not await manager.container_running("default", name, "main"):
                await asyncio.sleep(0.05)
        session = await attach(node, name, **kw)
        result = await finish(session, b"now\n")
        # Spec 6.1: attach reports Success, never the container's exit code.
        assert (result.code, result.error, result.stdout) == (0, "", b"bye now\n")
        async with asyncio.timeout(10 * SCALE):
            while await manager.container_running("default", name, "main"):
                await asyncio.sleep(0.05)
        response, conn = await node.upgrade(f"/attach/default/{name}/main?output=1", **kw)
        assert conn is None
        assert response.status == 500
    finally:
        await manager.reconcile([READER, TICKER])


async def test_logs_follow_streams(node: Node):
    url = node.url + "/containerLogs/default/ticker/main?follow=true"
    response = await httpclient.stream("GET", url, ssl=node.context())
    try:
        assert response.status == 200
        body = b""
        chunks = 0
        async with asyncio.timeout(10 * SCALE):
            async for chunk in response.iter_body():
                body += chunk
                chunks += 1
                ticks = [int(n) for n in re.findall(rb"tick (\d+)", body)]
                # From the start, and still growing after the first chunk.
                if chunks > 1 and ticks and ticks[-1] >= ticks[0] + 5:
                    break
        assert ticks[0] == 1
        assert b"tock 1\n" in body
    finally:
        await response.aclose()


async def test_logs_without_follow_end(node: Node):
    response = await node.request("GET", "/containerLogs/default/ticker/main")
    assert response.status == 200
    # Both streams share the log; their relative order is runc's copying.
    assert b"tick 1\n" in response.body and b"tock 1\n" in response.body
    missing = await node.request("GET", "/containerLogs/default/nope/main")
    assert (missing.status, missing.body) == (404, b"pod does not exist\n")
