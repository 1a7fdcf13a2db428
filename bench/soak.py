"""Soak: thousands of exec sessions against a cluster of its own, with kills, restarts,
slow readers and idle sessions; every byte checked, every process and fd accounted for.

    .venv/bin/python bench/soak.py                       # 10,000 sessions, ~30 min
    .venv/bin/python bench/soak.py --sessions 200 --concurrency 50 --time-limit 300

Starts ``hatchway up`` in a temporary data directory (free ports) with busybox pods,
runs the sessions (Hatchway's library over WebSocket and SPDY, the ``hatchway exec``
CLI, ``kubectl exec`` over WebSocket and SPDY; some with a TTY, some killed), kills and
restarts the node agent and then the API server mid-run, then a slow-reader phase and
an idle phase; prints one table, writes bench/results/soak-latest.json, and removes the
cluster (also on failure or Ctrl-C). Exit status 1 when anything was corrupted,
truncated, ended with a wrong exit code, failed unreported-by-a-kill, hung, or leaked.
See the "Soak" section of bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import soak_check, soak_cluster, soak_plan, soak_report
from bench.soak_cluster import log
from bench.soak_session import (
    IDLE_GATES,
    Context,
    Outcome,
    Pattern,
    Spec,
    TtyCapture,
    classify,
    expected_output,
    run_lib,
    run_process,
)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
WARM_BURST = 16
#: The client that cannot tell a cut connection from the end of the session.
SILENT_CLIENT = "kubectl-spdy"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=10_000, help="sessions in all (10000)")
    p.add_argument("--concurrency", type=int, default=100, help="sessions at once (100)")
    p.add_argument("--seed", type=int, default=1, help="seed of the plan and the data (1)")
    p.add_argument("--max-size", type=int, default=32 * MIB, help="bytes, largest session")
    p.add_argument("--time-limit", type=float, default=3600, help="seconds; then no new session")
    p.add_argument("--pods", type=int, default=2, help="busybox pods (2)")
    p.add_argument("--idle-sessions", type=int, help="open at once in the idle phase")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="how long they idle (20)")
    p.add_argument("--slow-sessions", type=int, help="sessions in the slow-reader phase")
    p.add_argument("--no-restarts", action="store_true", help="no node/API server kill")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="every bound times this")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS / "soak-latest.json")
    args = p.parse_args(argv)
    if args.idle_sessions is None:
        args.idle_sessions = min(args.concurrency, max(10, args.sessions // 10))
    if args.slow_sessions is None:
        args.slow_sessions = max(8, args.sessions // 50)
    return args


class Soak:
    def __init__(self, args: argparse.Namespace, cluster: soak_cluster.SoakCluster) -> None:
        self.args = args
        self.cluster = cluster
        self.run = f"{random.Random(f'{args.seed}:{os.getpid()}').randrange(10**4):04d}"
        pods = [pod.name for pod in cluster.pods]
        self.plan = soak_plan.make_plan(
            args.seed, args.sessions, args.max_size, pods,
            idle=args.idle_sessions, slow=args.slow_sessions,
        )  # fmt: skip
        from hatchway.client.kubeconfig import load_kubeconfig

        self.ctx = Context(
            self.run, Pattern(args.seed), cluster.kubeconfig, cluster.env,
            soak_cluster.HATCHWAY, load_kubeconfig(cluster.kubeconfig),
        )  # fmt: skip
        self.outcomes: list[Outcome] = []
        self.windows: list[dict[str, Any]] = []  # node agent / API server kills
        self.gate = asyncio.Event()
        self.gate.set()
        self.sem = asyncio.Semaphore(args.concurrency)
        self.deadline = time.monotonic() + args.time_limit
        self.inflight: set[asyncio.Task[Outcome]] = set()
        self.interrupted = False
        self.checks = soak_check.Checks(cluster, self.run)
        self.verifiers: dict[int, Any] = {}  # by session, while it runs (idle: ready?)
        self.finished: set[int] = set()

    def interrupt(self, main_task: asyncio.Task[Any]) -> None:
        log("interrupted: stopping the sessions and the cluster")
        self.interrupted = True
        main_task.cancel()
        for task in list(self.inflight):
            task.cancel()

    # -- one session ------------------------------------------------------------------
    def bound(self, spec: Spec) -> float:
        """How long a session may take before it counts as hung."""
        seconds = 60 + spec.size / (256 * 1024)
        if spec.slow_rate:
            seconds += 2 * spec.size / spec.slow_rate
        if spec.mode == "idle":
            seconds += self.args.idle_seconds + 120
        return seconds * self.args.timeout_scale

    async def session(self, spec: Spec, *, record: bool = True) -> Outcome:
        out = Outcome(spec, start=time.monotonic())
        verifier = (
            TtyCapture()
            if spec.mode == "tty"
            else expected_output(spec, self.ctx.pattern, self.run)
        )
        self.verifiers[spec.index] = verifier
        runner = run_lib if spec.client.startswith("lib-") else run_process
        try:
            async with asyncio.timeout(self.bound(spec)):
                await runner(spec, self.ctx, out, verifier)
        except TimeoutError:
            out.status = "hung"
            out.error = f"no end within {self.bound(spec):.0f}s"
        except Exception as exc:  # a harness fault: shown, never hidden as a pass
            out.error = f"harness: {type(exc).__name__}: {exc}"
        out.end = time.monotonic()
        self.finished.add(spec.index)
        self.verifiers.pop(spec.index, None)
        classify(out, verifier, f"soak-ok-{spec.index}".encode())
        if out.status in {"killed", "hung"}:
            out.leaked = await asyncio.to_thread(
                self.checks.gone, [spec.tag(self.run), spec.sleep_tag(self.run)],
                15 * self.args.timeout_scale,
            )  # fmt: skip
            out.checked = time.monotonic()
        if record:
            self.outcomes.append(out)
            self._progress()
        return out

    def _progress(self) -> None:
        n = len(self.outcomes)
        if n % 100 == 0 or n == len(self.plan.all):
            bad = sum(o.status not in {"ok", "killed", "error"} for o in self.outcomes)
            log(f"{n}/{len(self.plan.all)} sessions, {bad} failed")

    async def start(self, spec: Spec) -> asyncio.Task[Outcome] | None:
        await self.gate.wait()
        await self.sem.acquire()
        if time.monotonic() > self.deadline or self.interrupted:
            self.sem.release()
            return None
        task = asyncio.ensure_future(self.session(spec))
        task.add_done_callback(lambda _: self.sem.release())
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return task

    # -- phases -----------------------------------------------------------------------
    async def warm_up(self, quiet: bool = False) -> None:
        """One session of each client, uncounted: what is created lazily (the node's
        exec helper, pools, imports) is there before the baseline is taken. After a
        restart, tried for up to 30 s (the node registers, the pod is re-adopted)."""
        deadline = time.monotonic() + 30 * self.args.timeout_scale
        # 16 at once first: the API server keeps up to 8 connections to the node alive
        # for its outcome queries (transport/httpclient.POOL_PER_KEY); with that pool full
        # at the baseline, the fds it holds are not counted as leaked at the end.
        pod = self.cluster.pods[0].name
        burst = [Spec(-1, "lib-ws", pod, "data", size=1000) for _ in range(WARM_BURST)]
        outs = await asyncio.gather(*(self.session(s, record=False) for s in burst))
        if not quiet and any(o.status != "ok" for o in outs):
            raise RuntimeError(f"warm-up failed: {[(o.status, o.error) for o in outs]}")
        for client in soak_plan.WEIGHTS:
            spec = Spec(-1, client, self.cluster.pods[0].name, "data", size=1000)
            while (out := await self.session(spec, record=False)).status != "ok":
                if self.interrupted:
                    raise asyncio.CancelledError
                if not quiet or time.monotonic() > deadline:
                    raise RuntimeError(f"warm-up {client} failed: {out.status} {out.error}")
                await asyncio.sleep(0.5)

    async def main_phase(self) -> None:
        specs = self.plan.main
        triggers = (
            {}
            if self.args.no_restarts
            else {len(specs) // 3: "node", 2 * len(specs) // 3: "apiserver"}
        )
        tasks = []
        for n, spec in enumerate(specs):
            if n in triggers and n > 0:
                await self.disrupt(triggers[n])
            task = await self.start(spec)
            if task is None:
                break
            tasks.append(task)
        await asyncio.gather(*tasks)

    async def disrupt(self, component: str) -> None:
        """SIGKILL one server mid-run and bring it back with ``hatchway up``. No session
        starts meanwhile, so the new process's fd baseline is idle."""
        self.gate.clear()
        try:
            start = time.monotonic()
            inflight = len(self.inflight)
            pid = await asyncio.to_thread(self.cluster.kill, component)
            log(f"killed the {component} (pid {pid}) with {inflight} sessions in flight")
            await asyncio.to_thread(self.cluster.restart)
            new = self.cluster.pids()[component]
            await self.warm_up(quiet=True)  # the fd baseline of the new one: warm, idle
            self.checks.baseline_fds(new)
            end = time.monotonic()
            log(f"{component} restarted as pid {new} in {end - start:.1f}s")
            self.windows.append({"component": component, "old_pid": pid, "new_pid": new,
                                 "start": start, "end": end, "in_flight": inflight})  # fmt: skip
        finally:
            self.gate.set()

    async def slow_phase(self) -> None:
        tasks = [t for spec in self.plan.slow if (t := await self.start(spec))]
        await asyncio.gather(*tasks)

    async def idle_phase(self) -> dict[str, dict[str, int]]:
        """Every idle session opens and says ``ready``; all sit idle for
        ``--idle-seconds``; the memory then is the idle figure; then each gets its line."""
        for spec in self.plan.idle:
            IDLE_GATES[spec.index] = asyncio.Event()
        tasks = [t for spec in self.plan.idle if (t := await self.start(spec))]
        deadline = time.monotonic() + 120 * self.args.timeout_scale
        while time.monotonic() < deadline and self._ready(tasks) < len(tasks):
            await asyncio.sleep(0.2)
        log(f"{self._ready(tasks)}/{len(tasks)} idle sessions open; idling")
        await asyncio.sleep(self.args.idle_seconds)
        idle_memory = self.checks.sampler.sample()
        for gate in IDLE_GATES.values():
            gate.set()
        await asyncio.gather(*tasks)
        return idle_memory

    def _ready(self, tasks: list[asyncio.Task[Outcome]]) -> int:
        # Ready: its command said "ready" (or the session already ended).
        return sum(
            1 for s in self.plan.idle
            if s.index in self.finished or getattr(self.verifiers.get(s.index), "received", 0)
        )  # fmt: skip

    def in_window(self, out: Outcome) -> bool:
        # Started before the restart was complete (no session starts during one) and
        # still running when the kill came.
        return any(out.start < w["end"] and out.end > w["start"] for w in self.windows)

    async def go(self) -> dict[str, Any]:
        t0 = time.monotonic()
        await self.warm_up()
        self.checks.baseline()
        log(f"run {self.run}: {len(self.plan.all)} sessions, concurrency {self.args.concurrency}")
        await self.main_phase()
        log("slow-reader phase")
        await self.slow_phase()
        log("idle phase")
        idle_memory = await self.idle_phase() if time.monotonic() < self.deadline else {}
        for out in self.outcomes:
            out.in_restart = self.in_window(out) or bool(
                # a restart while its processes were being waited for
                out.leaked and any(out.end <= w["start"] <= out.checked for w in self.windows)
            )
            out.cut = out.status == "error" and out.in_restart
            out.silent = (
                out.in_restart
                and out.spec.client == SILENT_CLIENT
                and out.status in {"truncated", "wrong_exit"}
            )
        log("checking for leaks")
        final = await asyncio.to_thread(self.checks.final, 20 * self.args.timeout_scale)
        return soak_report.summary(
            self, final, idle_memory, time.monotonic() - t0, _meta(self.args, self.run)
        )


