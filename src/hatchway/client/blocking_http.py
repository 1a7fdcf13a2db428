"""The blocking exec client's HTTP/1.1 (client/blocking.py): requests on one kept-alive
socket, TLS when the server is ``https://``, responses read with the asyncio client's
bounds (transport/httpurl.py: a 64 KiB head, a 64 MiB body, a refusal cut at 64 KiB).
TLS is an ``SSLObject`` on memory BIOs from the handshake on (client/blocking_tls.py).
No h11: the answers it reads are an API server's (a JSON body, a refusal, a 101)."""

from __future__ import annotations

import _socket
import time
from collections.abc import Sequence

from hatchway.client.blocking_tls import TlsStream
from hatchway.errors import ConnectionClosedError, ProtocolError
from hatchway.transport.httpurl import (
    MAX_REFUSAL_BODY,
    MAX_RESPONSE_BODY,
    MAX_RESPONSE_HEAD,
    Origin,
    check_headers,
    parse_url,
)
from hatchway.transport.tls_core import connect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: What a request and an upgraded session run on: the plain socket, or TLS on it.
Stream = _socket.socket | TlsStream


class Response:
    """A response head and (except for a 101) its body."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


class HttpConnection:
    """One HTTP/1.1 connection to the API server, kept alive between requests."""

    def __init__(
        self,
        server: str,
        ssl_context: Any | None,
        timeout: float = 30.0,
        *,
        server_name: str | None = None,
    ) -> None:
        """``ssl_context``: an ``ssl.SSLContext`` or the ``_ssl._SSLContext`` under one
        (client/tls_config.core_context); None for ``http://``. ``server_name``: the name
        the server's certificate is checked against and sent as SNI, when not the URL's
        host (kubeconfig ``tls-server-name``; ASCII, as the kubeconfig reader checks)."""
        self.server = server.rstrip("/")
        self.server_name = server_name
        self.origin = parse_url(self.server)
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.sock: Stream | None = None
        self.connect_seconds = 0.0
        self.connections = 0
        self._buf = bytearray()  # received, not yet consumed (before an upgrade)

    def _connect(self) -> Stream:
        started = time.perf_counter()
        # The host as bytes: split_url let in ASCII only, and a str host would be encoded
        # by the idna codec, in getaddrinfo and in wrap_bio (~1 ms of imports each exec).
        host = self.origin.host.encode("ascii")
        sock = connect(host, self.origin.port, self.timeout)
        stream: Stream = sock
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                stream = TlsStream(sock, self.ssl_context, self.server_name or host)
                stream.handshake()
        except BaseException:
            sock.close()
            raise
        self.connect_seconds += time.perf_counter() - started
        self.connections += 1
        self._buf.clear()
        return stream

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def request(
        self,
        method: str,
        url_path: str,
        headers: Sequence[tuple[str, str]],
        *,
        upgrade: bool = False,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> Response:
        """Send one request (on the kept-alive connection when there is one: a server
        that closed it meanwhile gets the request again on a new one) and read the
        answer: a 101's head only, else the whole body (at most ``max_body``; an
        upgrade's refusal is cut at 64 KiB, as the asyncio client cuts it)."""
        origin = parse_url(self.server + url_path)
        data = _request_bytes(origin, method, headers)
        for attempt in (0, 1):
            fresh = self.sock is None
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(data)
                response = self._read_head()
            except (ConnectionClosedError, OSError):
                self.close()
                if fresh or attempt:
                    raise
                continue  # a kept-alive connection the server closed meanwhile
            break
        if response.status == 101:
            return response
        keep = (response.header("connection") or "").lower() != "close"
        try:
            response.body, complete = self._read_body(
                response, MAX_REFUSAL_BODY if upgrade else max_body, truncate=upgrade
            )
        except BaseException:
            self.close()
            raise
        if not (keep and complete) or upgrade:
            self.close()
        return response

    def _recv(self) -> bool:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _read_head(self) -> Response:
        while True:
            end = self._find(b"\r\n\r\n", "the response head is too long")
            if end > MAX_RESPONSE_HEAD:
                raise ProtocolError("bad HTTP response: the response head is too long")
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            response = _parse_head(head)
            if 100 <= response.status < 200 and response.status != 101:
                continue  # 100 Continue and the like: the answer follows
            return response

    def _read_body(self, response: Response, limit: int, *, truncate: bool) -> tuple[bytes, bool]:
        """The body and whether the connection can be used again."""
        if response.status in (204, 304):
            return b"", True
        encoding = (response.header("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            return self._read_chunked(limit, truncate=truncate)
        length_text = response.header("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise ProtocolError("bad HTTP response: bad Content-Length") from None
            if length < 0:
                raise ProtocolError("bad HTTP response: bad Content-Length")
            if length > limit and not truncate:
                raise ProtocolError(f"response body larger than {limit} bytes")
            want = min(length, limit)
            while len(self._buf) < want:
                if not self._recv():
                    if truncate:
                        break
                    raise ConnectionClosedError("server closed the connection")
            body = bytes(self._buf[:want])
            del self._buf[:want]
            return body, want == length
        while self._recv():  # the body ends with the connection
            if len(self._buf) > limit:
                if truncate:
                    break
                raise ProtocolError(f"response body larger than {limit} bytes")
        body = bytes(self._buf[:limit])
        self._buf.clear()
        return body, False

    def _read_chunked(self, limit: int, *, truncate: bool) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError("bad HTTP response: bad chunk size") from None
            if size == 0:
                while self._line():  # trailers
                    pass
                return bytes(body), True
            if len(body) + size > limit:
                if truncate:
                    return bytes(body), False
                raise ProtocolError(f"response body larger than {limit} bytes")
            while len(self._buf) < size + 2:
                if not self._recv():
                    raise ConnectionClosedError("server closed the connection")
            body += self._buf[:size]
            del self._buf[: size + 2]

    def _find(self, delimiter: bytes, too_long: str) -> int:
        """Where ``delimiter`` starts in the buffer, receiving until it is there; no more
        than MAX_RESPONSE_HEAD bytes are buffered looking for it."""
        end = self._buf.find(delimiter)
        while end < 0:
            if len(self._buf) > MAX_RESPONSE_HEAD:
                raise ProtocolError(f"bad HTTP response: {too_long}")
            if not self._recv():
                raise ConnectionClosedError("server closed the connection")
            end = self._buf.find(delimiter)
        return end

    def _line(self) -> bytes:
        end = self._find(b"\r\n", "a chunk line is too long")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def take_socket(self) -> tuple[Stream, bytes]:
        """After a 101: the socket, blocking from now on, and what was read past the head."""
        sock, self.sock = self.sock, None
        assert sock is not None
        sock.settimeout(None)
        leftover = bytes(self._buf)
        self._buf.clear()
        return sock, leftover


def _request_bytes(origin: Origin, method: str, headers: Sequence[tuple[str, str]]) -> bytes:
    checked = check_headers(headers)
    lines = [f"{method} {origin.target} HTTP/1.1".encode()]
    names = {n.lower() for n, _ in checked}
    if b"host" not in names:
        lines.append(b"Host: " + origin.host_header.encode("ascii"))
    lines.extend(n + b": " + v for n, v in checked)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _parse_head(head: bytes) -> Response:
    lines = head.split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad HTTP response: bad status line {status_line[:80]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip() or raw[:1] in (b" ", b"\t"):
            raise ProtocolError("bad HTTP response: bad header line")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    response = Response(status, reason, headers)
    if parts[0] == "HTTP/1.0" and (response.header("connection") or "").lower() != "keep-alive":
        headers.append(("connection", "close"))
    return response
