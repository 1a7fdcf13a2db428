"""One soak session: its plan (:class:`Spec`), the data it sends and expects back, and
how each client runs it — Hatchway's library in this process (WebSocket or SPDY), the
``hatchway exec`` CLI, or ``kubectl exec`` (WebSocket, or SPDY with
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``).

Data: busybox has no Python and ``/dev/urandom`` in the container is not reproducible,
so the data is made here and goes through the session twice: into ``cat``'s stdin and
back from its stdout. It is reproducible from the seed and cheap to make twice (once to
send, once to compare): a 4 MiB random pool from the seed, and each session's stream is
64 KiB blocks of that pool at offsets drawn from ``(seed, session)``. A lost, repeated or
reordered block cannot go unnoticed (each block starts at a different random offset).
What comes back is compared as it arrives (the first differing offset tells truncated
from corrupted) and its sha256 is checked against the sent stream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

BLOCK = 64 * 1024
POOL = 4 * 1024 * 1024
READ = 256 * 1024
KEEP_STDERR = 4096
CLIENTS = ("lib-ws", "lib-spdy", "cli-ws", "kubectl-ws", "kubectl-spdy")
KILLS = {"lib-ws": "cancel", "lib-spdy": "abort", "cli-ws": "sigkill"}  # kubectl: sigkill


@dataclass
class Spec:
    index: int
    client: str  # one of CLIENTS
    pod: str
    mode: str  # data | tty | idle
    size: int = 0
    code: int = 0  # the exit code the command ends with
    kill: str = ""  # "" | sigkill | cancel | abort
    kill_after: int = 0  # bytes back before the kill
    kill_delay: float = 0.0  # and then this long
    slow_rate: int = 0  # bytes/s the reader keeps to (0: as fast as it can)
    phase: str = "main"

    def tag(self, run: str) -> str:
        return f"soak-{run}-{self.index}"

    def sleep_tag(self, run: str) -> str:
        return f"3{run}{self.index:06d}"

    def command(self, run: str) -> list[str]:
        if self.kill:
            script = f"echo started; cat; exec sleep {self.sleep_tag(run)}"
        elif self.mode == "tty":
            script = f"echo soak-ok-{self.index}; exit {self.code}"
        elif self.mode == "idle":
            script = f'echo ready; read line; echo "$line"; exit {self.code}'
        elif self.slow_rate:
            # Store, then replay: the command writes its output (and exits) while the
            # reader lags, so the tail is still in the pipe and the node's buffers when
            # the process ends -- where a lost tail would be lost.
            path = f"/tmp/{self.tag(run)}"
            script = f"cat >{path}; cat {path}; rm -f {path}; exit {self.code}"
        else:
            script = f"cat; exit {self.code}"
        return ["sh", "-c", script, self.tag(run)]

    @property
    def stdin(self) -> bool:
        return self.mode != "tty"


@dataclass
class Outcome:
    spec: Spec
    start: float = 0.0
    end: float = 0.0
    status: str = ""  # ok killed corrupted truncated wrong_exit error hung
    exit_code: int | None = None
    error: str = ""  # what the client reported, if it failed loudly
    received: int = 0
    expected: int = 0
    first_diff: int | None = None
    verified: int = 0  # bytes that came back equal to what was sent
    leaked: list[str] = field(default_factory=list)  # processes left after a kill
    cut: bool = False  # failed loudly, in flight at a node agent / API server kill
    # kubectl over SPDY, in flight at such a kill, ended without an error: its protocol has
    # no end-of-session marker (an empty error stream reads as success), so no server
    # can make it report the cut; counted apart, never as a pass
    silent: bool = False
    in_restart: bool = False  # in flight at such a kill (or its leak check), whatever its outcome
    checked: float = 0.0  # when the check for its processes ended (killed, hung)


class Pattern:
    """The reproducible data: ``stream(i, n)`` yields the same blocks every time."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pool = memoryview(random.Random(seed).randbytes(POOL + BLOCK))

    def stream(self, index: int, size: int) -> Iterator[memoryview]:
        rng = random.Random(f"{self.seed}:{index}")
        left = size
        while left > 0:
            n = min(BLOCK, left)
            off = rng.randrange(POOL)
            yield self.pool[off : off + n]
            left -= n


class Verifier:
    """Compares output as it arrives with the expected stream; hashes both."""

    def __init__(self, expected: Iterator[memoryview] | bytes) -> None:
        if isinstance(expected, bytes):
            expected = iter([memoryview(expected)])
        self._expected = expected
        self._block = memoryview(b"")
        self.received = 0
        self.matched = 0
        self.first_diff: int | None = None
        self.got = hashlib.sha256()
        self.want = hashlib.sha256()
        self.want_len = 0

    def _next_block(self) -> bool:
        block = next(self._expected, None)
        if block is None:
            return False
        self.want.update(block)
        self.want_len += len(block)
        self._block = block
        return True

    def feed(self, data: bytes) -> None:
        self.got.update(data)
        view = memoryview(data)
        self.received += len(data)
        while view and self.first_diff is None:
            if not self._block and not self._next_block():
                self.first_diff = self.matched  # more than expected
                break
            n = min(len(view), len(self._block))
            if view[:n] != self._block[:n]:
                diff = next(k for k in range(n) if view[k] != self._block[k])
                self.first_diff = self.matched + diff
                break
            self.matched += n
            view, self._block = view[n:], self._block[n:]

    def finish(self) -> tuple[int, bool]:
        """(expected length, sha256 equal); the rest of the expected stream is hashed."""
        while self._next_block():
            pass
        return self.want_len, self.equal()

    def equal(self) -> bool:
        """After :meth:`finish`: same length and the same sha256."""
        return self.got.digest() == self.want.digest() and self.received == self.want_len


