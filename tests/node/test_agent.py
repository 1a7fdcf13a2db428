"""Exec through the node agent's endpoint into a real busybox container in runc, driven by
our own client side over mutual TLS: exit codes, large transfers both ways, stderr, TTY
resize, kill on disconnect, concurrency, and no output lost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time

import pytest
import pytest_asyncio

from .conftest import SCALE, needs_runc
from .endpoint_harness import Node, close_quietly, finish, pod, running_node

pytestmark = [needs_runc, pytest.mark.runc, pytest.mark.asyncio(loop_scope="module")]

SLEEPER = pod("p", [{"name": "main", "image": "busybox", "command": ["sleep", "100000"]}])
V5 = {"transport": "websocket", "protocols": ("v5.channel.k8s.io",)}
V4 = {"protocols": ("v4.channel.k8s.io",)}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory):
    async with running_node(str(tmp_path_factory.mktemp("node")), [SLEEPER]) as n:
        yield n


def host_processes(marker: bytes) -> list[int]:
    """Host PIDs whose command line contains ``marker`` (NUL-separated argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def read_until(stream, needle: bytes, timeout: float = 10) -> bytes:  # type: ignore[no-untyped-def]
    data = b""
    async with asyncio.timeout(timeout * SCALE):
        while needle not in data:
            chunk = await stream.read(65536)
            assert chunk, f"EOF before {needle!r}: {data!r}"
            data += chunk
    return data


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_echo(node: Node, kw):
    result = await node.run(["echo", "hello", "world"], **kw)
    assert (result.code, result.stdout, result.stderr) == (0, b"hello world\n", b"")


@pytest.mark.parametrize("code", [0, 1, 42, 255])
@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_exit_codes(node: Node, code, kw):
    result = await node.run(["sh", "-c", f"exit {code}"], **kw)
    assert (result.code, result.error) == (code, "")


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_killed_from_outside_is_137(node: Node, kw):
    tag = f"/tmp/victim-{random.randrange(1 << 30)}"
    victim = await node.open(["sh", "-c", f"echo $$ > {tag}; echo ready; exec sleep 1000"], **kw)
    await read_until(victim.stdout, b"ready")
    killer = await node.run(["sh", "-c", f"kill -9 $(cat {tag})"])
    assert killer.code == 0
    result = await finish(victim)
    assert (result.code, result.stdout, result.error) == (137, b"", "")


async def test_stderr_is_kept_separate(node: Node):
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    for kw in (V4, V5):
        result = await node.run(["sh", "-c", script], **kw)
        assert result.stdout == b"out1\nout2\nout3\n"
        assert result.stderr == b"err1\nerr2\nerr3\n"
    only_err = await node.run(["sh", "-c", "echo o; echo e >&2"], stdout=False)
    assert (only_err.stdout, only_err.stderr) == (b"", b"e\n")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def blob(node: Node) -> bytes:
    """16 MiB of random bytes, also in the container as /tmp/blob."""
    data = os.urandom(16 << 20)
    result = await node.run(["sh", "-c", "cat > /tmp/blob"], input=data)
    assert result.code == 0
    return data


@pytest.mark.slow
@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_256_mib_through_stdout_verified_by_hash(node: Node, blob: bytes, kw):
    size = 256 << 20
    expected = hashlib.sha256()
    for _ in range(16):
        expected.update(blob)
    session = await node.open(["sh", "-c", "for i in $(seq 16); do cat /tmp/blob; done"], **kw)
    digest = hashlib.sha256()
    count = 0
    started = time.monotonic()
    async with asyncio.timeout(60 * SCALE):
        while chunk := await session.stdout.read(1 << 20):  # type: ignore[union-attr]
            digest.update(chunk)
            count += len(chunk)
        elapsed = time.monotonic() - started
        assert await session.wait() == 0
    await session.close()
    assert count == size
    assert digest.hexdigest() == expected.hexdigest()
    print(f"256 MiB out over {kw}: {elapsed:.2f} s, {size / elapsed / 1e6:.0f} MB/s")


@pytest.mark.slow
@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_64_mib_into_stdin_counted_inside_with_eof(node: Node, kw):
    data = os.urandom(1 << 20) * 64
    started = time.monotonic()
    result = await node.run(
        ["sh", "-c", "tee /tmp/in$$ | wc -c; sha256sum /tmp/in$$ >&2; rm /tmp/in$$"],
        input=data,
        **kw,
    )
    elapsed = time.monotonic() - started
    assert result.code == 0
    assert result.stdout.strip() == str(64 << 20).encode()
    assert result.stderr.split()[0].decode() == hashlib.sha256(data).hexdigest()
    print(f"64 MiB in over {kw}: {elapsed:.2f} s")


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_tty_size_after_a_resize(node: Node, kw):
    session = await node.open(["sh", "-c", "read x; stty size"], stdin=True, tty=True, **kw)
    assert session.stderr is None
    # Sent back to back, as kubectl does: the size must reach the pty before the input.
    await session.resize(100, 30)
    await session.write_stdin(b"go\r")
    out = await read_until(session.stdout, b"30 100\r\n")
    await session.resize(132, 43)
    await session.write_stdin(b"")
    result = await finish(session)
    assert result.code == 0
    assert b"stty" not in out + result.stdout


async def test_tty_exit_code_and_stdin_eof_as_ctrl_d(node: Node):
    session = await node.open(["sh", "-c", "cat; exit 5"], stdin=True, tty=True, **V5)
    await session.write_stdin(b"abc\r")
    await read_until(session.stdout, b"abc")
    await session.close_stdin()
    result = await finish(session)
    assert result.code == 5


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_client_disconnect_kills_the_process_tree(node: Node, kw, tty):
    a, b = (str(random.randrange(10**6, 10**7)) for _ in range(2))
    session = await node.open(
        ["sh", "-c", f"sleep {a} & sleep {b}; echo never"], stdin=tty, tty=tty, **kw
    )
    markers = [b"sleep\0" + a.encode(), b"sleep\0" + b.encode()]
    async with asyncio.timeout(10 * SCALE):
        while not all(host_processes(m) for m in markers):
            await asyncio.sleep(0.02)
    shell = [p for p in host_processes(b"sh\0-c\0sleep " + a.encode())]
    assert shell
    session.conn.abort()
    gone_by = time.monotonic() + 1.0 * SCALE
    # The shell (tini's child) dies last, once everything below it is dead: tini then
    # reaps them all (node/runtime_tree.py); so wait for it too.
    markers.append(b"sh\0-c\0sleep " + a.encode())
    while time.monotonic() < gone_by and any(host_processes(m) for m in markers):
        await asyncio.sleep(0.02)
    assert [host_processes(m) for m in markers] == [[], [], []]
    await close_quietly(session)
    # The container itself is untouched.
    assert (await node.run(["true"])).code == 0


async def test_50_concurrent_execs(node: Node):
    started = time.monotonic()

    async def one(i: int):  # type: ignore[no-untyped-def]
        kw = V5 if i % 2 else V4
        return await node.run(["sh", "-c", f"echo {i}; echo e{i} >&2; exit {i % 7}"], **kw)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    elapsed = time.monotonic() - started
    for i, r in enumerate(results):
        assert (r.code, r.stdout, r.stderr) == (i % 7, f"{i}\n".encode(), f"e{i}\n".encode())
    print(f"50 concurrent execs: {elapsed:.2f} s")


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_no_output_lost_before_the_status(node: Node, kw):
    """Everything written just before exiting arrives, on both streams, before the end."""
    script = (
        "head -c 3000000 /dev/zero | tr '\\0' x; head -c 100000 /dev/zero | tr '\\0' y >&2; exit 3"
    )
    for _ in range(3):
        result = await node.run(["sh", "-c", script], **kw)
        assert result.code == 3
        assert result.stdout == b"x" * 3000000
        assert result.stderr == b"y" * 100000


async def test_websocket_status_comes_after_the_last_output(node: Node):
    """On one WebSocket the order is the wire order: stdout ends before the status."""
    session = await node.open(["sh", "-c", "head -c 1000000 /dev/zero; exit 2"], **V5)
    out = b""
    while chunk := await session.stdout.read(1 << 20):  # type: ignore[union-attr]
        assert not session._status.done()  # type: ignore[union-attr]
        out += chunk
    assert len(out) == 1000000
    assert await session.wait() == 2
    await session.close()


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_background_child_holding_stdout_does_not_block(node: Node, kw):
    started = time.monotonic()
    result = await node.run(["sh", "-c", "sleep 100 & echo hi"], **kw)
    assert (result.code, result.stdout) == (0, b"hi\n")
    assert time.monotonic() - started < 3 * SCALE


@pytest.mark.parametrize("kw", [V4, V5], ids=["spdy", "websocket"])
async def test_missing_binary_is_127_with_the_runtime_message(node: Node, kw):
    result = await node.run(["no-such-binary", "x"], **kw)
    assert result.code == 127
    assert b'"no-such-binary": executable file not found in $PATH' in result.stderr
    assert result.stdout == b""


async def test_not_executable_is_126(node: Node):
    await node.run(["sh", "-c", "echo x > /tmp/notexec; chmod 644 /tmp/notexec"])
    result = await node.run(["/tmp/notexec"])
    assert result.code == 126
    assert b"permission denied" in result.stderr.lower()


async def test_missing_binary_with_a_tty_shows_the_message(node: Node):
    result = await node.run(["no-such-binary"], tty=True, **V5)
    assert result.code == 127
    assert b"executable file not found" in result.stdout


async def test_exec_into_a_container_that_has_exited(node: Node):
    short = pod("short", [{"name": "main", "image": "busybox", "command": ["sleep", "1"]}])
    manager = node.agent.manager
    await manager.reconcile([SLEEPER, short])
    try:
        async with asyncio.timeout(30 * SCALE):
            while not await manager.container_running("default", "short", "main"):
                await asyncio.sleep(0.05)
        assert (await node.run(["true"], pod_name="short")).code == 0
        async with asyncio.timeout(30 * SCALE):
            while await manager.container_running("default", "short", "main"):
                await asyncio.sleep(0.05)
        for kw in (V4, V5):
            response, conn = await node.upgrade(
                "/exec/default/short/main?command=true&output=1", **kw
            )
            assert conn is None
            assert (response.status, response.body) == (500, b'container not found ("main")\n')
    finally:
        await manager.reconcile([SLEEPER])


# --- which pod a request means (issue 9) -------------------------------------------------


def _api_pod(name: str, uid: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "uid": uid}}


