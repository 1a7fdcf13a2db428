"""Helpers shared by the API server tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from hatchway import pki
from hatchway.apiserver.server import ApiServer
from hatchway.transport import http, tls

# The ``token_server`` fixture (conftest.py): start a server with these static tokens.
TokenServer = Callable[[str], Awaitable[ApiServer]]


class ServedNode(Protocol):
    """A fake node: its HTTP app, and the port :func:`serve_node` serves it on."""

    port: int

    async def app(self, request: http.Request) -> http.Response: ...


NodeT = TypeVar("NodeT", bound=ServedNode)


@contextlib.asynccontextmanager
async def node_server(data_dir: Path, app: http.App) -> AsyncIterator[http.HttpServer]:
    """``app`` served as node n1's HTTPS endpoint: the node certificate of the PKI in
    ``data_dir`` (made there when missing), client certificates of the node client CA
    required, as the API server presents them. Closed on exit."""
    bundle = pki.ensure_pki(data_dir, node_name="n1")
    ctx = tls.server_context(
        bundle.node.cert,
        bundle.node.key,
        client_ca=bundle.node_client_ca.cert,
        require_client_cert=True,
    )
    server = http.HttpServer(app)
    await server.start("127.0.0.1", 0, ssl=ctx)
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def serve_node(data_dir: Path, fake: NodeT) -> AsyncIterator[NodeT]:
    """``fake`` served by :func:`node_server`, its ``port`` set to the one it listens on."""
    async with node_server(data_dir, fake.app) as server:
        fake.port = server.port
        yield fake
