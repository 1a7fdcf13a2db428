"""Client and server sessions against each other over an in-memory pipe
(``transport/memory.py``), for every transport and channel version. The runner here is
an in-process stand-in; the node tests run the same session over real sockets against
real runc containers, and ``test_session_faults.py`` injects faults into the pipe."""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.errors import RemoteCommandError
from hatchway.types import ExecOptions

from .fakes import CASES, SCALE, open_pair


async def session_pair(transport: str, version: str, options: ExecOptions):  # type: ignore[no-untyped-def]
    pair = await open_pair(transport, version, options)
    return pair, pair.session, pair.runner, pair.done


@pytest.mark.parametrize(("transport", "version"), CASES)
async def test_exit_code_and_separate_streams(transport: str, version: str) -> None:
    options = ExecOptions(("exit", "42"), "main", stdout=True, stderr=True)
    pair, session, _, done = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            out, err = await asyncio.gather(session.stdout.read_all(), session.stderr.read_all())
            if version.startswith(("v4", "v5")):
                assert await session.wait() == 42
            else:
                with pytest.raises(RemoteCommandError, match="exit code 42"):
                    await session.wait()
        assert (out, err) == (b"out\n", b"err\n")
        await session.close()  # the client hangs up first, as kubectl does
        assert (await done).exit_code == 42
    finally:
        await session.close()
        await pair.aclose()


@pytest.mark.parametrize(
    ("transport", "version"),
    [c for c in CASES if c[0] == "spdy" or c[1].startswith("v5")],
)
async def test_stdin_round_trip_with_eof(transport: str, version: str) -> None:
    options = ExecOptions(("cat",), "main", stdin=True, stdout=True, stderr=True)
    pair, session, _, done = await session_pair(transport, version, options)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    try:
        async with asyncio.timeout(20 * SCALE):

            async def feed() -> None:
                for i in range(0, len(payload), 100_000):
                    await session.write_stdin(payload[i : i + 100_000])
                await session.close_stdin()

            _, out = await asyncio.gather(feed(), session.stdout.read_all(1 << 30))
            assert out == payload
            assert await session.wait() == 0
        await session.close()
        outcome = await done
        assert outcome.bytes_in == len(payload) == outcome.bytes_out
    finally:
        await session.close()
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_resize_reaches_the_process(transport: str, version: str) -> None:
    options = ExecOptions(("size",), "main", stdin=True, stdout=True, tty=True)
    pair, session, _, _ = await session_pair(transport, version, options)
    try:
        assert "resize" in session.streams and "stderr" not in session.streams
        async with asyncio.timeout(10 * SCALE):
            await session.resize(100, 30)
            await session.resize(120, 40)
            await asyncio.sleep(0.2)
            await session.close_stdin()
            out = await session.stdout.read_all()
            assert out == b"(120, 40)\n"
            assert await session.wait() == 0
    finally:
        await session.close()
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_client_disconnect_kills_the_process(transport: str, version: str) -> None:
    options = ExecOptions(("sleep",), "main", stdout=True)
    pair, session, runner, done = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            while not runner.processes:
                await asyncio.sleep(0.01)
            session.conn.abort()
            outcome = await done
        assert runner.processes[0].killed
        assert outcome.client_gone
    finally:
        await pair.aclose()


@pytest.mark.parametrize(("transport", "version"), [CASES[0], CASES[4]])
async def test_start_failure_is_reported(transport: str, version: str) -> None:
    options = ExecOptions(("missing",), "main", stdout=True)
    pair, session, _, _ = await session_pair(transport, version, options)
    try:
        async with asyncio.timeout(10 * SCALE):
            with pytest.raises(RemoteCommandError, match="executable file not found"):
                await session.wait()
    finally:
        await session.close()
        await pair.aclose()
