"""``HATCHWAY_TIMING=1 hatchway exec …``: where the time of one exec goes.

On stderr at the end, one line of phases in milliseconds, each measured from the end of
the one before::

    timing (ms): start 31 | kubeconfig 2.1 | connect 6.3 | pod get 3.0 | upgrade 9.8 |
    first output 2.2 | exit status 0.9 | teardown 0.4 | total 56

``start`` is the process's age when the exec began (interpreter start and imports; from
``/proc/self/stat``, so to the kernel clock tick, 10 ms here); ``connect`` the TCP and
TLS handshakes of the API server connection, taken out of the first request that paid
them (the pod GET); ``upgrade`` the exec request until the 101 and the session's
driver; ``first output`` until the first byte of stdout or stderr (or the end, for a
command that writes nothing); ``exit status`` until the status arrived; ``teardown``
closing the connection. Off unless the variable is set: the marks then cost nothing.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

ENV = "HATCHWAY_TIMING"


def _process_age() -> float | None:
    """Seconds since this process started, to the clock tick (None off Linux)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(fields[19]) / ticks  # field 22 of stat(5): starttime, since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """Named marks on the monotonic clock; a no-op when not enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._start_age = _process_age() if enabled else None
        self._last = time.perf_counter()
        self._phases: list[tuple[str, float]] = []
        self._seen: set[str] = set()

    @classmethod
    def from_environment(cls) -> Phases:
        return cls(os.environ.get(ENV, "") not in ("", "0"))

    def mark(self, name: str) -> None:
        """End the phase ``name`` now (a name marked twice keeps its first mark)."""
        if not self.enabled or name in self._seen:
            return
        now = time.perf_counter()
        self._phases.append((name, now - self._last))
        self._seen.add(name)
        self._last = now

    def split(self, name: str, seconds: float, of: str) -> None:
        """Take ``seconds`` out of the phase ``of`` (already marked) as phase ``name``,
        placed before it: the handshakes that the first request paid."""
        if not self.enabled or seconds <= 0:
            return
        for i, (phase, took) in enumerate(self._phases):
            if phase == of:
                self._phases[i] = (phase, max(took - seconds, 0.0))
                self._phases.insert(i, (name, seconds))
                return

    def line(self) -> str:
        parts = []
        total = 0.0
        if self._start_age is not None:
            parts.append(f"start {self._start_age * 1000:.0f}")
            total += self._start_age
        for name, took in self._phases:
            parts.append(f"{name} {took * 1000:.1f}")
            total += took
        return "timing (ms): " + " | ".join(parts) + f" | total {total * 1000:.0f}"

    def report(self, file: TextIO | None = None) -> None:
        if self.enabled:
            print(self.line(), file=file or sys.stderr, flush=True)
