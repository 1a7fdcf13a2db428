"""Session outcomes by the API server's request id: the bounded LRU, and the
``GET /sessions/{id}`` route of the node endpoint over real mutual TLS (identity
required), filled by real sessions run through the endpoint with a stand-in process."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path

import pytest

from hatchway import pki
from hatchway.errors import ConnectionClosedError
from hatchway.node.identity import CallerIdentity
from hatchway.node.server import NodeEndpoint
from hatchway.node.sessions import CONFLICT, NO_OUTCOME, SessionOutcomes
from hatchway.protocol import handshake
from hatchway.session.client import ClientSession
from hatchway.session.server import SessionOutcome
from hatchway.transport import httpclient, tls
from hatchway.transport.http import HttpServer
from hatchway.transport.spdy import SpdyConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcome(code: int | None, error: str = "", gone: bool = False) -> SessionOutcome:
    return SessionOutcome(exit_code=code, error=error, client_gone=gone)


# --- the LRU ------------------------------------------------------------------------------


def test_records_by_id_and_ignores_ids_it_cannot_trust() -> None:
    outcomes = SessionOutcomes()
    record = outcomes.begin("0f9a-c1")
    outcomes.finish(record, outcome(42))
    found = outcomes.get("0f9a-c1")
    assert found is not None and found.as_json() == {
        "id": "0f9a-c1",
        "finished": True,
        "exitCode": 42,
        "error": "",
        "clientGone": False,
    }
    for bad in (None, "", "x" * 65, "../../etc", "a b", "id\n", "é"):
        assert outcomes.begin(bad) is None
    outcomes.finish(None, outcome(1))  # an unrecorded session ends quietly
    assert len(outcomes) == 1


def test_oldest_dropped_beyond_capacity() -> None:
    outcomes = SessionOutcomes(capacity=3)
    for n in range(5):
        outcomes.finish(outcomes.begin(f"s{n}"), outcome(n))
    assert [outcomes.get(f"s{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert len(outcomes) == 3


def test_finished_records_expire_even_behind_a_running_one() -> None:
    clock = Clock()
    outcomes = SessionOutcomes(ttl=600, clock=clock)
    running = outcomes.begin("running")
    outcomes.finish(outcomes.begin("done"), outcome(0))
    clock.now += 599
    assert outcomes.get("done") is not None
    clock.now += 2
    assert outcomes.get("done") is None
    assert outcomes.get("running") is running  # still running: kept (capacity bounds it)


def test_two_sessions_under_one_id_answer_neither_code() -> None:
    outcomes = SessionOutcomes()
    first, second = outcomes.begin("dup"), outcomes.begin("dup")
    outcomes.finish(first, outcome(0))
    outcomes.finish(second, outcome(1))
    found = outcomes.get("dup")
    assert found is not None
    assert (found.as_json()["exitCode"], found.as_json()["error"]) == (None, CONFLICT)


def test_a_session_that_failed_without_an_outcome_says_so() -> None:
    outcomes = SessionOutcomes()
    outcomes.finish(outcomes.begin("x"), None)
    found = outcomes.get("x")
    assert found is not None and found.as_json()["error"] == NO_OUTCOME
    assert found.as_json()["exitCode"] is None and found.as_json()["finished"] is True


async def test_lookup_waits_for_a_running_session_then_gives_up() -> None:
    outcomes = SessionOutcomes(wait=5 * SCALE)
    record = outcomes.begin("later")
    asyncio.get_running_loop().call_later(0.05, outcomes.finish, record, outcome(7))
    found = await outcomes.lookup("later")
    assert found is not None and found.as_json()["exitCode"] == 7
    short = SessionOutcomes(wait=0.05)
    short.begin("never")
    pending = await short.lookup("never")
    assert pending is not None
    assert (pending.as_json()["finished"], pending.as_json()["exitCode"]) == (False, None)
    assert await short.lookup("unknown") is None


# --- the route, over mutual TLS, after real sessions -------------------------------------


class ExitingProcess:
    """A process that prints one line and exits with ``code``."""

    error_message = None

    def __init__(self, code: int) -> None:
        self.code = code
        self.printed = False

    async def write_stdin(self, data: bytes) -> None:
        pass

    async def close_stdin(self) -> None:
        pass

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        if self.printed:
            return b""
        self.printed = True
        return b"bye\n"

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        return b""

    def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        return self.code

    async def kill(self) -> None:
        pass


@pytest.fixture
async def endpoint(tmp_path: Path):
    bundle = pki.ensure_pki(tmp_path, node_name="n1")

    async def lookup(namespace: str, pod: str, uid: str, container: str):  # type: ignore[no-untyped-def]
        return ("cid", True)

    async def start(container_id: str, options: ExecOptions) -> ExitingProcess:
        return ExitingProcess(int(options.command[-1]))

    app = NodeEndpoint(
        caller=CallerIdentity.from_ca(str(bundle.node_client_ca.cert)), lookup=lookup, start=start
    )
    server = HttpServer(app)
    ctx = tls.server_context(
        bundle.node.cert, bundle.node.key, client_ca=bundle.node_client_ca.cert
    )
    await server.start("127.0.0.1", 0, ssl=ctx)
    yield app, server.port, bundle
    await server.close()


def context(bundle: pki.Pki, who: str | None) -> object:
    if who is None:
        return tls.client_context(ca_file=bundle.ca.cert)
    cert = {"apiserver": bundle.apiserver_kubelet_client, "admin": bundle.admin}[who]
    return tls.client_context(ca_file=bundle.ca.cert, cert_file=cert.cert, key_file=cert.key)


async def run_session(port: int, bundle: pki.Pki, code: int, audit_id: str | None) -> int | None:
    """One exec of ``exit CODE`` the way the API server's proxy sends it."""
    headers = [
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]
    if audit_id is not None:
        headers.append(("Audit-ID", audit_id))
    target = f"/exec/default/p/main?command=exit&command={code}&output=1"
    response, stream = await httpclient.upgrade(
        "POST",
        f"https://127.0.0.1:{port}{target}",
        headers=headers,
        ssl=context(bundle, "apiserver"),
    )
    assert stream is not None, response
    protocol = handshake.check_spdy_response(response.status, response.headers)
    conn = SpdyConnection(stream, client=True, protocol=protocol)
    conn.start()
    options = ExecOptions(("exit", str(code)), "main", False, True, False, False, "exec")
    session = ClientSession(conn, options)
    await session.start()
    assert session.stdout is not None
    async with asyncio.timeout(10 * SCALE):
        while await session.stdout.read(1 << 16):
            pass
        result = await session.wait()
    await session.close()
    return result


