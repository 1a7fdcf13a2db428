"""A blocking exec client: one socket (TLS for ``https://``), the pod GET and the
WebSocket upgrade on it (kept alive between the two: one handshake; TLS on memory BIOs,
client/blocking_tls.py), then the channel
protocol framed here, one thread per direction (HTTP/1.1: client/blocking_http.py). No
asyncio, h11 or websockets: this is what ``hatchway exec`` runs (cli/exec_blocking.py),
for its start-up and its CPU per GiB.

What it does not do -- SPDY/3.1, a refused WebSocket upgrade -- raises :class:`UpgradeRefusedError`
before anything of the session happened, and the caller uses the asyncio client.

Frames (RFC 6455 5.2) are read into one preallocated buffer; the payload of a data
message is handed out as views of it while it arrives (a message is never held whole),
so memory stays at the buffer whatever the server sends. Bounds are the asyncio
client's: a message of at most :data:`MAX_MESSAGE` bytes in at most
:data:`MAX_FRAGMENTS` frames, a status of at most :data:`MAX_STATUS`, a response head
of 64 KiB and a pod of 64 MiB.
"""

from __future__ import annotations

import _socket
import os
import select
import struct
import threading
from collections.abc import Callable

from hatchway.client import paths
from hatchway.client.blocking_http import (  # noqa: F401  (its API)
    HttpConnection,
    Response,
    Stream,
)
from hatchway.errors import (
    ApiError,
    ConnectionClosedError,
    HatchwayError,
    LimitExceededError,
    ProtocolError,
    RemoteCommandError,
)
from hatchway.protocol import channel, exec_options, handshake, peer_json
from hatchway.protocol.rest_status import status_from_response
from hatchway.protocol.websocket_mask import apply_mask
from hatchway.transport.tls_core import SSLError
from hatchway.types import ExecOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: transport/websocket.py's DEFAULT_MAX_MESSAGE and DEFAULT_MAX_FRAGMENTS,
#: session/client.py's MAX_STATUS (tests/cli/test_exec_blocking.py checks they agree).
MAX_MESSAGE = 32 * 1024 * 1024
MAX_FRAGMENTS = 16384
MAX_STATUS = 64 * 1024
#: The receive buffer: what one ``writev`` of output may carry.
READ_BUFFER = 1024 * 1024
#: A read of fewer bytes is written out at once, not topped up with what else is here.
SHORT_READ = 4096
#: Random bytes drawn at a time for masking keys: 256 frames' worth.
KEY_MATERIAL = 1024
#: kubectl's WebSocket ping period (session/upgrade.py PING_INTERVAL).
PING_INTERVAL = 5.0
#: session/client.py's SESSION_CUT: the connection ended without a status.
SESSION_CUT = (
    "connection closed by the server before the output was delivered: "
    "the session ended before the server sent its status"
)

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_H16 = struct.Struct("!H")
_H64 = struct.Struct("!Q")


class UpgradeRefusedError(HatchwayError):
    """The WebSocket upgrade was refused (or its 101 is not one we accept): the asyncio
    client takes over, nothing of the session having happened. ``error`` is what the
    asyncio client would raise for it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# -- the API calls ------------------------------------------------------------------------


def api_headers(token: str | None, user_agent: str = "hatchway") -> list[tuple[str, str]]:
    """rest.RestClient's headers."""
    headers = [("user-agent", user_agent), ("accept", "application/json")]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    return headers


def get_pod(conn: HttpConnection, token: str | None, namespace: str, pod: str) -> Any:
    """The pod, as Client.get_pod reads it; a failure raises its Status (ApiError)."""
    path = paths.pod_path(namespace, pod)
    response = conn.request("GET", path, api_headers(token))
    if not 200 <= response.status < 300:
        raise ApiError(status_from_response(response.status, response.reason, response.body))
    return peer_json.loads(response.body) if response.body else None


