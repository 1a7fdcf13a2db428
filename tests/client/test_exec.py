"""hatchway.client.exec against a real cluster, over both transports.

``run()`` and ``create_process()`` with a RestClient, the streams of a RemoteProcess,
``write_eof``, ``resize`` with a TTY, ``wait``/``returncode``, binary data, and the
errors a refused upgrade or a cut session produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid

import pytest

from cluster import SCALE, Cluster
from hatchway.client import exec as client_exec
from hatchway.client.api import Client
from hatchway.errors import ApiError, ConnectionClosedError, ExecError
from hatchway.rest import RestClient
from hatchway.session import upgrade
from hatchway.types import ExecOptions

TRANSPORTS = ["websocket", "spdy"]
PROTOCOL = {
    "websocket": "v5.channel.k8s.io",
    "spdy": "v4.channel.k8s.io",
    "auto": "v5.channel.k8s.io",
}


def timeout(seconds: float) -> float:
    return seconds * SCALE


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    return cluster.pod()


@pytest.fixture
def rest(cluster: Cluster) -> RestClient:
    return Client.from_kubeconfig(str(cluster.kubeconfig)).rest


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_run_collects_output_and_exit_code(
    rest: RestClient, pod: str, transport: str
) -> None:
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = await client_exec.run(rest, "default", pod, command, transport=transport)
    assert (result.command, result.returncode) == (command, 3)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


@pytest.mark.parametrize("code", [1, 42, 255])
async def test_run_check_raises_exec_error_with_the_outcome(
    rest: RestClient, pod: str, transport: str, code: int
) -> None:
    command = ["sh", "-c", f"echo partial; echo why >&2; exit {code}"]
    with pytest.raises(ExecError) as info:
        await client_exec.run(rest, "default", pod, command, check=True, transport=transport)
    error = info.value
    assert (error.command, error.returncode) == (command, code)
    assert (error.stdout, error.stderr) == (b"partial\n", b"why\n")
    assert str(code) in str(error)


async def test_run_check_passes_on_success(rest: RestClient, pod: str, transport: str) -> None:
    result = await client_exec.run(rest, "default", pod, ["true"], check=True, transport=transport)
    assert result.returncode == 0


@pytest.mark.slow
async def test_run_is_binary_clean_both_ways(rest: RestClient, pod: str, transport: str) -> None:
    data = os.urandom(8 << 20) + bytes(range(256)) + b"\r\n\x00"
    result = await client_exec.run(rest, "default", pod, ["cat"], input=data, transport=transport)
    assert result.returncode == 0
    assert len(result.stdout) == len(data)
    assert result.stdout == data


async def test_run_with_empty_input_sends_eof(rest: RestClient, pod: str, transport: str) -> None:
    result = await client_exec.run(
        rest, "default", pod, ["sh", "-c", "wc -c; exit 6"], input=b"", transport=transport
    )
    assert (result.returncode, result.stdout.split()) == (6, [b"0"])


async def test_process_streams_interactively(rest: RestClient, pod: str, transport: str) -> None:
    process = await client_exec.create_process(
        rest,
        "default",
        pod,
        ["sh", "-c", "cat; echo done >&2; exit 5"],
        stdin=True,
        transport=transport,
    )
    async with process:
        assert process.protocol == PROTOCOL[transport]
        assert process.returncode is None
        for line in (b"one\n", b"two\n"):
            await process.stdin.write(line)
            echoed = await asyncio.wait_for(process.stdout.read(), timeout(10))
            assert echoed == line
        await process.write_eof()
        assert await process.stdout.read_all() == b""
        assert await process.stderr.read_all() == b"done\n"
        assert await asyncio.wait_for(process.wait(), timeout(10)) == 5
        assert process.returncode == 5
        assert await process.wait() == 5  # idempotent


async def test_process_without_stdout(rest: RestClient, pod: str, transport: str) -> None:
    process = await client_exec.create_process(
        rest,
        "default",
        pod,
        ["sh", "-c", "cat >/dev/null; echo seen >&2"],
        stdin=True,
        stdout=False,
        transport=transport,
    )
    async with process:
        await process.stdin.write(b"x" * 200_000)
        await process.write_eof()
        assert await process.stdout.read() == b""  # not requested: EOF at once
        assert await process.stderr.read_all() == b"seen\n"
        assert await process.wait() == 0


async def test_tty_and_resize(rest: RestClient, pod: str, transport: str) -> None:
    process = await client_exec.create_process(
        rest, "default", pod, ["sh"], stdin=True, tty=True, transport=transport
    )
    async with process:
        await process.resize(100, 30)
        output = b""

        async def size_after(command: bytes) -> tuple[bytes, bytes]:
            nonlocal output
            marker = uuid.uuid4().hex[:8].encode()
            await process.stdin.write(command + b"; stty size | sed s/^/" + marker + b"=/\n")
            pattern = re.compile(marker + rb"=(\d+) (\d+)")
            while not (match := pattern.search(output)):
                chunk = await asyncio.wait_for(process.stdout.read(), timeout(10))
                assert chunk, output
                output += chunk
            return match.group(1), match.group(2)

        assert await size_after(b"true") == (b"30", b"100")
        await process.resize(132, 40)
        assert await size_after(b"true") == (b"40", b"132")
        await process.stdin.write(b"exit 9\n")
        await process.stdout.read_all()
        assert await process.wait() == 9
        assert await process.stderr.read() == b""  # a TTY folds stderr into stdout


async def test_terminate_kills_the_remote_process(
    rest: RestClient, pod: str, transport: str
) -> None:
    marker = f"{1000 + int.from_bytes(os.urandom(2), 'big')}"
    process = await client_exec.create_process(
        rest, "default", pod, ["sh", "-c", f"echo up; exec sleep {marker}"], transport=transport
    )
    assert await asyncio.wait_for(process.stdout.read(), timeout(10)) == b"up\n"
    process.terminate()
    # No status arrived: that is not a success.
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(process.wait(), timeout(10))
    assert process.returncode is None
    await process.close()
    deadline = asyncio.get_running_loop().time() + timeout(10)
    while True:
        ps = await client_exec.run(rest, "default", pod, ["ps", "-o", "args"])
        if f"sleep {marker}".encode() not in ps.stdout:
            break
        assert asyncio.get_running_loop().time() < deadline, ps.stdout
        await asyncio.sleep(0.2)


async def test_closing_early_does_not_hang(rest: RestClient, pod: str, transport: str) -> None:
    process = await client_exec.create_process(
        rest, "default", pod, ["sh", "-c", "yes | head -c 50000000"], transport=transport
    )
    assert await process.stdout.read()
    await asyncio.wait_for(process.close(), timeout(10))


async def test_input_to_a_command_that_does_not_read(
    rest: RestClient, pod: str, transport: str
) -> None:
    result = await asyncio.wait_for(
        client_exec.run(
            rest,
            "default",
            pod,
            ["sh", "-c", "exit 4"],
            input=os.urandom(4 << 20),
            transport=transport,
        ),
        timeout(20),
    )
    assert result.returncode == 4


async def test_missing_executable(rest: RestClient, pod: str, transport: str) -> None:
    result = await client_exec.run(rest, "default", pod, ["no-such-binary"], transport=transport)
    assert result.returncode == 127
    assert b"no-such-binary" in result.stderr


@pytest.mark.parametrize("transport_", ["websocket", "spdy", "auto"])
async def test_refused_upgrades_raise_the_server_status(
    rest: RestClient, pod: str, transport_: str
) -> None:
    with pytest.raises(ApiError) as info:
        await client_exec.run(rest, "default", "no-such-pod", ["true"], transport=transport_)
    assert (info.value.code, info.value.reason) == (404, "NotFound")
    assert info.value.message == 'pods "no-such-pod" not found'
    with pytest.raises(ApiError) as info:
        await client_exec.run(
            rest, "default", pod, ["true"], container="bogus", transport=transport_
        )
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    assert info.value.message == f"container bogus is not valid for pod {pod}"


async def test_auto_prefers_websocket(rest: RestClient, pod: str) -> None:
    process = await client_exec.create_process(rest, "default", pod, ["true"])
    async with process:
        assert process.protocol == "v5.channel.k8s.io"
        assert await process.wait() == 0


async def test_unknown_transport(rest: RestClient, pod: str) -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        await client_exec.run(rest, "default", pod, ["true"], transport="carrier-pigeon")


async def test_many_sessions_at_once(rest: RestClient, pod: str) -> None:
    async def one(i: int) -> None:
        transport = TRANSPORTS[i % 2]
        data = os.urandom(100_000 + i)
        result = await client_exec.run(
            rest,
            "default",
            pod,
            ["sh", "-c", f"sha256sum; exit {i}"],
            input=data,
            transport=transport,
        )
        assert result.returncode == i
        assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), timeout(60))


def test_websocket_offer_is_v5_only_with_stdin() -> None:
    # v4 over WebSocket cannot carry stdin EOF; kubectl offers v5 alone (protocol.md 5.1).
    with_stdin = ExecOptions(("cat",), stdin=True)
    assert upgrade.websocket_offer(with_stdin) == ("v5.channel.k8s.io",)
    without = ExecOptions(("ls",))
    assert upgrade.websocket_offer(without) == ("v5.channel.k8s.io", "v4.channel.k8s.io")
