"""The Runner protocol: what a node implements so the server side of a session can run a
command in a container. The session owns the streams; the runner owns the process."""

from __future__ import annotations

from typing import Protocol

from hatchway.types import ExecOptions


class Process(Protocol):
    """A running command (``runc exec``) as the session sees it."""

    #: The runtime's message when the command could not be started (127/126), else None.
    error_message: str | None

    async def write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin, waiting while its pipe is full."""

    async def close_stdin(self) -> None:
        """EOF on the process's stdin."""

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        """Output (the pty's with a TTY); ``b""`` once the process has exited and the
        output is drained, even if a background child still holds the pipe open."""

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        """As ``read_stdout``; ``b""`` at once with a TTY."""

    def resize(self, width: int, height: int) -> None:
        """Set the TTY's window size."""

    async def wait(self) -> int:
        """The exit code: 128+N for a process killed by signal N."""

    async def kill(self) -> None:
        """Kill the whole process tree of the command."""


class Runner(Protocol):
    """Starts processes for exec (and attach) sessions."""

    async def start(self, options: ExecOptions) -> Process:
        """Start ``options.command`` in ``options.container``; raise
        :class:`~hatchway.errors.HatchwayError` when it cannot start at all."""
