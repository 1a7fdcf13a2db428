"""Heap snapshots of a running server, for the benchmarks (issue 13): where an idle
session's memory goes, by allocating traceback, inside the API server and node agent.

Off unless the environment asks for it: with ``HATCHWAY_TRACEMALLOC=DIR`` a daemon
starts :mod:`tracemalloc` (``HATCHWAY_TRACEMALLOC_FRAMES`` frames per allocation, 16 by
default) and on each SIGUSR2 writes a snapshot, after a full collection, to
``DIR/ROLE-PID-N.tmsnap`` (:meth:`tracemalloc.Snapshot.dump`; N counts from 1). Nothing
is listened on and nothing a peer sends reaches it: only whoever may signal the process
(root, or the user running it) and whoever set its environment. ``bench/idle_heap.py``
diffs two snapshots. Tracing makes every allocation slower and larger: never in
production, and RSS figures of a traced server are not the untraced ones.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import tracemalloc

__all__ = ["ENV_DIR", "ENV_FRAMES", "install"]

log = logging.getLogger(__name__)

ENV_DIR = "HATCHWAY_TRACEMALLOC"
ENV_FRAMES = "HATCHWAY_TRACEMALLOC_FRAMES"
DEFAULT_FRAMES = 16


def install(role: str) -> bool:
    """Start tracing and dump on SIGUSR2 if the environment asks for it; True if it did.
    Call before the server starts (what is allocated before is not traced)."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return False
    frames = int(os.environ.get(ENV_FRAMES) or DEFAULT_FRAMES)
    os.makedirs(directory, exist_ok=True)
    tracemalloc.start(max(1, frames))
    count = 0
    lock = threading.Lock()

    def dump() -> None:
        nonlocal count
        with lock:
            count += 1
            path = os.path.join(directory, f"{role}-{os.getpid()}-{count}.tmsnap")
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            snapshot.dump(path + ".part")
            os.replace(path + ".part", path)  # readers see only whole files
        log.info("heap snapshot written to %s", path)

    # A thread, not the handler itself: the dump walks the whole heap, and a handler
    # runs between two bytecodes of whatever the loop was doing.
    signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=dump).start())
    log.info("tracemalloc on (%d frames): SIGUSR2 dumps a snapshot into %s", frames, directory)
    return True