async def get(port: int, bundle: pki.Pki, path: str, who: str | None = "apiserver", method="GET"):  # type: ignore[no-untyped-def]
    return await httpclient.request(
        method, f"https://127.0.0.1:{port}{path}", ssl=context(bundle, who)
    )


async def test_the_route_serves_the_exit_code_of_the_session_with_that_id(endpoint) -> None:
    app, port, bundle = endpoint
    assert await run_session(port, bundle, 42, "3d6f0c9e-aa11") == 42
    answer = await get(port, bundle, "/sessions/3d6f0c9e-aa11")
    assert answer.status == 200 and answer.header("content-type") == "application/json"
    assert json.loads(answer.body) == {
        "id": "3d6f0c9e-aa11",
        "finished": True,
        "exitCode": 42,
        "error": "",
        "clientGone": False,
    }
    # Another session, another id; one without an id is not recorded.
    assert await run_session(port, bundle, 3, "second") == 3
    assert await run_session(port, bundle, 5, None) == 5
    assert json.loads((await get(port, bundle, "/sessions/second")).body)["exitCode"] == 3
    assert len(app.outcomes) == 2
    for missing in ("/sessions/nope", "/sessions/", "/sessions/a/b", "/sessions/%2e%2e"):
        answer = await get(port, bundle, missing)
        assert (answer.status, answer.body) == (404, b"session not found\n"), missing
    assert (await get(port, bundle, "/sessions/second", method="POST")).status == 405


async def test_the_route_needs_the_api_server_identity(endpoint) -> None:
    _, port, bundle = endpoint
    assert await run_session(port, bundle, 9, "secret-session") == 9
    answer = await get(port, bundle, "/sessions/secret-session", who=None)
    assert answer.status == 401
    assert b"exitCode" not in answer.body
    # A cluster-CA certificate (the admin's) does not even finish the handshake: the node
    # trusts only the node-client CA for its callers.
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosedError)):
        await get(port, bundle, "/sessions/secret-session", who="admin")
