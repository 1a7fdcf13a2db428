"""The user's terminal: raw mode that is always undone, sizes and their changes (the
escaping of text that comes from a server is cli/escape.py's).

Raw mode is what ``kubectl exec -it`` (moby/term ``MakeRaw``, i.e. ``cfmakeraw``) sets:
no echo, no line editing, no signal keys, no output post-processing, 8-bit bytes, one
byte at a time. The remote pty does all of that instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import termios
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType, TracebackType

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio  # watch_resizes imports it: the blocking exec path never does
    from typing import Any

    SignalHandler = Callable[[int, FrameType | None], Any] | int | None

Size = tuple[int, int]  # (columns, rows)

_IFLAG, _OFLAG, _CFLAG, _LFLAG, _ISPEED, _OSPEED, _CC = range(7)

# Signals whose default action ends the process: restore the terminal first.
RESTORE_ON = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except (OSError, ValueError):
        return False


def terminal_size(fd: int) -> Size | None:
    """``(columns, rows)`` of the terminal on ``fd``; None if it is not a terminal or
    has no size yet (a fresh pty reports 0x0, which is no use to a remote pty)."""
    try:
        size = os.get_terminal_size(fd)
    except (OSError, ValueError):
        return None
    if size.columns == 0 and size.lines == 0:
        return None
    return size.columns, size.lines


def raw_attributes(mode: list[Any]) -> list[Any]:
    """``cfmakeraw`` applied to a ``tcgetattr`` list (a new list; ``mode`` untouched)."""
    new = list(mode)
    new[_CC] = list(mode[_CC])
    new[_IFLAG] &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
    )
    new[_OFLAG] &= ~termios.OPOST
    new[_LFLAG] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    new[_CFLAG] &= ~(termios.CSIZE | termios.PARENB)
    new[_CFLAG] |= termios.CS8
    new[_CC][termios.VMIN] = 1
    new[_CC][termios.VTIME] = 0
    return new


class RawTerminal:
    """Puts the terminal on ``fd`` in raw mode for the ``with`` block and restores it on
    every way out: normal exit, exception, KeyboardInterrupt, the signals of
    ``RESTORE_ON`` (restore, then act as the previous handler would have, so SIGTERM
    still terminates) and interpreter exit (atexit). Only SIGKILL and ``os._exit`` escape.

    Not a terminal: nothing happens and ``active`` stays False. Signal handlers are
    installed only from the main thread.
    """

    def __init__(self, fd: int, *, signals: tuple[int, ...] = RESTORE_ON) -> None:
        self.fd = fd
        self._signals = signals
        self._saved: list[Any] | None = None
        self._previous: dict[int, SignalHandler] = {}

    @property
    def active(self) -> bool:
        return self._saved is not None

    def __enter__(self) -> RawTerminal:
        if self._saved is not None or not is_terminal(self.fd):
            return self
        saved = termios.tcgetattr(self.fd)
        # Every way back is in place before the terminal changes.
        self._saved = saved
        atexit.register(self.restore)
        self._install_handlers()
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, raw_attributes(saved))
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the saved attributes back (idempotent; errors on a gone tty ignored)."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, saved)
        self._remove_handlers()
        atexit.unregister(self.restore)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self._signals:
            previous = signal.getsignal(sig)
            self._previous[sig] = signal.SIG_DFL if previous is None else previous
            signal.signal(sig, self._on_signal)

    def _remove_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            # Someone installed a handler over ours meanwhile: theirs stays.
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.restore()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            # Die of the signal, as without us (the parent sees the signal, not a code).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


# ---------------------------------------------------------------------- resizes

_winch_listeners: dict[asyncio.AbstractEventLoop, set[Callable[[], None]]] = {}


def _add_winch_listener(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    listeners = _winch_listeners.get(loop)
    if listeners is None:
        listeners = _winch_listeners[loop] = set()
        loop.add_signal_handler(signal.SIGWINCH, _dispatch_winch, loop)
    listeners.add(callback)


def _remove_winch_listener(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    listeners = _winch_listeners.get(loop)
    if listeners is None:
        return
    listeners.discard(callback)
    if not listeners:
        del _winch_listeners[loop]
        if not loop.is_closed():
            loop.remove_signal_handler(signal.SIGWINCH)


def _dispatch_winch(loop: asyncio.AbstractEventLoop) -> None:
    for callback in list(_winch_listeners.get(loop, ())):
        callback()


async def watch_resizes(fd: int, *, initial: bool = True) -> AsyncIterator[Size]:
    """Terminal sizes of ``fd``: the current one first (unless ``initial`` is False),
    then each change signalled by SIGWINCH; repeats of the last size are dropped and a
    burst of signals collapses into one read. Several watchers may share a loop."""
    import asyncio

    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    _add_winch_listener(loop, changed.set)
    try:
        last = terminal_size(fd)
        if initial and last is not None:
            yield last
        while True:
            await changed.wait()
            changed.clear()
            size = terminal_size(fd)
            if size is not None and size != last:
                last = size
                yield size
    finally:
        _remove_winch_listener(loop, changed.set)
