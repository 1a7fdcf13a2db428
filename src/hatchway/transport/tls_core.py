"""The C layer under the standard library's ``ssl`` and ``socket`` modules (``_ssl``,
``_socket``) for the blocking exec client, and the settings every client context gets,
of either kind.

Importing ``ssl`` and ``socket`` costs a ``hatchway exec`` ~6 ms of its ~45 ms of CPU
(bench/README.md "Where an exec's time goes"): ``ssl.py`` and ``socket.py`` build a
dozen enum classes from their constants and import ``base64``, ``selectors`` and more,
none of which a client on memory BIOs uses. What is here is what those modules call
themselves: the exception classes are the same objects (``ssl.SSLError is
_ssl.SSLError``); every ``ssl.SSLContext`` is an ``_ssl._SSLContext`` (a subclass that
adds enum-typed properties), and its ``wrap_bio`` calls ``_wrap_bio`` as
:func:`wrap_bio` does. Verification is OpenSSL's either way: a PROTOCOL_TLS_CLIENT
context requires a verified chain and checks the host name from its creation (set in
C), ``_wrap_bio`` gives OpenSSL the name (a DNS name or an IP address) to check.
:func:`configure_client` is the one place a client context of either kind gets its CA,
client certificate, minimum version and ``insecure``: ``transport/tls.client_context``
(``ssl.SSLContext``, everything else) and :func:`client_context` (``_SSLContext``, the
blocking exec client) both call it. tests/transport/test_tls_core.py compares the two
field by field and refuses the same servers with both.
"""

from __future__ import annotations

import _socket
import _ssl
import contextlib
import os
from collections.abc import Iterator

from hatchway.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The ssl module's exception classes, which are these (``ssl.py`` imports them from
#: ``_ssl``), and its memory BIO.
SSLError = _ssl.SSLError
SSLWantReadError = _ssl.SSLWantReadError
SSLZeroReturnError = _ssl.SSLZeroReturnError
SSLEOFError = _ssl.SSLEOFError
SSLCertVerificationError = _ssl.SSLCertVerificationError
MemoryBIO = _ssl.MemoryBIO
#: ``ssl.TLSVersion.TLSv1_2``, ``ssl.CERT_NONE``.
TLS_1_2 = _ssl.PROTO_TLSv1_2
CERT_NONE = _ssl.CERT_NONE


def client_context(
    *,
    ca_data: str | bytes | None = None,
    cert_data: str | bytes | None = None,
    key_data: str | bytes | None = None,
    insecure: bool = False,
) -> Any:
    """An ``_ssl._SSLContext`` set up as ``transport/tls.client_context`` sets up an
    ``ssl.SSLContext`` for the same arguments (no ALPN: the exec client offers none)."""
    ctx = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    configure_client(ctx, ca_data=ca_data, cert_data=cert_data, key_data=key_data,
                     insecure=insecure)  # fmt: skip
    return ctx


def configure_client(
    ctx: Any,
    *,
    ca_file: str | os.PathLike[str] | None = None,
    ca_data: str | bytes | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    cert_data: str | bytes | None = None,
    key_data: str | bytes | None = None,
    insecure: bool = False,
) -> None:
    """TLS >= 1.2; the CA (the system store without one: what ``load_default_certs``
    does on Linux); ``insecure`` (kubeconfig ``insecure-skip-tls-verify``) verifies
    nothing; the client certificate, if any. ``*_data`` are PEM text."""
    ctx.minimum_version = TLS_1_2
    try:
        if ca_file is None and ca_data is None:
            ctx.set_default_verify_paths()
        if ca_file is not None:
            ctx.load_verify_locations(cafile=os.fspath(ca_file))
        if ca_data is not None:
            ctx.load_verify_locations(cadata=_text(ca_data))
    except (OSError, SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load certificate authority: {exc}") from exc
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = CERT_NONE
    _load_client_cert(ctx, cert_file, key_file, cert_data, key_data)


def wrap_bio(ctx: Any, incoming: Any, outgoing: Any, server_hostname: str | bytes) -> Any:
    """A client TLS connection over the two BIOs (``_ssl._SSLSocket``: ``do_handshake``,
    ``read``, ``write``, ``pending``), as ``ctx.wrap_bio`` makes its ``SSLObject``'s.
    The name is ASCII (transport/httpurl.split_url lets in nothing else), so no idna."""
    name = server_hostname
    if isinstance(name, bytes):
        name = name.decode("ascii")
    return ctx._wrap_bio(incoming, outgoing, False, name, owner=None, session=None)


def connect(host: bytes, port: int, timeout: float | None) -> Any:
    """A connected TCP ``_socket.socket`` to ``host``, each address of it tried in turn
    (``socket.create_connection``); the first failure raised when none answers."""
    errors: list[OSError] = []
    addresses = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    for family, kind, proto, _, address in addresses:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return sock
    if errors:
        raise errors[0]
    raise OSError(f"no address for {host.decode('ascii', 'replace')}")


def _text(data: str | bytes) -> str:
    return data.decode("ascii") if isinstance(data, bytes) else data


def _load_client_cert(
    ctx: Any,
    cert_file: str | os.PathLike[str] | None,
    key_file: str | os.PathLike[str] | None,
    cert_data: str | bytes | None,
    key_data: str | bytes | None,
) -> None:
    if cert_file is None and cert_data is None:
        if key_file is not None or key_data is not None:
            raise ConfigError("a client key was given without a client certificate")
        return
    try:
        with contextlib.ExitStack() as stack:
            if cert_data is not None:
                cert_file = stack.enter_context(_private_file(cert_data))
            if key_data is not None:
                key_file = stack.enter_context(_private_file(key_data))
            assert cert_file is not None
            ctx.load_cert_chain(
                os.fspath(cert_file), os.fspath(key_file) if key_file is not None else None
            )
    except (OSError, SSLError) as exc:
        raise ConfigError(f"cannot load client certificate: {exc}") from exc


@contextlib.contextmanager
def _private_file(data: str | bytes) -> Iterator[str]:
    """A path holding ``data`` for as long as it is being loaded: ``ssl`` loads
    certificates and keys only from files. On Linux an anonymous memory file
    (``memfd_create``), named through ``/proc/self/fd``: never on a disk, readable by
    this process alone, gone when closed -- and no ``tempfile`` import (its imports are
    ~2 % of an exec's start-up). Elsewhere a 0600 temporary file, removed at once."""
    raw = data.encode("ascii") if isinstance(data, str) else data
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("hatchway-pem", os.MFD_CLOEXEC)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    fd, path = tempfile.mkstemp(prefix="hatchway-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