def upgrade(
    conn: HttpConnection, token: str | None, namespace: str, pod: str, options: ExecOptions
) -> WebSocketSession:
    """The exec upgrade as session/upgrade.py's ``_dial_websocket`` makes it (the same
    offer, headers and checks); a refusal raises :class:`UpgradeRefusedError`."""
    options = options.normalised()
    query = exec_options.encode(options, exec_options.APISERVER)
    path = paths.pod_path(namespace, pod, options.action)
    if query:
        path += "?" + query
    offer = (
        channel.WEBSOCKET_CLIENT_PROTOCOLS_STDIN
        if options.stdin
        else channel.WEBSOCKET_CLIENT_PROTOCOLS
    )
    key = handshake.new_websocket_key()
    headers = [*api_headers(token), *handshake.websocket_request_headers(key, offer)]
    response = conn.request("GET", path, headers, upgrade=True)
    try:
        protocol = handshake.check_websocket_response(
            response.status, response.headers, key, offer, response.body, response.reason
        )
    except handshake.UpgradeFailedError as exc:
        conn.close()
        if exc.api_status is not None:
            raise UpgradeRefusedError(
                ApiError({**exc.api_status, "code": exc.api_status.get("code") or exc.status})
            ) from None
        raise UpgradeRefusedError(exc) from None
    sock, leftover = conn.take_socket()
    return WebSocketSession(sock, protocol, leftover)


# -- the WebSocket session ----------------------------------------------------------------


class WebSocketSession:
    """The channel protocol over an upgraded socket: :meth:`send` from any thread,
    :meth:`receive` in one."""

    def __init__(self, sock: Stream, protocol: str, leftover: bytes = b"") -> None:
        self.sock = sock
        self.protocol = protocol
        self.capabilities = channel.capabilities(protocol)
        self._lock = threading.Lock()
        self._close_sent = False
        self._pong: bytes | None = None
        self._leftover = leftover
        self._keys = b""  # masking keys (RFC 6455 5.3), from os.urandom
        self._key_pos = 0
        self.close_code: int | None = None
        #: Why the connection ended, when a read failed (a reset, a TLS error).
        self.read_error: BaseException | None = None
        self.done = threading.Event()

    # -- sending (any thread) -------------------------------------------------------------
    def _mask_key(self) -> bytes:
        """The next 4 bytes of the session's key material (under the lock): one
        ``getrandom`` per 256 frames rather than per frame (a keystroke's)."""
        pos = self._key_pos
        if pos >= len(self._keys):
            self._keys = os.urandom(KEY_MATERIAL)
            pos = 0
        self._key_pos = pos + 4
        return self._keys[pos : pos + 4]

    def _frame(self, opcode: int, first: int | None, data: bytes | memoryview) -> bytes:
        """A masked final frame of ``opcode`` whose payload is the byte ``first`` (when
        not None) and ``data`` (under the lock: the key)."""
        length = len(data) + (first is not None)
        if length < 126:
            header = bytes((0x80 | opcode, 0x80 | length))
        elif length < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + _H16.pack(length)
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + _H64.pack(length)
        key = self._mask_key()
        if first is None:
            return header + key + apply_mask(data, key)
        head = header + key + bytes((first ^ key[0],))
        if not data:
            return head
        return head + apply_mask(data, key[1:] + key[:1])

    def _send_frame(self, opcode: int, first: int | None, data: bytes | memoryview) -> None:
        with self._lock:
            if self._close_sent:
                raise ConnectionClosedError("the session is closed")
            self.sock.sendall(self._frame(opcode, first, data))
            self._send_pong()

    def _send_pong(self) -> None:
        """The pong the reader left, if any (under the lock)."""
        pong, self._pong = self._pong, None
        if pong is not None:
            self.sock.sendall(self._frame(_OP_PONG, None, pong))

    def pong(self, payload: bytes) -> None:
        """Answer a ping without ever waiting: the reader must not stop reading while a
        writer is blocked on a server that takes no input until its output is read. With
        the lock taken, the pong is left to the writer holding it (RFC 6455 5.5.3: only
        the latest ping needs an answer)."""
        self._pong = payload
        if self._lock.acquire(blocking=False):
            try:
                if not self._close_sent:
                    self._send_pong()
            finally:
                self._lock.release()

    def send(self, number: int, data: bytes | memoryview) -> None:
        """``data`` on channel ``number`` (one message)."""
        self._send_frame(_OP_BINARY, number, data)

    def close_stdin(self) -> None:
        """v5's close signal for stdin; before v5 nothing (v4 is offered only without
        stdin, session/upgrade.py)."""
        if self.capabilities.close_signal:
            self._send_frame(_OP_BINARY, None, channel.encode_close_signal(0))

    def resize(self, width: int, height: int) -> None:
        if self.capabilities.resize:
            self.send(channel.RESIZE, channel.encode_resize(width, height))

    def ping(self) -> None:
        self._send_frame(_OP_PING, None, b"")

    def close(self, code: int = 1000, reason: str = "", *, wait: float = 5.0) -> None:
        """Our close frame (once; a writer stuck on a server that reads nothing is given
        ``wait`` seconds), then the socket."""
        if self._lock.acquire(timeout=wait):
            try:
                if not self._close_sent:
                    self._close_sent = True
                    payload = _H16.pack(code) + reason.encode("utf-8")[:120]
                    self.sock.settimeout(wait)
                    self.sock.sendall(self._frame(_OP_CLOSE, None, payload))
            except OSError:
                pass
            finally:
                self._lock.release()
        self._close_sent = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- receiving (one thread) -----------------------------------------------------------
    def receive(
        self,
        write: Callable[[int, list[memoryview]], None],
    ) -> bytes:
        """Read the session to its end: each batch of output as views of the receive
        buffer, ``write(channel, views)`` (1 stdout, 2 stderr; the views are valid only
        during the call); returns the error channel's bytes. Protocol faults and limits
        close the connection with their code and raise."""
        reader = _FrameReader(self, write)
        try:
            reader.run(self._leftover)
        except ProtocolError as exc:
            self.close(exc.code or 1002, str(exc)[:120])
            raise
        finally:
            self.done.set()
        return bytes(reader.status)


