"""The audit log: one JSON line per request, and one per exec/attach session end.

    audit = AuditLogger("/var/lib/hatchway/audit.log")     # or any text/binary stream
    audit.log_request(user=user, info=info, decision="deny", code=403,
                      reason=message, source="10.0.0.7:51234", user_agent=ua)
    ...
    audit.log_session_end(user=user, info=info, container="main", command=argv,
                          tty=True, stdin=True, duration=12.5, bytes_in=310,
                          bytes_out=20480, exit_code=0)
    audit.close()

Request lines carry: ``type`` ("request"), ``timestamp`` (RFC 3339 UTC, microseconds),
``request_id``, ``user``, ``groups``, ``verb``, ``resource`` (``pods/exec`` form),
``namespace``, ``name``, ``path``, ``decision`` (allow, deny or error), ``reason``,
``source``, ``code`` and ``user_agent``, plus ``annotations`` (admission's, e.g.
``pod-security.kubernetes.io/audit-violations``) when there are any. Session-end
lines (``type`` "session_end") add
``container``, ``command`` (redacted), ``tty``, ``stdin``, ``duration`` (seconds),
``bytes_in`` (client to container), ``bytes_out`` (container to client) and
``exit_code`` (null when unknown), plus ``error`` when the session failed.

The logger is never given headers, so it cannot write an Authorization header; the
free-text fields (reason, user agent, error) pass through :func:`redact_text` anyway.
Command arguments pass through :func:`redact_command`: values after secret-looking flags
(``--password``, ``--token``, ``-p``, ``--client-secret`` ...) and in ``--flag=value``,
``KEY=VALUE`` or ``key: value`` where KEY matches password, passwd, secret, token,
api[-_]key, credential or auth; ``Bearer``/``Basic`` credentials; and the password of
``scheme://user:pass@host`` URLs are replaced by ``[REDACTED]``.

Writes are serialised by a lock (safe from threads and from the event loop; a write is
one small ``write`` call on a line-buffered file) and each line is at most
``max_line_bytes``: long fields are cut and ``truncated: true`` is set. A file path is
opened for append with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from hatchway.apiserver.authn import UserInfo
from hatchway.apiserver.request_info import RequestInfo

__all__ = ["REDACTED", "AuditLogger", "redact_command", "redact_text"]

REDACTED = "[REDACTED]"
DEFAULT_MAX_LINE = 16 * 1024

# Every pattern here runs on untrusted text, so each is linear: possessive quantifiers,
# lookbehinds that start a match only at the start of a run, and the "is it a secret
# name?" test done on the matched name rather than by backtracking through it.
_WORD = re.compile(r"passw(?:or)?d|pwd|secret|token|api[-_]?key|credential|auth", re.I)
_SHORT_SECRET_FLAGS = frozenset({"-p"})
_USER_FLAGS = frozenset({"-u", "--user", "--proxy-user"})
_FLAG_ARG = re.compile(r"-{1,2}[\w.-]++")
_ASSIGNMENT = re.compile(r"(-{0,2}[\w.-]++)=")
_URL_CREDS = re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://[^/\s:@]*+:)[^@\s]*+@", re.I)
_AUTH_SCHEME = re.compile(r"\b(bearer|basic)(\s++)\S++", re.I)
_INLINE_KV = re.compile(r"(?<![\w.-])([\w.-]++)[\"']?\s*+[=:]\s*+")
_INLINE_FLAG = re.compile(r"(?<!\S)(-{1,2}[\w.-]++)\s++")
_VALUE = re.compile(r"\"[^\"]*+\"|'[^']*+'|\S++")


def _secret_name(name: str) -> bool:
    return bool(_WORD.search(name))


def _secret_flag(name: str) -> bool:
    return name in _SHORT_SECRET_FLAGS or _secret_name(name)


def _redact_values(text: str, pattern: re.Pattern[str], is_secret: Callable[[str], bool]) -> str:
    """Replace the value after each match of ``pattern`` whose group 1 is secret."""
    out: list[str] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        out.append(text[pos : m.end()])
        pos = m.end()
        if is_secret(m.group(1)):
            value = _VALUE.match(text, pos)
            if value is not None:
                out.append(REDACTED)
                pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Redact credentials inside free text (a shell string, a header value)."""
    text = _URL_CREDS.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    text = _redact_values(text, _INLINE_FLAG, _secret_flag)
    return _redact_values(text, _INLINE_KV, _secret_name)


