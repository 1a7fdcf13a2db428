"""A real node agent endpoint for tests: NodeAgent's runtime, pod manager and HTTPS
endpoint (mutual TLS, certificates from ``pki.ensure_pki``) with busybox pods in real
runc, and our own client side (upgrade, handshake, SPDY/WebSocket, ClientSession) to
drive it the way the API server's proxy and kubectl do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hatchway import pki
from hatchway.errors import ConnectionClosedError, RemoteCommandError
from hatchway.node.agent import NodeAgent, NodeConfig
from hatchway.protocol import handshake
from hatchway.session.client import ClientSession
from hatchway.transport import httpclient, tls
from hatchway.transport.base import Connection
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hatchway.types import ExecOptions

from .conftest import SCALE, _force_cleanup, _mounts_under, pod_uid

SPDY_ALL = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": pod_uid(name)},
        "spec": {
            "containers": containers,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            **spec,
        },
    }


@dataclass
class Result:
    """What a client saw of one session."""

    code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    error: str = ""
    protocol: str = ""


@dataclass
class Node:
    agent: NodeAgent
    paths: pki.Pki
    data_dir: str
    sessions: list[ClientSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.agent.port}"

    def context(self, who: str | None = "apiserver") -> ssl.SSLContext:
        """A client context presenting ``who``'s certificate (None: no certificate)."""
        cert = {
            "apiserver": self.paths.apiserver_kubelet_client,
            "admin": self.paths.admin,
            "node": self.paths.node,
            None: None,
        }[who]
        if cert is None:
            return tls.client_context(ca_file=self.paths.ca.cert)
        return tls.client_context(
            ca_file=self.paths.ca.cert, cert_file=cert.cert, key_file=cert.key
        )

    # --- raw requests --------------------------------------------------------------

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]] = (), who="apiserver"
    ) -> httpclient.ClientResponse:
        return await httpclient.request(
            method, self.url + target, headers=list(headers), ssl=self.context(who)
        )

    async def upgrade(
        self,
        target: str,
        *,
        transport: str = "spdy",
        protocols: Sequence[str] = SPDY_ALL,
        method: str | None = None,
        who: str | None = "apiserver",
    ) -> tuple[httpclient.ClientResponse, Connection | None]:
        """Send the upgrade request for ``target`` (path and query); on 101 the started
        client Connection, else ``(response, None)``."""
        if transport == "spdy":
            headers = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]
            headers += [("x-stream-protocol-version", p) for p in protocols]
        else:
            key = base64.b64encode(os.urandom(16)).decode()
            headers = [
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", key),
                ("sec-websocket-version", "13"),
            ]
            if protocols != ("",):
                headers.append(("sec-websocket-protocol", ", ".join(protocols)))
        method = method or ("POST" if transport == "spdy" else "GET")
        response, stream = await httpclient.upgrade(
            method, self.url + target, headers=headers, ssl=self.context(who)
        )
        if stream is None:
            return response, None
        conn: Connection
        if transport == "spdy":
            protocol = handshake.check_spdy_response(response.status, response.headers)
            conn = SpdyConnection(stream, client=True, protocol=protocol)
        else:
            protocol = handshake.check_websocket_response(
                response.status, response.headers, key, list(protocols)
            )
            conn = WebSocketConnection(stream, client=True, protocol=protocol)
        conn.start()
        return response, conn

    async def open(
        self,
        command: Sequence[str] = (),
        *,
        pod_name: str = "p",
        container: str = "main",
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
        action: str = "exec",
        spelling: str = "kubelet",
        **kw: Any,
    ) -> ClientSession:
        """Upgrade and open the streams; the session (closed by the fixture too)."""
        options = ExecOptions(tuple(command), container, stdin, stdout, stderr, tty, action)
        target = exec_target(options, pod_name, spelling)
        response, conn = await self.upgrade(target, **kw)
        assert conn is not None, (response.status, response.body)
        session = ClientSession(conn, options)
        self.sessions.append(session)
        await session.start()
        return session

    async def run(self, command: Sequence[str], *, input: bytes | None = None, **kw: Any) -> Result:
        """Run a command to its end, like ``kubectl exec``; stdin when ``input`` is given."""
        session = await self.open(command, stdin=input is not None, **kw)
        return await finish(session, input)