def expected_output(spec: Spec, pattern: Pattern, run: str) -> Verifier:
    if spec.mode == "idle":
        return Verifier(b"ready\n" + idle_line(spec, run) + b"\n")
    if spec.kill:
        return Verifier(b"started\n")  # then the data; only counted, never judged
    return Verifier(pattern.stream(spec.index, spec.size))


def idle_line(spec: Spec, run: str) -> bytes:
    return f"idle {spec.tag(run)} done".encode()


def classify(out: Outcome, verifier: Verifier, tty_marker: bytes = b"") -> None:
    """Set ``out.status`` from what came back; the first failure in this order wins:
    reported error, truncated/corrupted, wrong exit code."""
    out.received = verifier.received
    if out.spec.mode != "tty":
        out.expected, _ = verifier.finish()
        out.first_diff = verifier.first_diff
    if out.status in {"killed", "hung"}:
        return
    if out.error:
        out.status = "error"
        return
    if out.spec.kill:
        # Its command (``exec sleep``) never ends by itself: a session that ended before
        # the kill, without an error, reported an exit the command never had.
        out.status = "wrong_exit"
        return
    if out.spec.mode == "tty":
        out.expected = len(tty_marker)
        if tty_marker not in verifier_text(verifier):
            out.status = "truncated"
            return
        out.verified = out.expected
    else:
        equal = verifier.equal()
        if not equal:
            short = verifier.received < out.expected and verifier.first_diff is None
            out.status = "truncated" if short else "corrupted"
            return
        out.verified = out.expected
    out.status = "ok" if out.exit_code == out.spec.code else "wrong_exit"


def verifier_text(verifier: Verifier) -> bytes:
    return getattr(verifier, "raw", b"")


class TtyCapture(Verifier):
    """For a TTY session: keep the (small) output, judged by its marker only."""

    def __init__(self) -> None:
        super().__init__(b"")
        self.raw = b""

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if len(self.raw) < 65536:
            self.raw += data


# -- running one session ---------------------------------------------------------------


@dataclass
class Context:
    run: str
    pattern: Pattern
    kubeconfig: str
    env: dict[str, str]
    hatchway: str
    client_config: object  # hatchway.client.kubeconfig.ClientConfig


