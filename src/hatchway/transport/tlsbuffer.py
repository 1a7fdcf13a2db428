"""One ciphertext receive buffer per thread for asyncio's TLS connections (issue 10, item 6).

CPython's asyncio ``SSLProtocol`` (3.11+) gives every TLS connection a 256 KiB
``bytearray`` for the ciphertext the socket delivers, and ``bytearray(n)`` zero-fills it:
256 KiB resident per connection for as long as it lives, idle or not. The node agent
holds one TLS connection per exec session, so that buffer was most of what an idle
session cost it (337 KiB of node RSS per idle session, 200 sessions).

The buffer is only ever used within one event-loop callback: the socket transport asks
``get_buffer()``, ``recv_into()`` fills it, and ``buffer_updated()`` copies the bytes into
the connection's ``MemoryBIO`` before it returns. So one buffer per thread, shared by
every connection of that thread's loop, does the same job -- as
:class:`~hatchway.transport.bytestream.ByteStream`'s own plaintext buffer already is.

:func:`share_receive_buffers` puts :class:`SharedBufferSSLProtocol` in place of asyncio's
class (``asyncio.sslproto.SSLProtocol``, which the event loops look up at each new
connection) for the connections made from then on, in this process. It sets two private
attributes of asyncio's class (``_ssl_buffer``, ``_ssl_buffer_view``) and nothing else;
on a Python whose class had other names the assignment is inert and each connection
gets its own buffer again, as before (``tests/transport/test_tlsbuffer.py`` notices).
uvloop has its own TLS protocol (a malloc'd buffer, only touched pages resident) and is
not affected.
"""

from __future__ import annotations

import asyncio.sslproto as sslproto
import threading
from typing import Any

_ORIGINAL = sslproto.SSLProtocol


class _CipherBuffer(threading.local):
    def __init__(self) -> None:
        self.buffer = bytearray(_ORIGINAL.max_size)
        self.view = memoryview(self.buffer)


_cipher = _CipherBuffer()


class SharedBufferSSLProtocol(_ORIGINAL):  # type: ignore[misc,valid-type]
    """asyncio's SSLProtocol reading ciphertext into its thread's shared buffer.

    Only the buffer changes: asyncio's own ``get_buffer`` hands it out (it is already
    ``max_size`` long, so never replaced) and ``buffer_updated`` copies out of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The base class allocates and zero-fills ``max_size`` bytes: make that one
        # byte for the duration, then take the thread's buffer of the full size.
        self.max_size = 1
        try:
            super().__init__(*args, **kwargs)
        finally:
            del self.max_size
        if hasattr(self, "_ssl_buffer_view"):
            self._ssl_buffer = _cipher.buffer
            self._ssl_buffer_view = _cipher.view


def share_receive_buffers() -> None:
    """From now on, this process's asyncio TLS connections share their thread's
    ciphertext receive buffer. Idempotent."""
    sslproto.SSLProtocol = SharedBufferSSLProtocol  # type: ignore[misc]


def shares_receive_buffer(protocol: object) -> bool:
    """Whether an SSLProtocol reads into its thread's shared buffer."""
    return getattr(protocol, "_ssl_buffer", None) is _cipher.buffer