async def close_quietly(session: ClientSession) -> None:
    """Close a session whose status may have failed unread (an aborted connection).

    ClientSession.close() leaves a failed status task unretrieved; its "exception was
    never retrieved" log, written by a finalizer during another ast.parse, trips
    CPython 3.11's AST recursion-depth check (SystemError at the end of the run).
    """
    status = session._status
    if status is not None and status.done() and not status.cancelled():
        status.exception()
    await session.close()


def exec_target(options: ExecOptions, pod_name: str, spelling: str) -> str:
    """``/exec/default/POD/CONTAINER?...`` in the kubelet's (input=1) or the API server's
    (stdin=true) query spelling."""
    query: list[tuple[str, str]] = [("command", c) for c in options.command]
    names = {
        "kubelet": ("input", "output", "error", "tty"),
        "apiserver": ("stdin", "stdout", "stderr", "tty"),
    }
    on = "1" if spelling == "kubelet" else "true"
    for name, wanted in zip(
        names[spelling], (options.stdin, options.stdout, options.stderr, options.tty), strict=True
    ):
        if wanted:
            query.append((name, on))
    path = f"/{options.action}/default/{pod_name}/{options.container}"
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


async def finish(session: ClientSession, input: bytes | None = None) -> Result:
    """Feed ``input`` (then EOF), read stdout and stderr to EOF, then the status."""

    async def feed() -> None:
        if input is None:
            return
        view = memoryview(input)
        for i in range(0, len(view), 256 * 1024):
            await session.write_stdin(bytes(view[i : i + 256 * 1024]))
        await session.close_stdin()

    async def drain(stream) -> bytes:  # type: ignore[no-untyped-def]
        if stream is None:
            return b""
        chunks = []
        with contextlib.suppress(ConnectionClosedError):
            while chunk := await stream.read(1 << 20):
                chunks.append(chunk)
        return b"".join(chunks)

    async with asyncio.timeout(60 * SCALE):
        _, out, err = await asyncio.gather(feed(), drain(session.stdout), drain(session.stderr))
        try:
            code: int | None = await session.wait()
            error = ""
        except RemoteCommandError as exc:
            code, error = None, str(exc)
    await session.close()
    return Result(code, out, err, error, session.version)


async def wait_running(agent: NodeAgent, name: str, containers: Sequence[str]) -> None:
    async with asyncio.timeout(30 * SCALE):
        while not all(
            [await agent.manager.container_running("default", name, c) for c in containers]
        ):
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_node(data_dir: str, pods: Sequence[dict[str, Any]]) -> AsyncIterator[Node]:
    """A node agent (runtime, pod manager, endpoint; no API server) running ``pods``."""
    config = NodeConfig(
        data_dir=data_dir,
        apiserver="https://127.0.0.1:9",  # never dialled: start() is not called
        node_name="hw-test-node",
        port=0,
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    paths = pki.ensure_pki(data_dir, node_name=config.node_name)
    agent = NodeAgent(config)
    node = Node(agent, paths, data_dir)
    try:
        await agent.start_runtime()
        await agent.start_server()
        await agent.manager.reconcile(list(pods))
        for p in pods:
            await wait_running(
                agent, p["metadata"]["name"], [c["name"] for c in p["spec"]["containers"]]
            )
        yield node
    finally:
        for session in node.sessions:
            with contextlib.suppress(Exception):
                await close_quietly(session)
        with contextlib.suppress(Exception):
            await agent.manager.reconcile([])
        await agent.close()
        for st in await agent.runtime.list():
            with contextlib.suppress(Exception):
                await agent.runtime.delete(st.id, force=True)
        leftover = _mounts_under(data_dir)
        _force_cleanup(os.path.join(data_dir, "node"))
        assert leftover == [], f"mounts left behind: {leftover}"
