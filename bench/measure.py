"""The measurements, each on one :class:`~bench.peers.Peer`. Every one has a deadline and
kills the process group it started when the deadline passes; a failure raises
:class:`MeasureError` with what went wrong, and the caller marks that cell n/a.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.memory import Sample, Sampler
from bench.peers import Peer

BLOCK = 64 * 1024
CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031
#: How long after the last session's processes are gone the "after" sample is read.
AFTER_SETTLE = 3.0
#: Sessions starting at once when many are opened (:func:`open_sessions`).
OPEN_WINDOW = 16
RECORDS = re.compile(rb"(\d+)\+(\d+) records (in|out)")


class MeasureError(Exception):
    pass


def _spawn(peer: Peer, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=peer.env, start_new_session=True, **kw)  # type: ignore[call-overload,no-any-return]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group this benchmark started for one session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _big_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)


def _records(stderr: bytes, kind: bytes) -> tuple[int, int]:
    for full, partial, k in RECORDS.findall(stderr):
        if k == kind:
            return int(full), int(partial)
    raise MeasureError(f"no dd record count in: {stderr[-300:]!r}")


def _dd_out(count: int) -> list[str]:
    return ["dd", "if=/dev/zero", f"bs={BLOCK // 1024}k", f"count={count}"]


def _rate(nbytes: int, seconds: float) -> dict[str, float]:
    return {"bytes": nbytes, "seconds": round(seconds, 4), "gib_s": nbytes / seconds / 2**30}


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (``/proc/stat``: every state but idle
    and iowait, all CPUs): read around a stream, the cost of a GiB on every process that
    carries it, whoever they are -- the only fair CPU figure across peers whose processes
    differ (ssh, sshd and runc's relay; the client, API server and node agent)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_per_gib(busy0: float, nbytes: int) -> dict[str, float]:
    return {"machine_cpu_s_per_gib": round((machine_busy() - busy0) / (nbytes / 2**30), 3)}


def stdout_throughput(peer: Peer, size: int, timeout: float) -> dict[str, float]:
    """``dd`` writes ``size`` bytes of zeros in the container; we read and count them.
    Rate from the first byte to EOF (start-up is the latency figure's)."""
    with tempfile.TemporaryFile() as err:
        t_start, busy0 = time.perf_counter(), machine_busy()
        proc = _spawn(
            peer, peer.argv(_dd_out(size // BLOCK)), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
        timer = threading.Timer(timeout, _kill, (proc,))
        timer.start()
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            _big_pipe(fd)
            buf = bytearray(CHUNK)
            total = os.readv(fd, [buf])
            t0 = time.perf_counter()
            while n := os.readv(fd, [buf]):
                total += n
            t1 = time.perf_counter()
            rc = proc.wait()
            cpu = _cpu_per_gib(busy0, total)
        finally:
            timer.cancel()
            _kill(proc)
        err.seek(0)
        if rc != 0 or total != size:
            raise MeasureError(f"rc={rc}, {total} of {size} bytes: {err.read()[-300:]!r}")
    return {**_rate(total, t1 - t0), "wall_seconds": round(t1 - t_start, 4), **cpu}


def stdin_throughput(peer: Peer, size: int, timeout: float) -> dict[str, float]:
    """We write ``size`` bytes of zeros to the client; ``dd`` counts them in the
    container. Rate from the moment the client is draining its stdin to the exit."""
    cmd = ["dd", "of=/dev/null", f"bs={BLOCK // 1024}k", "iflag=fullblock"]
    with tempfile.TemporaryFile() as err:
        t_start, busy0 = time.perf_counter(), machine_busy()
        proc = _spawn(
            peer, peer.argv(cmd, stdin=True), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        timer = threading.Timer(timeout, _kill, (proc,))
        timer.start()
        try:
            assert proc.stdin is not None
            t0 = _feed(proc.stdin.fileno(), size)
            proc.stdin.close()
            rc = proc.wait()
            t1 = time.perf_counter()
            cpu = _cpu_per_gib(busy0, size)
        except BrokenPipeError:
            rc = proc.wait()
            raise MeasureError(f"client closed its stdin early (rc={rc})") from None
        finally:
            timer.cancel()
            _kill(proc)
        err.seek(0)
        stderr = err.read()
    full, partial = _records(stderr, b"in")
    if rc != 0 or full * BLOCK != size or partial:
        raise MeasureError(f"rc={rc}, dd counted {full}+{partial} blocks: {stderr[-300:]!r}")
    return {**_rate(size, t1 - t0), "wall_seconds": round(t1 - t_start, 4), **cpu}


def _feed(fd: int, size: int) -> float:
    """Write ``size`` zero bytes; returns when the consumer began draining (the second
    chunk went in: the first only filled the pipe)."""
    _big_pipe(fd)
    view = memoryview(bytes(CHUNK))
    sent, t0 = 0, 0.0
    while sent < size:
        chunk = view[: min(CHUNK, size - sent)]
        while chunk:
            chunk = chunk[os.write(fd, chunk) :]
        sent += CHUNK
        if not t0 and sent >= 2 * CHUNK:
            t0 = time.perf_counter()
    return t0 or time.perf_counter()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency(
    peers: dict[str, Peer], runs: int, timeout: float, warmup: int = 2
) -> dict[str, dict[str, object]]:
    """``exec … true`` end to end, as a user runs it (a new client process each time).
    The peers take turns, run by run, so a noisy neighbour hits every column alike."""
    times: dict[str, list[float]] = {name: [] for name in peers}
    errors: dict[str, str] = {}
    for i in range(warmup + runs):
        for name, peer in peers.items():
            if name in errors:
                continue
            try:
                elapsed = _one_true(peer, timeout)
            except (MeasureError, OSError, subprocess.SubprocessError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            if i >= warmup:
                times[name].append(elapsed)
    return {n: {"error": errors[n]} if n in errors else _summary(times[n]) for n in peers}


def _one_true(peer: Peer, timeout: float) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(
        peer.argv(["true"]), env=peer.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise MeasureError(f"rc={result.returncode}: {result.stderr[-300:]!r}")
    return elapsed


def _summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "runs": len(times),
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "mean_ms": sum(times) / len(times) * 1000,
    }


def concurrent(peer: Peer, sessions: int, per_session: int, timeout: float) -> dict[str, object]:
    """``sessions`` sessions are opened and each waits (stdin open) until all are up.
    Then all stream ``per_session`` bytes of stdout at once: aggregate rate from the go
    signal to the last exit, and the peak server memory meanwhile."""
    run = _sessions(peer, sessions, per_session, timeout)
    return {
        "sessions": sessions,
        **_rate(run.done, run.seconds),
        "streaming_kib_per_session": run.sampler.per_session(run.peak, sessions),
        "after_kib": run.sampler.per_session(run.after, 1),
    }


def idle(peer: Peer, sessions: int, timeout: float) -> dict[str, object]:
    """Server memory with ``sessions`` idle sessions open (stdin open, nothing flowing),
    and what the servers still hold once every session has ended (``after_kib``: the
    sample minus the baseline, in KiB, not divided)."""
    run = _sessions(peer, sessions, 0, timeout)
    return {
        "sessions": sessions,
        "idle_kib_per_session": run.sampler.per_session(run.idle, sessions),
        "after_kib": run.sampler.per_session(run.after, 1),
    }


@dataclass
class _Run:
    sampler: Sampler
    idle: Sample
    peak: Sample
    after: Sample
    done: int
    seconds: float


def _sessions(peer: Peer, sessions: int, per_session: int, timeout: float) -> _Run:
    ready = b"bench-ready"
    script = f"echo {ready.decode()} >&2; read go; exec {' '.join(_dd_out(per_session // BLOCK))}"
    sampler = Sampler(peer.servers())
    sampler.baseline()
    procs: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        errs = open_sessions(peer, script, sessions, procs, ready, deadline)
        time.sleep(1.0)  # let the servers settle with every session idle and open
        idle_sample = sampler.sample()
        sampler.start()
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        _drain(procs, errs, deadline)
        t1 = time.perf_counter()
        peak = sampler.stop()
    finally:
        for proc in procs:
            _kill(proc)
    done = _check_sessions(procs, errs, per_session)
    after = _after(sampler, deadline)
    return _Run(sampler, idle_sample, peak, after, done, t1 - t0)


def _after(sampler: Sampler, deadline: float) -> Sample:
    """The servers' memory once the sessions are over: when each server is back to its
    baseline's process count (the node's ``runc exec`` children gone) and AFTER_SETTLE
    seconds more, so memory a server gives back after its sessions end (a trim after a
    short delay) is given back before the sample."""
    counts = {name: values["tree_procs"] for name, values in sampler.base.items()}
    while time.monotonic() < deadline:
        now = sampler.sample()
        if all(now[n]["tree_procs"] <= c for n, c in counts.items() if n in now):
            break
        time.sleep(0.25)
    time.sleep(AFTER_SETTLE)
    return sampler.sample()


def _check_sessions(procs: list[subprocess.Popen[bytes]], errs: list[bytes], size: int) -> int:
    """Bytes every session's ``dd`` wrote; raises if any failed or lost its report."""
    done, bad = 0, []
    for proc, err in zip(procs, errs, strict=True):
        try:
            full = _records(err, b"out")[0]
        except MeasureError:
            full = -1
        if proc.returncode != 0 or full * BLOCK != size:
            bad.append(f"rc={proc.returncode} stderr={err[-120:]!r}")
        done += max(full, 0) * BLOCK
    if bad:
        raise MeasureError(f"{len(bad)} of {len(procs)} sessions failed, e.g. {bad[0]}")
    return done


def open_sessions(
    peer: Peer,
    script: str,
    sessions: int,
    procs: list[subprocess.Popen[bytes]],
    marker: bytes,
    deadline: float,
    window: int = OPEN_WINDOW,
) -> list[bytes]:
    """Start ``sessions`` clients running ``sh -c script`` with stdin open (appended to
    ``procs``, so the caller kills them whatever happens), at most ``window`` of them
    still starting at a time, and read each one's stderr until it says ``marker``;
    returns what was read. All at once, 200 clients starting on a loaded 2-core machine
    made kubectl's 10 s TLS handshake timeout fire: the figure is what the servers hold
    for open sessions, not how many can start in the same second."""
    errs: list[bytes] = []
    with selectors.DefaultSelector() as sel:
        pending = 0
        while pending or len(procs) < sessions:
            while pending < window and len(procs) < sessions:
                i = len(procs)
                argv = peer.argv(["sh", "-c", script], stdin=True, session=i)
                procs.append(
                    _spawn(peer, argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
                )  # fmt: skip
                errs.append(b"")
                stderr = procs[i].stderr
                assert stderr is not None
                sel.register(stderr.fileno(), selectors.EVENT_READ, i)
                pending += 1
            if time.monotonic() > deadline:
                raise MeasureError(f"{pending + sessions - len(procs)} of {sessions} "
                                   "sessions not up in time")  # fmt: skip
            for key, _ in sel.select(1.0):
                i = key.data
                data = os.read(key.fd, 65536)
                errs[i] += data
                if marker in errs[i] or not data:
                    sel.unregister(key.fd)
                    pending -= 1
                    if not data:
                        raise MeasureError(f"session {i} ended early: {errs[i][-300:]!r}")
    return errs


def _drain(procs: list[subprocess.Popen[bytes]], errs: list[bytes], deadline: float) -> None:
    """Collect the rest of every session's stderr and wait for it to exit."""
    with selectors.DefaultSelector() as sel:
        for i, proc in enumerate(procs):
            assert proc.stderr is not None
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ, i)
        while sel.get_map():
            if time.monotonic() > deadline:
                raise MeasureError("sessions did not finish in time")
            for key, _ in sel.select(1.0):
                data = os.read(key.fd, 65536)
                errs[key.data] += data
                if not data:
                    sel.unregister(key.fd)
    for proc in procs:
        proc.wait(max(1.0, deadline - time.monotonic()))
