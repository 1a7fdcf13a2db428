"""The soak's plan, all drawn from the seed: which client, mode, size, exit code and kill
each session gets, in three phases (main, slow readers, idle).

Sizes: 3 % are 0 B, the rest log-uniform between 1 B and ``--max-size`` (32 MiB): every
order of magnitude is as likely as the next, so the small sizes that find framing bugs
and the big ones that find backpressure bugs are both well represented, and the mean
(~2 MB at 32 MiB) keeps a 10,000-session run near half an hour on 2 cores.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from bench.soak_session import CLIENTS, KILLS, Spec

MIB = 1024 * 1024
#: Share of the clients: the library is the cheapest (no process start), kubectl the
#: reference, the CLI a new Python process per session.
WEIGHTS = {"lib-ws": 0.25, "lib-spdy": 0.25, "cli-ws": 0.14, "kubectl-ws": 0.18,
           "kubectl-spdy": 0.18}  # fmt: skip
TTY_SHARE = 0.08
KILL_SHARE = 0.05
EXIT_SHARE = 0.20
ZERO_SHARE = 0.03


@dataclass
class Plan:
    main: list[Spec]
    slow: list[Spec]
    idle: list[Spec]

    @property
    def all(self) -> list[Spec]:
        return [*self.main, *self.slow, *self.idle]


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def make_plan(
    seed: int, sessions: int, max_size: int, pods: list[str], *, idle: int, slow: int
) -> Plan:
    rng = random.Random(seed)
    idle = min(idle, sessions)
    slow = min(slow, sessions - idle)
    n_main = sessions - idle - slow
    clients, weights = list(WEIGHTS), list(WEIGHTS.values())
    assert set(clients) == set(CLIENTS)
    index = iter(range(sessions))

    def base(phase: str) -> Spec:
        client = rng.choices(clients, weights)[0]
        code = rng.randint(2, 125) if rng.random() < EXIT_SHARE else 0
        return Spec(next(index), client, rng.choice(pods), "data", code=code, phase=phase)

    main = []
    for _ in range(n_main):
        spec = base("main")
        if rng.random() < TTY_SHARE:
            spec.mode = "tty"
        else:
            spec.size = 0 if rng.random() < ZERO_SHARE else log_uniform(rng, 1, max_size)
        if rng.random() < KILL_SHARE:
            spec.kill = KILLS.get(spec.client, "sigkill")
            spec.kill_after = int(spec.size * rng.random())
            spec.kill_delay = rng.uniform(0, 0.5)
        main.append(spec)
    slow_specs = []
    for _ in range(slow):
        spec = base("slow")
        spec.size = log_uniform(rng, 256 * 1024, min(8 * MIB, max_size))
        spec.slow_rate = rng.randint(128 * 1024, 2 * MIB)
        slow_specs.append(spec)
    idle_specs = []
    for _ in range(idle):
        spec = base("idle")
        spec.mode = "idle"
        idle_specs.append(spec)
    return Plan(main, slow_specs, idle_specs)