async def _feed_stream(write, spec: Spec, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    if spec.mode == "data":
        for block in ctx.pattern.stream(spec.index, spec.size):
            await write(bytes(block))


async def _read_into(read, verifier: Verifier, spec: Spec, kill: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    while data := await read(READ if not spec.slow_rate else BLOCK):
        verifier.feed(data)
        if spec.kill and verifier.received >= len(b"started\n") + spec.kill_after:
            loop.call_later(spec.kill_delay, kill.set)
        if spec.slow_rate:
            await asyncio.sleep(len(data) / spec.slow_rate)


async def run_lib(spec: Spec, ctx: Context, out: Outcome, verifier: Verifier) -> None:
    """Hatchway's asyncio client in this process; a kill is a task cancel or a transport
    abort (``RemoteProcess.terminate``)."""
    from hatchway.client.api import Client

    transport = "websocket" if spec.client == "lib-ws" else "spdy"
    kill = asyncio.Event()
    client = Client(ctx.client_config)  # type: ignore[arg-type]
    try:
        process = await client.create_process(
            spec.pod, spec.command(ctx.run), stdin=spec.stdin, tty=spec.mode == "tty",
            transport=transport,
        )  # fmt: skip
        async with process:
            work = asyncio.ensure_future(_lib_exchange(process, spec, ctx, verifier, kill))
            killer = asyncio.ensure_future(kill.wait())
            done, _ = await asyncio.wait({work, killer}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                killer.cancel()
                out.exit_code = work.result()
                return
            out.status = "killed"
            if spec.kill == "abort":
                process.terminate()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(work, 30)
            work.cancel()
            await settle(work)
            if spec.kill == "cancel":
                # What a caller's cancel does: the task dies with CancelledError, and
                # ``async with`` closes the session on the way out.
                raise asyncio.CancelledError
    except asyncio.CancelledError:
        if out.status != "killed":
            raise
    except Exception as exc:  # the client's failure is the finding
        if out.status != "killed":
            out.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _lib_exchange(process, spec: Spec, ctx: Context, verifier: Verifier, kill) -> int:  # type: ignore[no-untyped-def]
    async def feed() -> None:
        if not spec.stdin:
            return
        if spec.mode == "idle":
            await _wait_ready(verifier)
            await spec_idle_gate(spec)
            await process.stdin.write(idle_line(spec, ctx.run) + b"\n")
        else:
            await _feed_stream(process.stdin.write, spec, ctx)
        await process.stdin.write_eof()

    async def drain_stderr() -> None:
        await process.stderr.read_all(KEEP_STDERR)

    feeder = asyncio.ensure_future(feed())
    try:
        await asyncio.gather(_read_into(process.stdout.read, verifier, spec, kill), drain_stderr())
        code: int = await process.wait()
        await feeder
        return code
    finally:
        feeder.cancel()
        await settle(feeder)


#: Idle sessions wait on this (set by the idle phase) before they write their line.
IDLE_GATES: dict[int, asyncio.Event] = {}


async def spec_idle_gate(spec: Spec) -> None:
    gate = IDLE_GATES.get(spec.index)
    if gate is not None:
        await gate.wait()


async def _wait_ready(verifier: Verifier) -> None:
    while verifier.received < len(b"ready\n"):
        await asyncio.sleep(0.05)


def process_argv(spec: Spec, ctx: Context) -> tuple[list[str], dict[str, str]]:
    flags = (["-i"] if spec.stdin or spec.mode == "tty" else []) + (
        ["-t"] if spec.mode == "tty" else []
    )
    cmd = spec.command(ctx.run)
    kc = ["--kubeconfig", ctx.kubeconfig]
    if spec.client == "cli-ws":
        return [ctx.hatchway, "exec", *kc, spec.pod, *flags, "--", *cmd], ctx.env
    env = dict(ctx.env)
    if spec.client == "kubectl-spdy":
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
    else:
        env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
    return ["kubectl", *kc, "exec", spec.pod, *flags, "--", *cmd], env


async def run_process(spec: Spec, ctx: Context, out: Outcome, verifier: Verifier) -> None:
    """``hatchway exec`` or ``kubectl exec`` as a child process (its own process group);
    a kill is SIGKILL. A TTY session gets a pty as stdin (both refuse ``-t`` otherwise)."""
    argv, env = process_argv(spec, ctx)
    master = slave = -1
    stdin: int = asyncio.subprocess.PIPE
    if spec.mode == "tty":
        master, slave = os.openpty()
        stdin = slave
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, start_new_session=True,
    )  # fmt: skip
    if slave >= 0:
        os.close(slave)
    assert proc.stdout is not None and proc.stderr is not None
    kill = asyncio.Event()
    stderr = bytearray()
    work = asyncio.ensure_future(
        asyncio.gather(
            _feed_process(proc, spec, ctx, verifier),
            _read_into(proc.stdout.read, verifier, spec, kill),
            _keep(proc.stderr, stderr),
        )
    )
    killer = asyncio.ensure_future(kill.wait())
    try:
        done, _ = await asyncio.wait({work, killer}, return_when=asyncio.FIRST_COMPLETED)
        if killer in done:
            out.status = "killed"
            killpg(proc.pid)
        else:
            work.result()
        out.exit_code = await proc.wait()
    finally:
        killpg(proc.pid)  # hung (a cancel from the deadline), or any way out
        work.cancel()
        killer.cancel()
        await settle(work)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if master >= 0:
            os.close(master)
    if out.status != "killed":
        out.error = _client_error(out.exit_code, spec.code, stderr.decode(errors="replace"))


def _client_error(code: int | None, expected: int, stderr: str) -> str:
    """What the CLI or kubectl reported as its own failure ("" when it reported the
    command's exit code): both exit 1 with a message, and say "command terminated with
    exit code K" when the command exited K."""
    text = stderr.strip()
    if "command terminated with exit code" in text:
        return ""
    if code == 1:
        return f"exit 1: {text[-300:] or '(nothing on stderr)'}"
    if code not in (0, expected):
        return f"exit {code}: {text[-300:]}"
    return ""


async def _feed_process(proc, spec: Spec, ctx: Context, verifier: Verifier) -> None:  # type: ignore[no-untyped-def]
    stdin = proc.stdin
    if stdin is None:
        return

    async def write(data: bytes) -> None:
        stdin.write(data)
        await stdin.drain()

    try:
        if spec.mode == "idle":
            await _wait_ready(verifier)
            await spec_idle_gate(spec)
            await write(idle_line(spec, ctx.run) + b"\n")
        else:
            await _feed_stream(write, spec, ctx)
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client exited first; its exit status and output say why


async def _keep(reader: asyncio.StreamReader, into: bytearray) -> None:
    while data := await reader.read(65536):
        if len(into) < KEEP_STDERR:
            into.extend(data)


async def settle(task: asyncio.Future[object]) -> None:
    """Wait for a task we cancelled (or that failed) without raising its outcome, but
    still raising our own cancellation (Ctrl-C must get through)."""
    await asyncio.gather(task, return_exceptions=True)


def killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
