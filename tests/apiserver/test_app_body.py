"""The API server reads no request body before authentication, over real TLS: 100
anonymous clients each sending (nearly) a 3 MiB body get 401 without the server holding
their bodies (memory traced), while an authenticated client's body is read as before."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tracemalloc
from pathlib import Path

import pytest

from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls
from hatchway.transport.http import HttpLimits

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
CLIENTS = 100
BODY = 3 * 1024 * 1024
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def server(tmp_path: Path):
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("tok-admin,root,1,system:masters\n")
    # A short body timeout: a server that waits for the bodies gives up soon enough.
    limits = HttpLimits(body_timeout=5 * SCALE)
    config = ApiServerConfig(
        data_dir=tmp_path / "data", port=0, token_file=tokens, http_limits=limits
    )
    srv = ApiServer(config)
    await srv.start()
    yield srv
    await srv.close()


def _context(server: ApiServer) -> ssl.SSLContext:
    assert server.paths is not None
    return tls.client_context(ca_file=server.paths.client_ca)


async def _anonymous_post(server: ApiServer, ctx: ssl.SSLContext, body: memoryview) -> bytes:
    """Announce a 3 MiB body, send all of it but its last byte (so it never ends) with
    the standard library's streams, and return what the server answers."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1"
    )
    head = (
        f"POST {PODS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY}\r\n\r\n"
    ).encode()

    async def send() -> None:
        try:
            writer.write(head)
            for off in range(0, BODY - 1, 64 * 1024):
                writer.write(body[off : min(off + 64 * 1024, BODY - 1)])
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server closed after its answer: fine

    sending = asyncio.create_task(send())
    try:
        return await reader.read()
    finally:
        await sending
        writer.close()


#: Allocations made for the server's side of a request: the client here uses only the
#: standard library's streams, so a trace through these files is the server's.
SERVER_SIDE = [
    tracemalloc.Filter(True, "*/hatchway/transport/*"),
    tracemalloc.Filter(True, "*/h11/*"),
]


async def _sample_server_side(peak: list[int]) -> None:
    """The largest sum of server-side traced bytes seen, every 50 ms."""
    while True:
        await asyncio.sleep(0.05)
        snapshot = tracemalloc.take_snapshot().filter_traces(SERVER_SIDE)
        peak[0] = max(peak[0], sum(stat.size for stat in snapshot.statistics("filename")))


async def test_anonymous_bodies_are_never_held(server: ApiServer) -> None:
    ctx = _context(server)
    body = memoryview(b"{" + b" " * (BODY - 2) + b"}")
    held = [0]
    tracemalloc.start()
    sampler = asyncio.create_task(_sample_server_side(held))
    try:
        base = tracemalloc.get_traced_memory()[0]
        async with asyncio.timeout(60 * SCALE):
            answers = await asyncio.gather(
                *(_anonymous_post(server, ctx, body) for _ in range(CLIENTS))
            )
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        sampler.cancel()
        tracemalloc.stop()
    print(
        f"{CLIENTS} anonymous 3 MiB bodies: server-side request buffers peaked at "
        f"{held[0] / 2**20:.1f} MiB, all traced memory (TLS of both sides) {peak / 2**20:.1f} MiB"
    )
    # Holding the bodies takes CLIENTS * BODY (300 MiB). Unauthenticated, a connection
    # may buffer a head's worth (64 KiB) in h11 and a few reads of that size.
    assert held[0] < CLIENTS * 5 * 64 * 1024
    assert all(a.startswith(b"HTTP/1.1 401 ") for a in answers), {a[:40] for a in answers}
    assert json.loads(answers[0].partition(b"\r\n\r\n")[2])["reason"] == "Unauthorized"


async def test_an_authenticated_body_is_still_read(server: ApiServer) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"pad": "x" * (2 * 1024 * 1024)}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    resp = await http.request(
        "POST",
        f"https://127.0.0.1:{server.port}{PODS}",
        headers=[("Authorization", "Bearer tok-admin"), ("Content-Type", "application/json")],
        body=json.dumps(pod).encode(),
        ssl=_context(server),
    )
    assert resp.status in (201, 422), resp.body[:200]  # read and judged, not 401/413
    bad = await http.request(
        "POST",
        f"https://127.0.0.1:{server.port}{PODS}",
        headers=[("Authorization", "Bearer wrong"), ("Content-Type", "application/json")],
        body=json.dumps(pod).encode(),
        ssl=_context(server),
    )
    assert bad.status == 401


async def test_a_request_is_authenticated_once(server: ApiServer) -> None:
    """The head check's user is the one the application uses: the token table is walked
    once per request, not once for the head and again for the app."""
    assert server.http is not None
    authn = server.http.app.authn  # type: ignore[attr-defined]
    calls: list[str] = []
    lookup = authn.authenticate_token

    def counted(token: str):  # type: ignore[no-untyped-def]
        calls.append(token)
        return lookup(token)

    authn.authenticate_token = counted
    resp = await http.request(
        "GET",
        f"https://127.0.0.1:{server.port}{PODS}",
        headers=[("Authorization", "Bearer tok-admin")],
        ssl=_context(server),
    )
    assert resp.status == 200, resp.body
    assert calls == ["tok-admin"]


async def _post_pod(server: ApiServer, body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(30 * SCALE):
        return await http.request(
            "POST",
            f"https://127.0.0.1:{server.port}{PODS}",
            headers=[("Authorization", "Bearer tok-admin"), ("Content-Type", content_type)],
            body=body,
            ssl=_context(server),
        )


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
async def test_a_body_nested_past_the_depth_limit_is_a_400(
    server: ApiServer, content_type: str
) -> None:
    """A body of 100,000 nested lists (Go's decoder stops at 10,000 levels with 'exceeded
    max depth') is a bad request, not the server's RecursionError as a 500."""
    depth = 100_000
    nested = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    resp = await _post_pod(server, nested, content_type)
    assert resp.status == 400, resp.body[:200]
    assert b"exceeded max depth" in resp.body, resp.body[:200]


async def test_a_yaml_alias_bomb_is_a_400(server: ApiServer) -> None:
    """Nine levels of nine aliases each: 400 bytes of YAML that are 9**9 strings once
    expanded (what storing it as JSON would do). Kubernetes' YAML decoder refuses the
    excessive aliasing; so do we, at once and without the memory."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, 10):
        refs = ", ".join(f"*a{level - 1}" for _ in range(9))
        lines.append(f"a{level}: &a{level} [{refs}]")
    body = ("\n".join(lines) + "\n").encode()
    resp = await _post_pod(server, body, "application/yaml")
    assert resp.status == 400, resp.body[:200]
    assert b"alias" in resp.body, resp.body[:200]


async def test_a_recursive_yaml_alias_is_a_400(server: ApiServer) -> None:
    """``&a [*a]`` is a list that holds itself: no JSON can store it."""
    resp = await _post_pod(server, b"metadata: &a {name: [*a]}\n", "application/yaml")
    assert resp.status == 400, resp.body[:200]
    assert b"excessive aliasing" in resp.body, resp.body[:200]


async def test_yaml_anchors_used_sparingly_are_read(server: ApiServer) -> None:
    body = (
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: anchored, labels: &l {app: x}}\n"
        b"spec:\n  containers:\n  - {name: c, image: busybox}\n"
        b"  nodeSelector: *l\n"
    )
    resp = await _post_pod(server, body, "application/yaml")
    assert resp.status in (201, 422), resp.body[:200]  # read and judged
    assert b"aliasing" not in resp.body
