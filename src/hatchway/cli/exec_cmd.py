"""``hatchway exec``: kubectl's semantics, the remote command's exit status.

Two paths, one behaviour. The blocking client (cli/exec_blocking.py, client/blocking.py)
runs every exec it can: it imports no asyncio, h11 or websockets, makes one TLS
connection for the pod GET and the WebSocket upgrade, and moves the streams with a
thread per direction (bench/README.md "The blocking exec client": start-up and CPU per
GiB). A server that refuses the WebSocket upgrade (a SPDY-only peer) is handed to the
asyncio client (cli/exec_async.py: WebSocket, then SPDY/3.1), before any stdin was read;
so is every exec with ``HATCHWAY_EXEC_ASYNCIO=1``. ``--reuse`` (cli/reuse.py) is
decided before either. Failures read the same on both: cli/errors.py words them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from hatchway.cli import exec_args
from hatchway.cli.errors import report
from hatchway.cli.timing import Phases

#: Set (not "0") to run every exec on the asyncio client.
ASYNCIO_ENV = "HATCHWAY_EXEC_ASYNCIO"


def main(argv: Sequence[str]) -> int:
    try:
        args = exec_args.parse_exec_args(argv)
    except exec_args.ExecUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return 1
    if args.help:
        print(exec_args.EXEC_HELP, end="")
        return 0
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


def _run(args: exec_args.ExecArgs) -> int:
    phases = Phases.from_environment()
    try:
        if os.environ.get(ASYNCIO_ENV, "") in ("", "0"):
            from hatchway.cli import exec_blocking

            try:
                return exec_blocking.run(args, phases)
            except exec_blocking._Handover as handover:
                args = handover.exec_args
        return _run_asyncio(args, phases)
    except Exception as exc:  # every failure is reported, none is a traceback
        return report(exc)
    finally:
        phases.mark("teardown")
        phases.report()


def _run_asyncio(args: exec_args.ExecArgs, phases: Phases) -> int:
    from hatchway.cli import exec_async, startup

    startup.import_websockets_without_metadata()
    return exec_async.run(args, phases)
