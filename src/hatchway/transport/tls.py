"""TLS contexts for the API server, the node agent and the clients, and the identity a
client certificate carries.

Servers offer only ``http/1.1`` by ALPN -- never ``h2``: an exec upgrade is an HTTP/1.1
mechanism -- and still speak HTTP/1.1 when the client offers no ALPN at all, which is
what kubectl's exec upgrade connections do (protocol.md 2.7).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence

from hatchway.errors import ConfigError
from hatchway.transport import tls_core

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ALPN_HTTP11 = "http/1.1"


class _RefusalLoggingSSLObject(ssl.SSLObject):
    """An SSLObject that logs each handshake it fails. asyncio keeps them quiet (an
    SSLError is an OSError, which its SSL protocol logs only in debug mode), yet a
    client certificate of a CA we do not trust is exactly what an operator wants to see.
    ``server`` names the server in the line; the peer address is not known here."""

    server = "server"

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            import logging  # servers only: a client's start-up does without it

            logging.getLogger(__name__).warning(
                "%s: refused a TLS client in the handshake: %s", self.server, reason
            )
            raise


def server_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str],
    *,
    client_ca: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
    log_refusals: str | None = None,
    session_tickets: int | None = None,
) -> ssl.SSLContext:
    """A server context: TLS >= 1.2, ALPN ``http/1.1`` only, client certificates
    verified against ``client_ca`` -- optional unless ``require_client_cert``. With
    ``log_refusals`` (the server's name) every failed handshake is logged as a warning
    (``SSLContext.sslobject_class``, which asyncio's SSL protocol and uvloop use).
    ``session_tickets``: TLS 1.3 tickets sent after each handshake (OpenSSL's default,
    2, when None). A client that never resumes a session only stores them: 0 for a
    server whose one client does not (the node agent's, issue 13)."""
    if require_client_cert and client_ca is None:
        raise ConfigError("require_client_cert needs a client_ca to verify against")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load server certificate {certfile}: {exc}") from exc
    ctx.set_alpn_protocols([ALPN_HTTP11])
    if session_tickets is not None:
        ctx.num_tickets = session_tickets
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=os.fspath(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client CA {client_ca}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if log_refusals is not None:
        ctx.sslobject_class = type(
            "RefusalLoggingSSLObject", (_RefusalLoggingSSLObject,), {"server": log_refusals}
        )
    return ctx


def client_context(
    *,
    ca_file: str | os.PathLike[str] | None = None,
    ca_data: str | bytes | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    cert_data: str | bytes | None = None,
    key_data: str | bytes | None = None,
    insecure: bool = False,
    alpn: Sequence[str] | None = None,
) -> ssl.SSLContext:
    """A client context. ``*_data`` are PEM text; without a CA the system store is used.

    ``insecure`` skips verification of the server (kubeconfig
    ``insecure-skip-tls-verify``). ``alpn`` is offered as given; ``None`` offers none.
    The settings are :func:`hatchway.transport.tls_core.configure_client`'s, which the
    blocking exec client's context gets too.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls_core.configure_client(
        ctx, ca_file=ca_file, ca_data=ca_data, cert_file=cert_file, key_file=key_file,
        cert_data=cert_data, key_data=key_data, insecure=insecure,
    )  # fmt: skip
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def name_attributes(rdns: Any) -> tuple[tuple[str, str], ...]:
    """A ``getpeercert()`` name (``subject`` or ``issuer``: RDNs of ``(key, value)``
    pairs) as flat pairs in order; ``()`` when it is not shaped like one."""
    try:
        return tuple((str(key), str(value)) for rdn in rdns for key, value in rdn)
    except (TypeError, ValueError):
        return ()


def peer_identity(peercert: Mapping[str, Any] | None) -> tuple[str, list[str]] | None:
    """``(user, groups)`` from a verified client certificate: CN is the user, every O a
    group (the Kubernetes convention). ``None`` without a certificate, or unless the
    subject has exactly one CN and it is not empty: with several, parsers disagree on
    which one is the user (Go's crypto/x509 takes the last, OpenSSL lists the first)."""
    if not peercert:
        return None
    subject = name_attributes(peercert.get("subject", ()))
    users = [value for key, value in subject if key == "commonName"]
    if len(users) != 1 or not users[0]:
        return None
    return users[0], [value for key, value in subject if key == "organizationName"]


def peer_issuer(peercert: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The issuer of a client certificate as flat ``(name, value)`` pairs."""
    return name_attributes(peercert.get("issuer", ())) if peercert else ()


def negotiated_alpn(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The protocol ALPN selected on a connection, or ``None``."""
    return ssl_object.selected_alpn_protocol() if ssl_object is not None else None
