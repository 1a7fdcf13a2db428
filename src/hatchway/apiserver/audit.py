"""The audit log: one JSON line per request, and per exec/attach session its start and end.

    audit = AuditLogger("/var/lib/hatchway/audit.log")     # or any text/binary stream
    audit.log_request(user=user, info=info, decision="deny", code=403,
                      reason=message, source="10.0.0.7:51234", user_agent=ua)
    audit.log_session_start(user=user, info=info, pod_uid=uid, container="main",
                            command=argv, tty=True, stdin=True, code=101)
    ...
    audit.log_session_end(user=user, info=info, pod_uid=uid, container="main",
                          command=argv, tty=True, stdin=True, duration=12.5,
                          bytes_in=310, bytes_out=20480, exit_code=0)
    audit.close()

Every line carries ``type``, ``timestamp`` (RFC 3339 UTC, microseconds), ``request_id``
(one per request: a session's start and end lines and its request line share it; the
node is given it as the ``Audit-ID`` header), ``user`` and ``groups`` (who
authenticated), ``impersonated_user`` when the request impersonated someone (as
Kubernetes' ``impersonatedUser``: ``username``, ``groups``, ``uid`` and ``extra`` when
set; the identity everything else about the request was decided for), ``verb``,
``resource`` (``pods/exec`` form), ``namespace``, ``name`` and ``path``. Then by type:

* ``request``: ``decision`` (allow; deny for a refusal by authentication,
  authorisation or admission; error), ``reason``, ``source``, ``code``, ``user_agent``, and
  ``annotations`` (admission's, e.g. ``pod-security.kubernetes.io/audit-violations``)
  when there are any.
* ``session_start``, written once the node answered the upgrade (or could not be
  reached): ``pod_uid``, ``container``, the command fields below, ``tty``, ``stdin``,
  ``source``, ``code`` (the node's answer: 101 when the session runs, else its refusal,
  500 when it could not be dialled) and ``error`` when it could not be dialled.
* ``session_end``: the same session fields, ``duration`` (seconds), ``bytes_in``
  (client to container), ``bytes_out`` (container to client), ``exit_code`` as the node
  reported it, or null with ``exit_code_error`` saying why it is not known, and
  ``error`` when the session failed (idle timeout; a side cut for reading nothing of
  what was still queued for it).

The command is never cut silently. ``command`` holds each argument redacted
(:mod:`.redaction`) and then cut to ``MAX_ARG_CHARS`` characters with a mark of what
was cut, ``"aaaa…[+99744 chars]"``, and at most ``MAX_ARGS`` arguments, the last entry
then ``"…[+N args]"``. ``command_args`` is the number of arguments and
``command_sha256`` the hex SHA-256 of the exact argv, unredacted and uncut: each
argument UTF-8 encoded and followed by one NUL byte, the layout of
``/proc/PID/cmdline``, so ``printf '%s\\0' "$@" | sha256sum`` reproduces it (attach: the
hash of nothing).

The logger is never given headers, so it cannot write an Authorization header; the
free-text fields (reason, user agent, error) pass through :func:`redact_text` anyway.

Writes are serialised by a lock (safe from threads and from the event loop; a write is
one small ``write`` call on a line-buffered file) and each line is at most
``max_line_bytes``: then long fields are cut with the same marks, the command to
shorter prefixes and fewer arguments (``command_args`` and ``command_sha256`` always
kept), and ``truncated: true`` is set. A file path is opened for append with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from hatchway.apiserver.authn import UserInfo
from hatchway.apiserver.redaction import REDACTED, redact_command, redact_text
from hatchway.apiserver.request_info import RequestInfo

__all__ = [
    "MAX_ARGS",
    "MAX_ARG_CHARS",
    "REDACTED",
    "AuditLogger",
    "bound_command",
    "command_sha256",
    "redact_command",
    "redact_text",
]

DEFAULT_MAX_LINE = 16 * 1024
MAX_ARG_CHARS = 256
MAX_ARGS = 64
#: What a session line's command shrinks to, step by step, when the line is too long:
#: (characters per argument, arguments).
_COMMAND_STEPS = ((MAX_ARG_CHARS, MAX_ARGS), (64, 32), (16, 16), (16, 4))
#: Fields that are never cut: identifiers and the command's integrity.
_EXACT = frozenset({"timestamp", "request_id", "command_sha256", "command_args"})


def command_sha256(argv: Sequence[str]) -> str:
    """SHA-256 of ``argv``, each argument UTF-8 and NUL-terminated (``/proc/PID/cmdline``)."""
    digest = hashlib.sha256()
    for arg in argv:
        digest.update(str(arg).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _mark(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\u2026[+{len(text) - limit} chars]"


def bound_command(
    redacted: Sequence[str], max_arg_chars: int = MAX_ARG_CHARS, max_args: int = MAX_ARGS
) -> list[str]:
    """``redacted`` with each argument cut and the list shortened, every cut marked."""
    out = [_mark(arg, max_arg_chars) for arg in redacted[:max_args]]
    if len(redacted) > max_args:
        out.append(f"\u2026[+{len(redacted) - max_args} args]")
    return out


def _timestamp(seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLogger:
    """Writes audit records as JSON lines to a path or a stream (see module docstring)."""

    def __init__(
        self,
        sink: str | os.PathLike[str] | IO[str] | IO[bytes],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_line_bytes < 512:
            raise ValueError("max_line_bytes must be at least 512")
        self._owned = isinstance(sink, str | os.PathLike)
        if isinstance(sink, str | os.PathLike):
            fd = os.open(sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            sink = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._stream: IO[Any] = sink
        self._binary = isinstance(sink, io.RawIOBase | io.BufferedIOBase) or (
            not isinstance(sink, io.TextIOBase) and "b" in str(getattr(sink, "mode", ""))
        )
        self._max = max_line_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False

    def log_request(
        self,
        *,
        user: UserInfo | None,
        impersonated_user: UserInfo | None = None,
        info: RequestInfo | None,
        decision: str,
        code: int,
        reason: str = "",
        source: str = "",
        user_agent: str = "",
        request_id: str = "",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """One request: ``decision`` is "allow", "deny" or "error"."""
        if decision not in {"allow", "deny", "error"}:
            raise ValueError(f"decision must be allow, deny or error, not {decision!r}")
        record = self._base("request", user, info, request_id, impersonated_user)
        record.update(
            decision=decision,
            reason=redact_text(reason),
            source=source,
            code=code,
            user_agent=redact_text(user_agent),
        )
        if annotations:
            record["annotations"] = {str(k): redact_text(str(v)) for k, v in annotations.items()}
        self._write(record)

    def log_session_start(
        self,
        *,
        user: UserInfo | None,
        impersonated_user: UserInfo | None = None,
        info: RequestInfo | None,
        container: str,
        command: Sequence[str],
        tty: bool,
        stdin: bool,
        code: int,
        pod_uid: str = "",
        error: str = "",
        source: str = "",
        request_id: str = "",
        ports: Sequence[int] | None = None,
    ) -> None:
        """The node's answer to one admitted exec/attach (attach: an empty ``command``;
        port-forward: ``ports``, those its request names)."""
        record = self._base("session_start", user, info, request_id, impersonated_user)
        redacted = self._session_fields(record, pod_uid, container, command, tty, stdin)
        if ports is not None:
            record["ports"] = [int(p) for p in ports]
        record.update(source=source, code=int(code))
        if error:
            record["error"] = redact_text(error)
        self._write(record, redacted)

    def log_session_end(
        self,
        *,
        user: UserInfo | None,
        impersonated_user: UserInfo | None = None,
        info: RequestInfo | None,
        container: str,
        command: Sequence[str],
        tty: bool,
        stdin: bool,
        duration: float,
        bytes_in: int,
        bytes_out: int,
        exit_code: int | None = None,
        exit_code_error: str = "",
        error: str = "",
        pod_uid: str = "",
        source: str = "",
        request_id: str = "",
        ports: Sequence[int] | None = None,
    ) -> None:
        """The end of one exec/attach session (attach has an empty ``command``); of a
        port-forward (``ports``), which has no exit code."""
        record = self._base("session_end", user, info, request_id, impersonated_user)
        redacted = self._session_fields(record, pod_uid, container, command, tty, stdin)
        if ports is not None:
            record["ports"] = [int(p) for p in ports]
        record.update(
            duration=round(float(duration), 6),
            bytes_in=int(bytes_in),
            bytes_out=int(bytes_out),
            exit_code=exit_code,
            source=source,
        )
        if exit_code is None and ports is None:
            why = exit_code_error or "the node did not report an exit code"
            record["exit_code_error"] = redact_text(why)
        if error:
            record["error"] = redact_text(error)
        self._write(record, redacted)

    @staticmethod
    def _session_fields(
        record: dict[str, Any],
        pod_uid: str,
        container: str,
        command: Sequence[str],
        tty: bool,
        stdin: bool,
    ) -> list[str]:
        """Adds the fields both session lines have; the whole redacted command."""
        argv = [str(arg) for arg in command]
        redacted = redact_command(argv)
        record.update(
            pod_uid=pod_uid,
            container=container,
            command=bound_command(redacted),
            command_args=len(argv),
            command_sha256=command_sha256(argv),
            tty=bool(tty),
            stdin=bool(stdin),
        )
        return redacted

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._stream.close()
            else:
                self._stream.flush()

    def _base(
        self,
        kind: str,
        user: UserInfo | None,
        info: RequestInfo | None,
        request_id: str,
        impersonated: UserInfo | None = None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": kind,
            "timestamp": _timestamp(self._clock()),
            "request_id": request_id,
            "user": user.name if user else "",
            "groups": list(user.groups) if user else [],
        }
        if impersonated is not None:
            record["impersonated_user"] = _user_record(impersonated)
        if info is None:
            record.update(verb="", resource="", namespace="", name="", path="")
        else:
            record.update(
                verb=info.verb,
                resource=info.resource_path,
                namespace=info.namespace,
                name=info.name,
                path=info.path,
            )
        return record

    def _write(self, record: dict[str, Any], command: Sequence[str] | None = None) -> None:
        line = _fit(record, self._max, command)
        with self._lock:
            if self._closed:
                raise ValueError("audit log is closed")
            if self._binary:
                self._stream.write(line.encode("ascii"))
            else:
                self._stream.write(line)
            self._stream.flush()


def _user_record(user: UserInfo) -> dict[str, Any]:
    """Kubernetes' audit ``impersonatedUser``: name and groups, uid and extra when set
    (extra values through :func:`redact_text`: a peer chose them)."""
    out: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        out["uid"] = user.uid
    if user.extra:
        out["extra"] = {k: [redact_text(v) for v in vs] for k, vs in user.extra.items()}
    return out


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"


def _cut(key: str, value: Any, limit: int) -> Any:
    if key in _EXACT:
        return value
    if isinstance(value, str):
        return _mark(value, limit)
    if isinstance(value, list) and len(value) > 32:
        return [_cut(key, v, limit) for v in value[:32]] + [f"\u2026[+{len(value) - 32} items]"]
    if isinstance(value, list):
        return [_cut(key, v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _cut(key, v, limit) for k, v in list(value.items())[:32]}
    return value


def _fit(record: dict[str, Any], max_bytes: int, command: Sequence[str] | None = None) -> str:
    """The record as one line of at most ``max_bytes`` bytes, cutting long fields (the
    command from its whole redacted form, so each mark counts from the original)."""
    line = _dump(record)
    if len(line) <= max_bytes:
        return line
    steps = zip((1024, 256, 64, 16), _COMMAND_STEPS, strict=True)
    for limit, (arg_chars, args) in steps:
        cut = {k: _cut(k, v, limit) for k, v in record.items() if k != "command"}
        if command is not None:
            cut["command"] = bound_command(command, arg_chars, args)
        cut["truncated"] = True
        line = _dump(cut)
        if len(line) <= max_bytes:
            return line
    keep = ("type", "timestamp", "request_id", "verb", "decision", "code", "exit_code")
    small = {k: _cut(k, record[k], 16) for k in (*keep, *_EXACT) if k in record}
    if command is not None:
        small["command"] = bound_command(command, 0, 0)
    small["truncated"] = True
    return _dump(small)