def _meta(args: argparse.Namespace, run: str) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "run": run,
        "args": {k: str(v) for k, v in vars(args).items()},
        "size_distribution": "3% 0 B, else log-uniform 1 B..max-size",
    }


async def amain(args: argparse.Namespace, cluster: soak_cluster.SoakCluster) -> dict[str, Any]:
    soak = Soak(args, cluster)
    # Ctrl-C and SIGTERM end the run the same way, even where SIGINT was ignored (a
    # background job): the main task is cancelled, the sessions with it (their clients'
    # process groups are killed), and main() removes the cluster.
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, soak.interrupt, main_task)
    soak.checks.sampler.start()
    try:
        return await soak.go()
    finally:
        soak.checks.sampler.stop()


def _keep_logs(cluster: soak_cluster.SoakCluster, out: pathlib.Path) -> str:
    """The servers' logs and the audit log, kept beside the JSON (the data directory is
    removed): what the failed sessions' ends look like from the servers' side."""
    target = out.with_name(out.stem + "-logs")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in [
        *sorted((cluster.data_dir / "logs").glob("*.log")),
        cluster.data_dir / "audit.log",
    ]:
        with contextlib.suppress(OSError):
            shutil.copy(path, target / path.name)
    return str(target)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        log("needs root (runc containers)")
        return 2
    with contextlib.ExitStack() as stack:
        base = pathlib.Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="hatchway-soak-"))
        )
        log(f"starting a cluster in {base}")
        cluster = soak_cluster.start(stack, base, args.pods)
        try:
            result = asyncio.run(amain(args, cluster))
        except asyncio.CancelledError:
            log("interrupted; nothing reported")
            return 130
        result["logs"] = _keep_logs(cluster, args.out)
    print(soak_report.table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"results: {args.out}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
