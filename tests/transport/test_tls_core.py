"""transport/tls_core.py: the blocking exec client's TLS without the ``ssl`` module. Its
context must be the ``ssl.SSLContext`` the rest of Hatchway builds, setting for setting,
and refuse what that one refuses, over real handshakes."""

from __future__ import annotations

import _socket
import os
import pathlib
import socket
import ssl
import threading

import pytest

from hatchway import pki
from hatchway.errors import ConfigError
from hatchway.transport import tls, tls_core

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 30 * SCALE


class Certs:
    """A CA, a server certificate for 127.0.0.1, one for another name only, a client
    certificate, and a CA that signed none of them."""

    def __init__(self, base: pathlib.Path) -> None:
        self.ca = pki.create_ca(base / "ca")
        self.server = pki.issue_certificate(
            self.ca, base / "server", common_name="api", ip_addresses=["127.0.0.1"], server=True
        )
        self.elsewhere = pki.issue_certificate(
            self.ca, base / "elsewhere", common_name="api", dns_names=["elsewhere.test"],
            server=True,
        )  # fmt: skip
        self.user = pki.issue_certificate(
            self.ca, base / "user", common_name="jane", organizations=["dev"]
        )
        self.other_ca = pki.create_ca(base / "other", name="other-ca")

    def pem(self, paths: pki.CertPaths) -> tuple[str, str]:
        return paths.cert.read_text(), paths.key.read_text()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("pki"))


def _both(certs: Certs, ca: pki.CertPaths, *, user: bool = False, insecure: bool = False):
    cert_data = key_data = None
    if user:
        cert_data, key_data = certs.pem(certs.user)
    args = dict(ca_data=ca.cert.read_text(), cert_data=cert_data, key_data=key_data,
                insecure=insecure)  # fmt: skip
    return tls.client_context(**args), tls_core.client_context(**args)


SETTINGS = (
    "protocol", "options", "verify_mode", "verify_flags", "check_hostname", "minimum_version",
    "maximum_version", "security_level", "post_handshake_auth", "num_tickets",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["ca", "client-cert", "insecure"])
def test_the_core_context_is_the_ssl_one_setting_for_setting(certs: Certs, kind: str) -> None:
    public, core = _both(certs, certs.ca, user=kind == "client-cert", insecure=kind == "insecure")
    assert type(core) is ssl.SSLContext.__mro__[1]  # _ssl._SSLContext, not the subclass
    for name in SETTINGS:
        assert int(getattr(core, name)) == int(getattr(public, name)), name
    assert core.get_ca_certs() == public.get_ca_certs() != []
    assert core.cert_store_stats() == public.cert_store_stats()
    assert [c["name"] for c in core.get_ciphers()] == [c["name"] for c in public.get_ciphers()]
    if kind == "insecure":
        assert core.verify_mode == ssl.CERT_NONE and not core.check_hostname
    else:
        assert core.verify_mode == ssl.CERT_REQUIRED and core.check_hostname
    assert core.minimum_version == ssl.TLSVersion.TLSv1_2


def test_exceptions_are_the_ssl_modules() -> None:
    assert tls_core.SSLError is ssl.SSLError
    assert tls_core.SSLCertVerificationError is ssl.SSLCertVerificationError
    assert tls_core.SSLWantReadError is ssl.SSLWantReadError
    assert tls_core.SSLZeroReturnError is ssl.SSLZeroReturnError
    assert tls_core.SSLEOFError is ssl.SSLEOFError
    assert tls_core.MemoryBIO is ssl.MemoryBIO


def test_bad_material_is_a_config_error(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="certificate authority"):
        tls_core.client_context(ca_data="not a certificate")
    cert, _ = certs.pem(certs.user)
    _, wrong_key = certs.pem(certs.server)
    with pytest.raises(ConfigError, match="client certificate"):
        tls_core.client_context(ca_data=certs.ca.cert.read_text(), cert_data=cert,
                                key_data=wrong_key)  # fmt: skip
    with pytest.raises(ConfigError, match="without a client certificate"):
        tls_core.client_context(ca_data=certs.ca.cert.read_text(), key_data=wrong_key)