def redact_command(argv: Sequence[str]) -> list[str]:
    """A copy of ``argv`` with secret-looking values replaced by ``[REDACTED]``."""
    out: list[str] = []
    redact_next = False
    user_next = False
    script_next = False
    for arg in argv:
        arg = str(arg)
        if redact_next:
            out.append(REDACTED)
        elif user_next:
            user, sep, _ = arg.partition(":")
            out.append(f"{redact_text(user)}:{REDACTED}" if sep else redact_text(arg))
        else:
            # A whole argument KEY=VALUE is redacted to its end (env KEY="a b"), but a
            # shell script after -c is free text: "KEY=v cmd" keeps "cmd".
            match = None if script_next else _ASSIGNMENT.match(arg)
            if match and _secret_name(match.group(1)):
                out.append(f"{match.group(1)}={REDACTED}")
            else:
                out.append(redact_text(arg))
        # Decided for values too: in ["--password", "--token", "x"] both values go.
        redact_next = bool(_FLAG_ARG.fullmatch(arg)) and _secret_flag(arg)
        user_next = arg in _USER_FLAGS
        script_next = arg == "-c"
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
        record = self._base("request", user, info, request_id)
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

    def log_session_end(
        self,
        *,
        user: UserInfo | None,
        info: RequestInfo | None,
        container: str,
        command: Sequence[str],
        tty: bool,
        stdin: bool,
        duration: float,
        bytes_in: int,
        bytes_out: int,
        exit_code: int | None = None,
        error: str = "",
        source: str = "",
        request_id: str = "",
    ) -> None:
        """The end of one exec/attach session (attach has an empty ``command``)."""
        record = self._base("session_end", user, info, request_id)
        record.update(
            container=container,
            command=redact_command(command),
            tty=bool(tty),
            stdin=bool(stdin),
            duration=round(float(duration), 6),
            bytes_in=int(bytes_in),
            bytes_out=int(bytes_out),
            exit_code=exit_code,
            source=source,
        )
        if error:
            record["error"] = redact_text(error)
        self._write(record)

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
        self, kind: str, user: UserInfo | None, info: RequestInfo | None, request_id: str
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": kind,
            "timestamp": _timestamp(self._clock()),
            "request_id": request_id,
            "user": user.name if user else "",
            "groups": list(user.groups) if user else [],
        }
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

    def _write(self, record: dict[str, Any]) -> None:
        line = _fit(record, self._max)
        with self._lock:
            if self._closed:
                raise ValueError("audit log is closed")
            if self._binary:
                self._stream.write(line.encode("ascii"))
            else:
                self._stream.write(line)
            self._stream.flush()


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    if isinstance(value, list):
        return [_cut(v, limit) for v in value[:32]]
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in list(value.items())[:32]}
    return value


def _fit(record: dict[str, Any], max_bytes: int) -> str:
    """The record as one line of at most ``max_bytes`` bytes, cutting long fields."""
    line = _dump(record)
    if len(line) <= max_bytes:
        return line
    for limit in (1024, 256, 64, 16):
        cut = {k: _cut(v, limit) for k, v in record.items()}
        cut["truncated"] = True
        line = _dump(cut)
        if len(line) <= max_bytes:
            return line
    keep = ("type", "timestamp", "verb", "decision", "code", "exit_code")
    small = {k: _cut(record[k], 16) for k in keep if k in record}
    small["truncated"] = True
    return _dump(small)
