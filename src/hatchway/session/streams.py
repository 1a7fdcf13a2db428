"""Which streams a session has: the one rule both ends of a session follow.

The client opens them in this order (client-go's: error, stdin, stdout, stderr, resize),
the server expects exactly these; anything else a client opens is refused (SPDY).
"""

from __future__ import annotations

from hatchway.protocol import channel
from hatchway.types import ExecOptions

#: The stream types the serving side writes to, the lowest channel first.
OUTPUT_STREAMS = ("stdout", "stderr", "error")


def expected_streams(options: ExecOptions, version: str) -> list[str]:
    """The stream types a session needs, in the order clients create them."""
    names = ["error"]
    if options.stdin:
        names.append("stdin")
    if options.stdout:
        names.append("stdout")
    if options.stderr and not options.tty:
        names.append("stderr")
    if options.tty and channel.capabilities(version).resize:
        names.append("resize")
    return names


__all__ = ["OUTPUT_STREAMS", "expected_streams"]