class Server:
    """One TLS server thread: a handshake per connection, the client certificate's
    subject (or what failed) recorded, then the connection closed."""

    def __init__(self, certs: Certs, cert: pki.CertPaths) -> None:
        self.ctx = tls.server_context(cert.cert, cert.key, client_ca=certs.ca.cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[object] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            raw.settimeout(T)
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
                self.seen.append(tls.peer_identity(conn.getpeercert()))
                conn.sendall(b"hello")
                conn.close()
            except (OSError, ssl.SSLError) as exc:
                self.seen.append(exc)
                raw.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close would not)
        self.listener.close()
        self.thread.join(T)
        assert not self.thread.is_alive()


def _feed(incoming: object, data: bytes) -> None:
    if data:
        incoming.write(data)  # type: ignore[attr-defined]
    else:
        incoming.write_eof()  # type: ignore[attr-defined]


def _handshake(ctx: object, port: int, name: str | bytes) -> bytes:
    """A TlsStream-like handshake by hand: ``tls_core.wrap_bio`` on a
    ``tls_core.connect`` socket, then the server's greeting."""
    sock = tls_core.connect(b"127.0.0.1", port, T)
    incoming, outgoing = tls_core.MemoryBIO(), tls_core.MemoryBIO()
    conn = tls_core.wrap_bio(ctx, incoming, outgoing, name)
    try:
        while True:
            try:
                conn.do_handshake()
                break
            except tls_core.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                _feed(incoming, data)
        sock.sendall(outgoing.read())
        got = b""
        while len(got) < 5:
            try:
                got += conn.read(5 - len(got))
            except tls_core.SSLWantReadError:
                data = sock.recv(65536)
                _feed(incoming, data)
        return got
    finally:
        sock.close()


@pytest.mark.parametrize("case", ["wrong-ca", "wrong-name", "no-name-match-by-ip"])
def test_the_core_context_refuses_what_the_ssl_one_refuses(certs: Certs, case: str) -> None:
    served = certs.elsewhere if case != "wrong-ca" else certs.server
    server = Server(certs, served)
    try:
        ca = certs.other_ca if case == "wrong-ca" else certs.ca
        public, core = _both(certs, ca)
        name = "127.0.0.1" if case != "wrong-name" else "api.test"
        errors = []
        for ctx in (public, core):
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                _handshake(ctx, server.port, name)
            errors.append((info.value.verify_code, info.value.verify_message))
        assert errors[0] == errors[1] and errors[0][0] != 0
        # insecure-skip-tls-verify reaches the same server; a matching name too.
        _, insecure = _both(certs, ca, insecure=True)
        assert _handshake(insecure, server.port, name) == b"hello"
        if case != "wrong-ca":
            assert _handshake(core, server.port, b"elsewhere.test") == b"hello"
    finally:
        server.close()


def test_the_client_certificate_is_presented(certs: Certs) -> None:
    server = Server(certs, certs.server)
    try:
        _, core = _both(certs, certs.ca, user=True)
        assert _handshake(core, server.port, "127.0.0.1") == b"hello"
        _, anonymous = _both(certs, certs.ca)
        assert _handshake(anonymous, server.port, "127.0.0.1") == b"hello"
        assert server.seen[0] == ("jane", ["dev"])
        assert server.seen[1] is None
    finally:
        server.close()


def test_connect_tries_each_address(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    refusing = socket.create_server(("127.0.0.1", 0))
    closed_port = refusing.getsockname()[1]
    refusing.close()
    port = listener.getsockname()[1]
    try:
        sock = tls_core.connect(b"127.0.0.1", port, T)
        assert sock.getpeername() == ("127.0.0.1", port) and sock.gettimeout() == T
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            tls_core.connect(b"127.0.0.1", closed_port, T)
        stream = (_socket.AF_INET, _socket.SOCK_STREAM, 6, "")
        answers = [(*stream, ("127.0.0.1", closed_port)), (*stream, ("127.0.0.1", port))]
        monkeypatch.setattr(_socket, "getaddrinfo", lambda *a: answers)
        sock = tls_core.connect(b"api.test", 1, T)  # the first refuses, the second answers
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()
        monkeypatch.setattr(_socket, "getaddrinfo", lambda *a: [])
        with pytest.raises(OSError, match=r"no address for api\.test"):
            tls_core.connect(b"api.test", 1, T)
    finally:
        listener.close()
