"""Hostile clients against the real cluster's API server (and, through it, the node):
an anonymous body is refused before it is read, and a SPDY stream opened and reset in
one read neither kills the node's reader nor keeps the exec'd process alive once the
client has gone."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import urllib.parse
import uuid

import pytest
import yaml

from cluster import Cluster
from hatchway.protocol import spdy_frame as fr
from hatchway.transport import httpclient, tls
from hostile import RawSpdyClient
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc
SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def _credentials(kubeconfig_text: str) -> tuple[bytes, bytes | None, bytes | None]:
    config = yaml.safe_load(kubeconfig_text)
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    user = config["users"][0]["user"]
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    return (
        ca,
        base64.b64decode(cert) if cert else None,
        base64.b64decode(key) if key else None,
    )


def _context(attacker: Attacker, *, anonymous: bool = False) -> ssl.SSLContext:
    ca, cert, key = _credentials(attacker.kubeconfig.read_text())
    if anonymous:
        return tls.client_context(ca_data=ca)
    return tls.client_context(ca_data=ca, cert_data=cert, key_data=key)


async def test_an_anonymous_body_is_refused_before_it_is_read(
    cluster: Cluster, attacker: Attacker
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        cluster.apiserver_port,
        ssl=_context(attacker, anonymous=True),
        server_hostname="127.0.0.1",
    )
    try:
        writer.write(
            b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 3145728\r\n\r\n" + b" " * 1024
        )
        await writer.drain()
        # The rest of the body never comes: the answer must not wait for it.
        async with asyncio.timeout(10 * SCALE):
            answer = await reader.read()  # to EOF: the server closes after answering
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"reason":"Unauthorized"' in answer


async def _ps(attacker: Attacker, pod: str) -> str:
    result = await asyncio.to_thread(attacker.kubectl, "exec", pod, "--", "ps", "-o", "args")
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def _exec_raw(cluster: Cluster, attacker: Attacker, pod: str, command: list[str]):  # type: ignore[no-untyped-def]
    query = urllib.parse.urlencode([*(("command", c) for c in command), ("stdout", "true")])
    url = f"{cluster.server}/api/v1/namespaces/{attacker.namespace}/pods/{pod}/exec?{query}"
    headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ]
    response, stream = await httpclient.upgrade(
        "POST", url, headers=headers, ssl=_context(attacker), timeout=30 * SCALE
    )
    assert stream is not None, (response.status, response.body)
    return RawSpdyClient(stream)


async def test_a_stream_reset_in_the_read_that_opened_it_then_disconnect_kills(
    cluster: Cluster, attacker: Attacker
) -> None:
    pod = f"reset-{uuid.uuid4().hex[:6]}"
    created = attacker.create(pod_manifest(pod, attacker.namespace))
    assert created.returncode == 0, created.stderr.decode()
    ready = attacker.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")
    assert ready.returncode == 0, ready.stderr.decode()
    marker = "sleep 7777"
    client = await _exec_raw(cluster, attacker, pod, marker.split())
    client.send(client.syn("error")[1], client.syn("stdout")[1])
    async with asyncio.timeout(60 * SCALE):
        while marker not in await _ps(attacker, pod):
            await asyncio.sleep(0.2)
        sid, syn = client.syn("stdin")
        client.send(syn, client.rst(sid))  # opened and reset in one read
        client.send(client.ping(9))
        echoed = b""
        while fr.PingFrame(9).serialize() not in echoed:  # the node's reader lives on
            chunk = await client.stream.read()
            assert chunk, "the connection was closed"
            echoed += chunk
        client.stream.abort()  # the client goes away: the process must go too
        while marker in await _ps(attacker, pod):
            await asyncio.sleep(0.2)
    attacker.kubectl("delete", "pod", pod, "--wait=false")


async def test_connections_from_one_source_are_capped(cluster: Cluster, attacker: Attacker) -> None:
    ctx = _context(attacker, anonymous=True)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        return await reader.readexactly(12)

    try:
        async with asyncio.timeout(60 * SCALE):
            for _ in range(300):  # the default cap is 256 from one address
                opened.append(
                    await asyncio.open_connection(
                        "127.0.0.1", cluster.apiserver_port, ssl=ctx, server_hostname="127.0.0.1"
                    )
                )
            lines = await asyncio.gather(*(status_line(r, w) for r, w in opened))
    finally:
        for _, writer in opened:
            writer.close()
    refused = [line for line in lines if line == b"HTTP/1.1 429"]
    # The node agent and other clients of this cluster share the address: at least 44.
    assert len(refused) >= 300 - 256, set(lines)
    assert {*lines} == {b"HTTP/1.1 401", b"HTTP/1.1 429"}
    async with asyncio.timeout(30 * SCALE):
        while True:  # the server notices the closes; a new connection is served again
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", cluster.apiserver_port, ssl=ctx, server_hostname="127.0.0.1"
            )
            line = await status_line(reader, writer)
            writer.close()
            if line == b"HTTP/1.1 401":
                break
            await asyncio.sleep(0.2)
