"""Container log options: parsing the kubelet query, tailing a raw log, and the node
endpoint's ``/containerLogs`` with tailLines, limitBytes, since*, follow in real runc."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from hatchway.node import logs
from hatchway.node.logs import LogOptions, LogOptionsError, parse_log_options, tail_offset

from .conftest import SCALE, needs_runc
from .endpoint_harness import Node, pod, running_node

NOW = 1_700_000_000.0


def q(**kw: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in kw.items()}


def test_parse_options() -> None:
    assert parse_log_options({}, NOW) == LogOptions()
    got = parse_log_options(q(follow="true", tailLines="3", limitBytes="10"), NOW)
    assert got == LogOptions(follow=True, tail_lines=3, limit_bytes=10)
    assert parse_log_options(q(sinceSeconds="30"), NOW).since == NOW - 30
    stamp = datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_log_options(q(sinceTime=stamp), NOW).since == NOW
    assert parse_log_options(q(follow="false", tailLines="0"), NOW).tail_lines == 0
    got = parse_log_options(q(timestamps="true", previous="1"), NOW)
    assert (got.timestamps, got.previous) == (True, True)


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (q(tailLines="-1"), "tailLines: must be greater than or equal to 0"),
        (q(limitBytes="0"), "limitBytes: must be greater than or equal to 1"),
        (q(sinceSeconds="x"), "sinceSeconds: invalid integer 'x'"),
        (q(sinceTime="yesterday"), "sinceTime: invalid RFC 3339 time 'yesterday'"),
        (q(sinceTime="2024-01-01T00:00:00Z", sinceSeconds="5"), "at most one of"),
    ],
)
def test_parse_errors(query: dict[str, list[str]], text: str) -> None:
    with pytest.raises(LogOptionsError, match=text.replace("(", r"\(")):
        parse_log_options(query, NOW)


def _tail(data: bytes, lines: int) -> bytes:
    f = io.BytesIO(data)
    f.seek(tail_offset(f, lines))
    return f.read()


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (b"a\nb\nc\n", 1, b"c\n"),
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 9, b"a\nb\nc\n"),
        (b"a\nb\nc", 1, b"c"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\n\n\n", 2, b"\n\n"),
        (b"", 3, b""),
        (b"a\nb\n", 0, b""),
    ],
)
def test_tail_offset(data: bytes, lines: int, expected: bytes) -> None:
    assert _tail(data, lines) == expected


def test_tail_offset_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_BLOCK", 7)
    data = b"".join(b"line%d\n" % i for i in range(100))
    for n in (1, 2, 5, 33, 100, 150):
        assert _tail(data, n) == b"".join(b"line%d\n" % i for i in range(max(0, 100 - n), 100))
    long = b"x" * 50 + b"\n" + b"y" * 50 + b"\n"
    assert _tail(long, 1) == b"y" * 50 + b"\n"


# -- the endpoint, real runc ------------------------------------------------------------
LINES = [f"line{i}" for i in range(1, 6)]
STATIC = pod(
    "static",
    [
        {
            "name": "c",
            "image": "busybox",
            "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 1000"],
        }
    ],
)
TICKER = pod(
    "ticker",
    [
        {
            "name": "c",
            "image": "busybox",
            "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo t$i; sleep 0.2; done"],
        }
    ],
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory):
    async with running_node(str(tmp_path_factory.mktemp("node")), [STATIC, TICKER]) as n:
        yield n


async def _get(node: Node, name: str, query: str = "") -> tuple[int, bytes]:
    resp = await node.request("GET", f"/containerLogs/default/{name}/c{query}")
    return resp.status, resp.body


async def _static_log(node: Node) -> bytes:
    async with asyncio.timeout(10 * SCALE):
        while True:
            _, body = await _get(node, "static")
            if body.count(b"\n") == 5:
                return body
            await asyncio.sleep(0.05)


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
async def test_tail_limit_since(node: Node) -> None:
    full = await _static_log(node)
    assert full == "".join(f"{line}\n" for line in LINES).encode()
    assert await _get(node, "static", "?tailLines=2") == (200, b"line4\nline5\n")
    assert await _get(node, "static", "?tailLines=0") == (200, b"")
    assert await _get(node, "static", "?limitBytes=8") == (200, b"line1\nli")
    assert await _get(node, "static", "?tailLines=2&limitBytes=3") == (200, b"lin")
    assert await _get(node, "static", "?sinceSeconds=3600") == (200, full)
    # The log was last written before now + 1 s: nothing is newer.
    future = datetime.fromtimestamp(time.time() + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await _get(node, "static", f"?sinceTime={future}") == (200, b"")
    status, body = await _get(node, "static", "?timestamps=true")
    assert status == 200
    stamped = re.findall(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (line\d)$", body, re.M)
    assert [line for _, line in stamped] == [x.encode() for x in LINES], body
    times = [logs.cri_seconds(stamp) for stamp, _ in stamped]
    assert times == sorted(times) and abs(times[0] - time.time()) < 600
    status, body = await _get(node, "static", "?tailLines=x")
    assert (status, body) == (400, b"tailLines: invalid integer 'x'\n")


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
async def test_follow_with_tail_and_limit(node: Node) -> None:
    async with asyncio.timeout(10 * SCALE):
        while (await _get(node, "ticker"))[1].count(b"\n") < 3:
            await asyncio.sleep(0.1)
        # follow from the last line on, cut by limitBytes after a few more lines
        status, body = await _get(node, "ticker", "?follow=true&tailLines=1&limitBytes=12")
    assert status == 200 and len(body) == 12
    *whole, _partial = body.split(b"\n")
    numbers = [int(line.removeprefix(b"t")) for line in whole]
    assert numbers[0] >= 3 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    async with asyncio.timeout(10 * SCALE):
        status, body = await _get(node, "ticker", "?follow=true&limitBytes=6")
    assert (status, body) == (200, b"t1\nt2\n")


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
async def test_since_time_skips_each_older_record(node: Node) -> None:
    async with asyncio.timeout(10 * SCALE):
        while (await _get(node, "ticker"))[1].count(b"\n") < 8:
            await asyncio.sleep(0.1)
    status, body = await _get(node, "ticker", "?timestamps=true&limitBytes=4096")
    stamps = re.findall(rb"^(\S+) t(\d+)$", body, re.M)
    assert status == 200 and [int(n) for _, n in stamps[:4]] == [1, 2, 3, 4], body
    # From the third record's own time on (the records are 0.2 s apart).
    status, body = await _get(node, "ticker", f"?sinceTime={stamps[2][0].decode()}&tailLines=99")
    assert status == 200 and body.startswith(b"t3\nt4\n"), body
    status, body = await _get(node, "ticker", "?sinceSeconds=1&limitBytes=1000")
    numbers = [int(line[1:]) for line in body.splitlines()]
    assert 0 < len(numbers) <= 7 and numbers[0] > 1, body  # the last second's only


# -- previous instances and containers without a log -----------------------------------
COUNTER = "n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n >/v/n; echo instance $n; "


def _restarting(name: str, script: str) -> dict:  # type: ignore[type-arg]
    return pod(
        name,
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", COUNTER + script],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            }
        ],
        restartPolicy="Always",
        volumes=[{"name": "v", "emptyDir": {}}],
    )


async def _restarts(node: Node, name: str) -> int:
    status = node.agent.manager.pod_status("default", name) or {}
    return int(((status.get("containerStatuses") or [{}])[0]).get("restartCount") or 0)


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
async def test_previous_is_the_last_instance_kept_across_restarts(node: Node) -> None:
    crasher = _restarting("crasher", "sleep 0.3; exit 1")
    manager = node.agent.manager
    await manager.reconcile([STATIC, TICKER, crasher])
    try:
        async with asyncio.timeout(20 * SCALE):
            while (await _get(node, "crasher"))[1] != b"instance 1\n":
                await asyncio.sleep(0.05)
            # The first instance never restarted: no previous one (the kubelet's 400).
            status, body = await _get(node, "crasher", "?previous=true")
            if await _restarts(node, "crasher") == 0:
                assert (status, body) == (
                    400,
                    b'previous terminated container "c" in pod "crasher" not found\n',
                )
            while await _restarts(node, "crasher") < 2:
                await asyncio.sleep(0.05)
            while (await _get(node, "crasher"))[1] == b"":
                await asyncio.sleep(0.05)
        current = (await _get(node, "crasher"))[1]
        status, previous = await _get(node, "crasher", "?previous=true&timestamps=true")
        n = int(current.split()[1])
        assert n >= 3
        # Only one instance back is kept, with its own times.
        assert status == 200 and re.fullmatch(rb"\S+Z instance %d\n" % (n - 1), previous)
        status, body = await _get(node, "stopped-never", "?previous=true")
        assert (status, body) == (404, b"pod does not exist\n")
    finally:
        await manager.reconcile([STATIC, TICKER])
    kept = os.listdir(node.agent.runtime.previous_dir)
    assert not [k for k in kept if k.startswith(crasher["metadata"]["uid"])]  # gone with the pod


@needs_runc
@pytest.mark.runc
@pytest.mark.asyncio(loop_scope="module")
async def test_logs_of_a_waiting_container_are_the_kubelets_400(node: Node) -> None:
    missing = pod("noimage", [{"name": "c", "image": "no-such-image", "command": ["true"]}])
    manager = node.agent.manager
    await manager.reconcile([STATIC, TICKER, missing])
    try:
        async with asyncio.timeout(10 * SCALE):
            while True:
                status, body = await _get(node, "noimage")
                if b"ContainerCreating" not in body:
                    break
                assert (status, body) == (
                    400,
                    b'container "c" in pod "noimage" is waiting to start: ContainerCreating\n',
                )
                await asyncio.sleep(0.02)
        assert status == 400
        assert body.startswith(b'container "c" in pod "noimage" is waiting to start: '), body
        assert body.split(b": ", 1)[1].strip() in (b"ErrImageNotFound", b"ImagePullBackOff")
    finally:
        await manager.reconcile([STATIC, TICKER])
