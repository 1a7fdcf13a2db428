"""A slow reader gets the whole output (issue 10, item 1), against a real cluster.

The command writes 5 MiB of reproducible, non-zero data and exits; the client reads
2 MiB fast and the rest at 128 KiB/s (about 24 s), so a large tail is still queued on
the node and in the API server when the process has exited, and delivering it takes
far longer than the fixed 5-second close grace that used to cut it. Every byte must
arrive (sha256) and the exit code must be 0: Hatchway's client over WebSocket and SPDY
(a slow consumer of the library's stdout, its socket's receive buffer shrunk so the
tail stays on the servers' side), and kubectl over WebSocket and SPDY with its stdout
piped into a slow reader process. (On the old code both WebSocket cases fail: kubectl
exits 1 after "connection reset by peer", Hatchway's client reports the missing status.)
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import time

import pytest

from cluster import SCALE, Cluster
from hatchway.client.api import Client
from interop.support import Kubectl, Pods

TOTAL = 5 << 20
FAST = 2 << 20
RATE = 128 << 10
#: busybox's seq: different bytes all the way, the same in every run.
COMMAND = ["sh", "-c", f"seq 1 2000000 | head -c {TOTAL}"]
EXPECTED = hashlib.sha256("".join(f"{i}\n" for i in range(1, 2000001)).encode()[:TOTAL])

#: Reads stdin: FAST bytes as they come, then RATE bytes/s; prints count and sha256.
SLOW_READER = f"""
import hashlib, os, sys, time
digest, count, start = hashlib.sha256(), 0, None
while True:
    if count >= {FAST}:
        if start is None:
            start, base = time.monotonic(), count
        ahead = (count - base) / {RATE} - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    chunk = os.read(0, 16384)
    if not chunk:
        break
    digest.update(chunk)
    count += len(chunk)
print(count, digest.hexdigest())
"""

pytestmark = pytest.mark.slow


async def _slow_consumer(cluster: Cluster, pod: str, transport: str) -> tuple[int, int, str]:
    client = Client.from_kubeconfig(str(cluster.kubeconfig))
    process = await client.create_process(pod, COMMAND, transport=transport)
    conn = process._session.conn
    stream = getattr(conn, "_stream", None) or conn._bs  # type: ignore[attr-defined]
    stream.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    stream.set_recv_limit(64 << 10)
    digest, count, start = hashlib.sha256(), 0, 0.0
    async with process:
        while True:
            if count >= FAST:
                start = start or time.monotonic()
                ahead = (count - FAST) / RATE - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            chunk = await process.stdout.read(16384)
            if not chunk:
                break
            digest.update(chunk)
            count += len(chunk)
        code = await process.wait()
    return code, count, digest.hexdigest()


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_hatchway_client_slow_consumer_gets_everything(
    cluster: Cluster, pods: Pods, transport: str
) -> None:
    async with asyncio.timeout(120 * SCALE):
        code, count, digest = await _slow_consumer(cluster, pods.simple, transport)
    assert (code, count) == (0, TOTAL)
    assert digest == EXPECTED.hexdigest()


@pytest.mark.parametrize("transport", ["ws", "spdy"])
def test_kubectl_piped_into_a_slow_reader_gets_everything(
    cluster: Cluster, pods: Pods, transport: str
) -> None:
    kubectl = Kubectl("1.32", transport, pathlib_kubectl(), cluster, cluster.home)
    started = time.monotonic()
    proc = subprocess.Popen(
        kubectl.argv("exec", pods.simple, "--", *COMMAND),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kubectl.env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        reader = subprocess.run(
            [sys.executable, "-c", SLOW_READER],
            stdin=proc.stdout,
            capture_output=True,
            timeout=120 * SCALE,
        )
        proc.stdout.close()
        code = proc.wait(timeout=30 * SCALE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    count, digest = reader.stdout.split()
    assert (code, int(count)) == (0, TOTAL), err
    assert digest.decode() == EXPECTED.hexdigest()
    assert time.monotonic() - started > (TOTAL - FAST) / RATE - 1  # it was slow


def pathlib_kubectl():  # type: ignore[no-untyped-def]
    from interop.support import kubectl_binary

    binary = kubectl_binary("1.32")
    if binary is None:
        pytest.skip("kubectl.1.32 is not installed")
    return binary