class _FrameReader:
    """The receive loop's state: the frame being read and the message it belongs to."""

    def __init__(
        self, session: WebSocketSession, write: Callable[[int, list[memoryview]], None]
    ) -> None:
        self.session = session
        self.write = write
        self.status = bytearray()
        self.remaining = 0  # payload bytes of the current data frame still to come
        self.in_message = False  # a fragmented message is open
        self.message_size = 0
        self.fragments = 0
        self.fin = True
        self.channel: int | None = None  # the current message's channel, once read
        self.signal = bytearray()  # a v5 close signal's target byte

    def run(self, leftover: bytes) -> None:
        sock = self.session.sock
        buf = bytearray(READ_BUFFER)
        view = memoryview(buf)
        end = len(leftover)
        buf[:end] = leftover
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        pending: Callable[[], int] = getattr(sock, "pending", lambda: 0)
        first = True
        while True:
            if not first or not end:
                try:
                    n = sock.recv_into(view[end:])
                except (SSLError, OSError) as exc:
                    self.session.read_error = exc
                    n = 0
                if not n:
                    return  # the connection ended (without a close frame)
                end += n
                # What is already here, up to the buffer: fewer, larger writes. Not
                # after a short read (a keystroke's echo): it goes out without a poll.
                while (
                    n >= SHORT_READ and end < READ_BUFFER - 16384 and (pending() or poller.poll(0))
                ):
                    try:
                        n = sock.recv_into(view[end:])
                    except (SSLError, OSError) as exc:
                        self.session.read_error = exc
                        n = 0
                    if not n:
                        break
                    end += n
            first = False
            used = self._frames(view, end)
            if used is None:
                return  # a close frame
            if used < end:
                buf[: end - used] = view[used:end]
            end -= used

    def _frames(self, view: memoryview, end: int) -> int | None:
        """Consume what of ``view[:end]`` can be; the offset reached (None: closed)."""
        pos = 0
        out: dict[int, list[memoryview]] = {}
        try:
            while pos < end:
                if self.remaining:
                    take = min(self.remaining, end - pos)
                    self._payload(view[pos : pos + take], out)
                    pos += take
                    self.remaining -= take
                    if not self.remaining:
                        self._frame_done()
                    continue
                head = self._header(view, pos, end)
                if head is None:
                    break
                opcode, length, hlen = head
                if opcode >= 8:
                    if end - pos < hlen + length:
                        break
                    payload = bytes(view[pos + hlen : pos + hlen + length])
                    pos += hlen + length
                    if not self._control(opcode, payload):
                        return None
                    continue
                pos += hlen
                self._data_frame(opcode, length)
                if not length:
                    self._frame_done()
        finally:
            for number, views in out.items():
                self.write(number, views)
        return pos

    def _header(self, view: memoryview, pos: int, end: int) -> tuple[int, int, int] | None:
        if end - pos < 2:
            return None
        b1, b2 = view[pos], view[pos + 1]
        if b2 & 0x80:
            raise ProtocolError("incorrect masking: a server frame is masked", code=1002)
        if b1 & 0x70:
            raise ProtocolError("reserved bits must be 0", code=1002)
        opcode = b1 & 0x0F
        fin = bool(b1 & 0x80)
        length = b2 & 0x7F
        hlen = 2
        if length == 126:
            hlen = 4
            if end - pos < hlen:
                return None
            length = _H16.unpack_from(view, pos + 2)[0]
        elif length == 127:
            hlen = 10
            if end - pos < hlen:
                return None
            length = _H64.unpack_from(view, pos + 2)[0]
        if opcode >= 8:
            if opcode not in (_OP_CLOSE, _OP_PING, _OP_PONG):
                raise ProtocolError(f"invalid opcode: {opcode}", code=1002)
            if not fin or length > 125:
                raise ProtocolError("invalid control frame", code=1002)
        elif opcode not in (_OP_CONT, _OP_TEXT, _OP_BINARY):
            raise ProtocolError(f"invalid opcode: {opcode}", code=1002)
        self.fin = fin
        return opcode, length, hlen

    def _data_frame(self, opcode: int, length: int) -> None:
        if opcode == _OP_CONT:
            if not self.in_message:
                raise ProtocolError("unexpected continuation frame", code=1002)
            self.fragments += 1
            if self.fragments > MAX_FRAGMENTS:
                raise LimitExceededError(
                    f"message in more than {MAX_FRAGMENTS} fragments", code=1009
                )
        else:
            if self.in_message:
                raise ProtocolError("expected a continuation frame", code=1002)
            self.in_message = True
            self.message_size = 0
            self.fragments = 1
            self.channel = None
        self.message_size += length
        if self.message_size > MAX_MESSAGE:
            raise LimitExceededError(
                f"message of more than {MAX_MESSAGE} bytes (limit {MAX_MESSAGE})", code=1009
            )
        self.remaining = length

    def _payload(self, data: memoryview, out: dict[int, list[memoryview]]) -> None:
        if self.channel is None:
            self.channel = data[0]
            data = data[1:]
            if self.channel == channel.CLOSE_SIGNAL and not self.session.capabilities.close_signal:
                self.channel = -1  # a channel we discard
            if not data:
                return
        number = self.channel
        if number in (channel.STDOUT, channel.STDERR):
            out.setdefault(number, []).append(data)
        elif number == channel.ERROR:
            if len(self.status) + len(data) > MAX_STATUS:
                raise LimitExceededError(f"error stream larger than {MAX_STATUS} bytes", code=1009)
            self.status += data
        elif number == channel.CLOSE_SIGNAL:
            self.signal += data
            if len(self.signal) > 1:
                raise ProtocolError(
                    f"close signal of {len(self.signal) + 1} bytes, want 2", code=1002
                )

    def _frame_done(self) -> None:
        if not self.fin:
            return
        self.in_message = False
        if self.channel is None:
            raise ProtocolError("empty WebSocket message: no channel byte", code=1002)
        if self.channel == channel.CLOSE_SIGNAL:
            if len(self.signal) != 1:
                raise ProtocolError(
                    f"close signal of {len(self.signal) + 1} bytes, want 2", code=1002
                )
            if self.signal[0] >= channel.NUM_CHANNELS:
                raise ProtocolError(f"close signal for unknown channel {self.signal[0]}", code=1002)
            self.signal.clear()  # the server writes no more there: nothing to do
        self.channel = None

    def _control(self, opcode: int, payload: bytes) -> bool:
        """Handle a control frame; False once the session is closed."""
        session = self.session
        if opcode == _OP_PING:
            try:
                session.pong(payload)
            except OSError:
                pass  # the connection is gone: the read that follows ends the session
            return True
        if opcode == _OP_PONG:
            return True
        code = _H16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
        session.close_code = code
        return False


def outcome(session: WebSocketSession, raw: bytes) -> int:
    """The exit code from the error channel, as session/client.py reads it; a read that
    failed before the status came is reported as what it was (a reset, a TLS error)."""
    if not raw and session.read_error is not None:
        raise ConnectionClosedError(
            "connection to the server lost before the output was delivered: "
            f"{session.read_error} (the session ended before the server sent its status)"
        )
    if not raw and session.capabilities.status_json:
        raise ConnectionClosedError(SESSION_CUT)
    result = channel.parse_status(session.protocol, raw)
    if result.exit_code is None:
        raise RemoteCommandError(result.message or "unknown error")
    return result.exit_code
