"""``hatchway exec`` on the blocking client (client/blocking.py): no asyncio, h11 or
websockets imported, one TLS connection for the pod GET and the upgrade, the socket read
by the main thread into one buffer and written out with ``writev``, stdin framed and
sent by a daemon thread, pings and resizes by another. Signals through ``_signal``, the
C module under ``signal`` (same functions, ints for its enums: ~0.5 ms of start-up).

:func:`run` raises :class:`~hatchway.client.blocking.UpgradeRefusedError` when the server refused
the WebSocket upgrade, before any stdin was read: cli/exec_cmd.py then runs the
asyncio path (cli/exec_async.py), which also speaks SPDY/3.1.
"""

from __future__ import annotations

import _signal
import contextlib
import os
import threading

from hatchway.cli import exec_args, startup
from hatchway.cli.errors import set_server
from hatchway.cli.fdio import write_all, write_views
from hatchway.cli.timing import Phases
from hatchway.client import blocking, pods
from hatchway.client.kubeconfig import load_kubeconfig
from hatchway.client.tls_config import core_context
from hatchway.errors import ConnectionClosedError, HatchwayError
from hatchway.protocol import channel
from hatchway.types import ExecOptions

#: cli/exec_async.py's STDIN_CHUNK: one read of stdin.
STDIN_CHUNK = 64 * 1024


class _Handover(HatchwayError):
    """The upgrade was refused: the asyncio path runs ``args`` (the container already
    chosen and announced, so nothing is printed twice)."""

    def __init__(self, args: exec_args.ExecArgs) -> None:
        super().__init__("handover")
        self.exec_args = args


def _say(text: str) -> None:
    write_all(2, (text + "\n").encode("utf-8", "replace"))


def run(args: exec_args.ExecArgs, phases: Phases) -> int:
    config = load_kubeconfig(args.kubeconfig or None, context=args.context or None)
    set_server(config.server)
    conn = blocking.HttpConnection(
        config.server, core_context(config), server_name=config.tls_server_name
    )
    phases.mark("kubeconfig")
    try:
        namespace = args.namespace or config.namespace or "default"
        pod = blocking.get_pod(conn, config.token, namespace, args.pod)
        phases.mark("pod get")
        phases.split("connect", conn.connect_seconds, of="pod get")
        pods.check_pod_active(pod)
        container, notice = pods.default_container(pod, args.container or None)
        if notice and not args.quiet:
            _say(notice)
        tty, warning = exec_args.resolve_tty(args, os.isatty(0))
        if warning and not args.quiet:
            _say(warning)
        options = ExecOptions(
            tuple(args.command), container, args.stdin, True, not tty, tty
        ).normalised()
        try:
            session = blocking.upgrade(conn, config.token, namespace, args.pod, options)
        except blocking.UpgradeRefusedError:
            # Said once: the asyncio path is told the container, and to be quiet.
            raise _Handover(args.replaced(container=container, quiet=True, tty=tty)) from None
    finally:
        conn.close()
    phases.mark("upgrade")
    startup.resume_collection()  # the imports are done (main paused it)
    return _session(session, args, tty, phases)


def _session(
    session: blocking.WebSocketSession, args: exec_args.ExecArgs, tty: bool, phases: Phases
) -> int:
    if tty:  # cli/terminal.py (termios, signals) only for a terminal
        from hatchway.cli.terminal import RawTerminal, terminal_size
    raw = RawTerminal(0) if tty else contextlib.nullcontext()
    previous_mask: set[int] | None = None
    try:
        with raw:
            size = None
            if tty:
                # SIGWINCH blocked before the size is read (a change after the read stays
                # pending, so the last size is sent), and in every thread started here:
                # only the keepalive thread takes it, with sigtimedwait. Never delivered,
                # it never interrupts the reader's receive, and no handler has to run in
                # the main thread (blocked in that receive) before the resize is sent.
                previous_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGWINCH})
                size = terminal_size(0)
                if size:
                    session.resize(*size)
            threading.Thread(target=_keepalive, args=(session, tty, size), daemon=True).start()
            if args.stdin:
                threading.Thread(target=_pump_stdin, args=(session,), daemon=True).start()
            first = [True]

            def write(number: int, views: list[memoryview]) -> None:
                if first[0]:
                    first[0] = False
                    phases.mark("first output")
                write_views(1 if number == channel.STDOUT else 2, list(views))

            raw_status = session.receive(write)
            phases.mark("first output")
            phases.mark("output")
            code = blocking.outcome(session, raw_status)
            phases.mark("exit status")
    finally:
        if previous_mask is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, previous_mask)
        session.close()
    if code != 0:
        _say(f"command terminated with exit code {code}")
    return code


def _keepalive(session: blocking.WebSocketSession, tty: bool, sent: tuple[int, int] | None) -> None:
    """Pings every few seconds (kubectl's), and the terminal's size each time it is not
    the one last sent (``sent``: the session's first), until the session ends. With a
    tty, SIGWINCH is blocked in this thread (the main thread blocked it before starting
    it) and taken here: signals sent together are one, and the size read after it is
    the latest."""
    last = sent
    while not session.done.is_set():
        if tty:
            changed = _signal.sigtimedwait({_signal.SIGWINCH}, blocking.PING_INTERVAL) is not None
        else:
            changed = session.done.wait(blocking.PING_INTERVAL)
        try:
            if changed and tty:
                from hatchway.cli.terminal import terminal_size  # imported by _session

                size = terminal_size(0)
                if size is not None and size != last:
                    session.resize(*size)
                    last = size
            elif not session.done.is_set():
                session.ping()
        except (OSError, ConnectionClosedError):
            return


def _pump_stdin(session: blocking.WebSocketSession) -> None:
    """stdin to the session, 64 KiB reads; at its end the close signal. A daemon thread:
    a session that ends first leaves it blocked in ``read`` and the process exits."""
    try:
        while True:
            try:
                chunk = os.read(0, STDIN_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                break
            session.send(0, chunk)
        session.close_stdin()
    except (OSError, ConnectionClosedError):
        return  # the session is over
