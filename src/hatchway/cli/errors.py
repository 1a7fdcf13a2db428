"""How the CLI reports a failure: kubectl's wording, control characters escaped,
exit status 1."""

from __future__ import annotations

import sys

from hatchway.cli.escape import escape_control
from hatchway.errors import (
    ApiError,
    ConfigError,
    ConnectionClosedError,
    HandshakeError,
    HatchwayError,
    RemoteCommandError,
)
from hatchway.transport.httpurl import split_url
from hatchway.transport.tls_core import SSLCertVerificationError, SSLError

#: The API server the command talks to (``host:port``), for kubectl's wording.
_server = ""


def set_server(url: str) -> None:
    """Name the server of ``url`` in what :func:`report` says: its host and port, never
    a userinfo the URL carries (a password in a kubeconfig's server URL)."""
    global _server
    try:
        parts = split_url(url)
    except ValueError:
        _server = ""
        return
    host = f"[{parts.host}]" if ":" in parts.host else parts.host
    _server = host if parts.port is None else f"{host}:{parts.port}"


def _tls_text(exc: SSLError) -> str:
    if isinstance(exc, SSLCertVerificationError):
        if exc.verify_code in (2, 19, 20, 21):
            return (
                "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            )
        return f"tls: failed to verify certificate: x509: {exc.verify_message}"
    return f"tls: {exc.reason or exc}"


def describe(exc: BaseException) -> str:
    """The one line a user sees for ``exc`` (without the ``error: `` prefix where
    kubectl has none)."""
    if isinstance(exc, ApiError):
        if exc.code == 401:
            return (
                "error: You must be logged in to the server "
                "(the server has asked for the client to provide credentials)"
            )
        if exc.reason:
            return f"Error from server ({exc.reason}): {exc.message}"
        return f"Error from server: {exc.message}"
    if isinstance(exc, SSLError):
        return f"Unable to connect to the server: {_tls_text(exc)}"
    if isinstance(exc, ConnectionRefusedError):
        server = f"{_server} " if _server else ""
        return (
            f"The connection to the server {server}was refused - "
            "did you specify the right host or port?"
        )
    if isinstance(exc, TimeoutError):
        return "error: Unable to connect to the server: timed out"
    if isinstance(exc, OSError):
        return f"error: Unable to connect to the server: {exc.strerror or exc}"
    if isinstance(exc, (ConfigError, HandshakeError, RemoteCommandError)):
        return f"error: {exc}"
    if isinstance(exc, ConnectionClosedError):
        return f"error: connection lost: {exc}"
    if isinstance(exc, HatchwayError):
        return f"error: {exc}"
    return f"error: {type(exc).__name__}: {exc}"


def report(exc: BaseException) -> int:
    print(escape_control(describe(exc)), file=sys.stderr)
    return 1