async def test_lookup_by_uid_refuses_another_pod_of_the_name(tmp_path) -> None:
    import uuid as uuid_module

    from hatchway.node.agent import NodeAgent, NodeConfig
    from hatchway.node.server import LookupRefusedError

    agent = NodeAgent(NodeConfig(data_dir=str(tmp_path), apiserver="https://x", node_name="n"))
    old, new = str(uuid_module.uuid4()), str(uuid_module.uuid4())
    agent._pods = {old: _api_pod("p", old)}
    assert agent._pod_uid("default", "p", old) == old
    assert agent._pod_uid("default", "p", "") == old  # uid-less: the only one
    assert agent._pod_uid("default", "q", new) is None  # no pod of that name: 404
    with pytest.raises(LookupRefusedError) as refused:
        agent._pod_uid("default", "p", new)
    assert refused.value.status == 409 and "uid mismatch" in str(refused.value)
    agent._pods[new] = _api_pod("p", new)
    assert agent._pod_uid("default", "p", new) == new
    with pytest.raises(LookupRefusedError) as ambiguous:
        agent._pod_uid("default", "p", "")
    assert ambiguous.value.status == 409 and "must name the pod's uid" in str(ambiguous.value)


async def test_the_node_sends_no_session_tickets(node: Node) -> None:
    """The API server never resumes a TLS session with the node; tickets it would only
    hold for each exec connection's lifetime are not sent (issue 13)."""

    def healthz_ticket() -> bool:
        import socket
        import ssl

        with socket.create_connection(("127.0.0.1", node.agent.port), timeout=10 * SCALE) as raw:
            with node.context().wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200 ") and sock.version() == "TLSv1.3"
                assert isinstance(sock.session, ssl.SSLSession)
                return sock.session.has_ticket

    assert not await asyncio.to_thread(healthz_ticket)
