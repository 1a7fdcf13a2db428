"""TLS for the blocking exec client (client/blocking_http.py, client/blocking.py): an
OpenSSL connection over two memory BIOs on the plain socket, so that one
``recv_into`` syscall brings in as much ciphertext as the kernel holds (up to
:data:`CIPHER_BUFFER`) and all the records in it are decrypted at once, and one
``sendall`` carries all the records of a write (an ``SSLSocket`` reads each record's
header and body with a syscall each, and writes each 16 KiB record with its own).

The handshake is the ``SSLSocket``'s: the same context settings (``ssl.SSLContext`` or
the C ``_SSLContext`` under it, transport/tls_core.py: ``_wrap_bio`` is what ``wrap_bio``
calls), the same ``server_hostname``, so certificate and hostname checks are exactly as
strict. The ``ssl`` module itself is not imported (~6 ms of an exec's start-up).

Threads: one reader (``recv_into``), any number of writers (``sendall``). Every use of
the ``SSLObject`` and its BIOs is under one lock, never held during a socket call; a
send lock is held across "encrypt, then ``sendall`` the ciphertext", so ciphertext goes
out in the order it was made. What a read makes for the peer (an alert, a KeyUpdate's
answer) is sent by the reader unless a writer holds the send lock: then that writer
sends it, looking again after it lets the lock go, so none is left behind.
"""

from __future__ import annotations

import contextlib
import threading

from hatchway.transport import tls_core
from hatchway.transport.tls_core import (
    SSLEOFError,
    SSLError,
    SSLWantReadError,
    SSLZeroReturnError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: One ``recv_into`` of ciphertext: about what the receive buffer of the blocking
#: client (client/blocking.py READ_BUFFER) takes decrypted.
CIPHER_BUFFER = 1024 * 1024


class TlsStream:
    """A TLS client connection on ``sock``: the calls of a socket the blocking client
    makes (``recv_into``, ``recv``, ``sendall``, ``settimeout``, ``shutdown``, ``close``,
    ``fileno``, ``pending``)."""

    def __init__(self, sock: Any, context: Any, server_hostname: str | bytes) -> None:
        self.sock = sock  # a connected (_)socket.socket
        self._incoming = tls_core.MemoryBIO()
        self._outgoing = tls_core.MemoryBIO()
        # context: an ssl.SSLContext or the _ssl._SSLContext under one (tls_core).
        self._tls = tls_core.wrap_bio(context, self._incoming, self._outgoing, server_hostname)
        self._tls_lock = threading.Lock()  # the SSLObject and its BIOs
        self._send_lock = threading.Lock()  # encrypt + sendall, in order
        self._cipher = memoryview(bytearray(CIPHER_BUFFER))  # the reader's
        self._ended = False  # close_notify or the end of the stream was read
        self._failed: SSLError | None = None  # a record that failed, raised once read up to

    # -- the handshake --------------------------------------------------------------------
    def handshake(self) -> None:
        """The client handshake (the socket's timeout bounds each read); a failed
        verification raises ``ssl.SSLCertVerificationError`` as ``wrap_socket`` does,
        after sending our alert."""
        while True:
            try:
                with self._tls_lock:
                    self._tls.do_handshake()
                break
            except SSLWantReadError:
                self._send_pending()
                self._fill()
            except SSLError:
                with contextlib.suppress(OSError):
                    self._send_pending()  # the alert, as an SSLSocket sends it
                raise
        self._send_pending()

    # -- reading (one thread) -------------------------------------------------------------
    def _fill(self) -> None:
        """One ``recv_into`` of ciphertext into the incoming BIO (its end, at EOF)."""
        n = self.sock.recv_into(self._cipher)
        with self._tls_lock:
            if n:
                self._incoming.write(self._cipher[:n])
            else:
                self._incoming.write_eof()

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0) -> int:
        """Decrypted bytes into ``buffer`` (at most ``nbytes`` when given): what is
        already decrypted or received first, else one ``recv_into`` of ciphertext and
        all of its records; 0 at the end (close_notify, or a stream cut: an SSLSocket's
        ``suppress_ragged_eofs``). A peer reset raises its OSError.

        ``SSLObject.read`` is called only when a byte is there to read (a decrypted one,
        ciphertext in the incoming BIO, or its end: ``MemoryBIO.eof``): an empty read
        costs an ``SSLWantReadError``, two per keystroke otherwise. OpenSSL's read-ahead
        is off (CPython never sets it), so nothing waits inside the SSLObject unseen."""
        want = nbytes or len(buffer)
        view = memoryview(buffer).cast("B")
        got = 0
        incoming = self._incoming
        tls = self._tls
        while True:
            if self._failed is not None:
                raise self._failed
            if self._ended or not want:
                return got
            with self._tls_lock:
                try:
                    while got < want and (incoming.pending or tls.pending() or incoming.eof):
                        n = tls.read(want - got, view[got:want])
                        if not n:
                            self._ended = True  # close_notify
                            break
                        got += n
                except SSLWantReadError:
                    pass
                except (SSLZeroReturnError, SSLEOFError):
                    self._ended = True
                except SSLError as exc:
                    # A record that fails its check, an alert from the peer: raised
                    # once the bytes decrypted before it are delivered, and after our
                    # alert (in the outgoing BIO) is sent, as an SSLSocket sends it.
                    self._failed = exc
                reply = self._outgoing.pending
            if reply:
                # An alert or a KeyUpdate's answer. A failure to send it shows on
                # the reads that follow; the bytes decrypted here are delivered.
                with contextlib.suppress(OSError):
                    self._flush()
            if got or self._ended:
                return got
            if self._failed is not None:
                raise self._failed
            self._fill()

    def recv(self, bufsize: int) -> bytes:
        buffer = bytearray(bufsize)
        n = self.recv_into(buffer)
        return bytes(buffer[:n])

    def pending(self) -> int:
        """The decrypted bytes of the current record not yet read (as
        ``SSLSocket.pending``): never more than a read returns without a syscall (whole
        records still in the incoming BIO are not counted, nor read-ahead)."""
        with self._tls_lock:
            return self._tls.pending()

    # -- writing (any thread) -------------------------------------------------------------
    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """``data`` encrypted (records of up to 16 KiB) and sent with one ``sendall``."""
        with self._send_lock:
            with self._tls_lock:
                view = memoryview(data).cast("B")
                while view:
                    view = view[self._tls.write(view) :]
                ciphertext = self._outgoing.read()
            self.sock.sendall(ciphertext)
            self._send_pending()
        self._flush()

    def _send_pending(self) -> None:
        """What the outgoing BIO holds, sent (under the send lock, or alone)."""
        while True:
            with self._tls_lock:
                ciphertext = self._outgoing.read()
            if not ciphertext:
                return
            self.sock.sendall(ciphertext)

    def _flush(self) -> None:
        """Send what the outgoing BIO holds unless a sender holds the send lock: it
        looks again once it lets the lock go (here), so nothing is left behind."""
        while True:
            with self._tls_lock:
                if not self._outgoing.pending:
                    return
            if not self._send_lock.acquire(blocking=False):
                return
            try:
                self._send_pending()
            finally:
                self._send_lock.release()

    # -- the socket -----------------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
