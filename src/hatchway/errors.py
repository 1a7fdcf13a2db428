"""The one exception tree of Hatchway.

Every error Hatchway raises derives from :class:`HatchwayError`. Errors say whether the
fault was local or the peer's (``remote``), and carry the HTTP status or wire code that
goes with them, so a server can answer with it and a client can print it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HatchwayError(Exception):
    """Base of every Hatchway error."""

    remote: bool = False


class ProtocolError(HatchwayError):
    """The peer broke a wire protocol (SPDY, WebSocket, channel, HTTP).

    ``code`` is the wire code to answer with where the protocol has one: a SPDY
    RST_STREAM/GOAWAY status, or a WebSocket close code.
    """

    remote = True

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LimitExceededError(ProtocolError):
    """The peer sent more than a bound allows (frame, header block, stream count)."""


class ConnectionClosedError(HatchwayError):
    """The connection or stream is closed; nothing more can be read or written."""


class StreamResetError(ConnectionClosedError):
    """The peer reset the stream (SPDY RST_STREAM)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class HandshakeError(HatchwayError):
    """An HTTP upgrade was refused: the response is carried whole."""

    remote = True

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []
        self.body = body


class ApiError(HatchwayError):
    """A Kubernetes ``Status`` failure, from our server or a real one.

    ``status`` is the Status object as a dict; ``code`` its HTTP code.
    """

    remote = True

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.code = int(status.get("code") or 0)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(self.message or self.reason or f"HTTP {self.code}")


class ExecError(HatchwayError):
    """A command ran and exited non-zero; carries the whole outcome.

    Raised by ``run(..., check=True)``: ``command``, ``returncode``, and the output
    collected so far.
    """

    remote = True

    def __init__(
        self,
        command: list[str],
        returncode: int,
        stdout: bytes = b"",
        stderr: bytes = b"",
        message: str = "",
    ) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message or f"command {self.command!r} exited with code {returncode}")


class RemoteCommandError(HatchwayError):
    """The exec session failed on the server side without an exit code (v4 InternalError,
    a plain-text v2/v3 error, or a malformed status)."""

    remote = True


class ContainerRuntimeError(HatchwayError):
    """The container runtime (runc) failed; ``stderr`` holds what it said."""

    def __init__(self, message: str, *, stderr: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.exit_code = exit_code


class ConfigError(HatchwayError):
    """Bad local configuration: kubeconfig, flags, data directory, manifests."""
