"""etcd v3's JSON gateway without I/O: request bodies in, parsed responses out.

etcd serves its gRPC API as JSON over HTTP/1.1 on the client port (protocol.md 10.1):
``POST /v3/kv/range``, ``/v3/kv/txn``, ``/v3/kv/compaction``
and a streaming ``/v3/watch``. Keys and values are base64; 64-bit integers are JSON
strings; fields at their zero value are left out (an event with no ``type`` is a PUT).
The watch stream is one JSON object per line. Everything here is bounded by the caller's
limits: :class:`LineSplitter` refuses a line longer than it allows.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from hatchway.errors import ProtocolError

#: gRPC status code etcd answers a read or watch at a compacted revision with.
OUT_OF_RANGE = 11


class EtcdError(ProtocolError):
    """etcd refused a request (``code`` is the gRPC status) or answered nonsense."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise EtcdError(f"etcd sent {type(text).__name__} where base64 text belongs")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EtcdError(f"etcd sent invalid base64: {exc}") from None


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise EtcdError(f"etcd sent {value!r} where an integer belongs") from None


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # every key
    raw[-1] += 1
    return bytes(raw)


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


def parse_kv(data: Any) -> KeyValue:
    if not isinstance(data, dict):
        raise EtcdError("etcd sent a key-value that is not an object")
    return KeyValue(
        key=unb64(data.get("key", "")),
        value=unb64(data.get("value", "")),
        create_revision=_int(data.get("create_revision")),
        mod_revision=_int(data.get("mod_revision")),
    )


def decode(body: bytes) -> dict[str, Any]:
    """A gateway answer as a dict; an ``error`` answer raises :class:`EtcdError`."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise EtcdError(f"etcd sent invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EtcdError("etcd sent JSON that is not an object")
    if "error" in data and "header" not in data and "result" not in data:
        error = data["error"]
        message = data.get("message") or (error if isinstance(error, str) else json.dumps(error))
        code = data.get("code", error.get("grpc_code", 0) if isinstance(error, dict) else 0)
        raise EtcdError(f"etcd: {message}", _int(code))
    return data


def revision(data: dict[str, Any]) -> int:
    header = data.get("header")
    return _int(header.get("revision")) if isinstance(header, dict) else 0


# -- ranges ------------------------------------------------------------------------------


def range_body(
    key: bytes, end: bytes | None = None, *, rev: int = 0, limit: int = 0, count_only: bool = False
) -> bytes:
    body: dict[str, Any] = {"key": b64(key)}
    if end is not None:
        body["range_end"] = b64(end)
    if rev:
        body["revision"] = str(rev)
    if limit:
        body["limit"] = str(limit)
    if count_only:
        body["count_only"] = True
    return json.dumps(body).encode()


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool
    revision: int
    #: Keys in the whole range at that revision, whatever the limit.
    count: int = 0


def parse_range(data: dict[str, Any]) -> RangeResult:
    kvs = data.get("kvs") or []
    if not isinstance(kvs, list):
        raise EtcdError("etcd sent kvs that are not a list")
    more, count = bool(data.get("more")), _int(data.get("count"))
    return RangeResult([parse_kv(kv) for kv in kvs], more, revision(data), count)


# -- transactions ------------------------------------------------------------------------


def _put(key: bytes, value: bytes) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def _txn(compare: dict[str, Any], success: dict[str, Any], key: bytes) -> bytes:
    failure = {"request_range": {"key": b64(key)}}
    body = {"compare": [compare], "success": [success], "failure": [failure]}
    return json.dumps(body).encode()


def create_txn(key: bytes, value: bytes) -> bytes:
    """Put ``key`` only if it does not exist (its create revision is 0)."""
    compare = {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    return _txn(compare, _put(key, value), key)


def _same_mod(key: bytes, mod_revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def update_txn(key: bytes, value: bytes, mod_revision: int) -> bytes:
    """Put ``key`` only if it was last modified at ``mod_revision``."""
    return _txn(_same_mod(key, mod_revision), _put(key, value), key)


def delete_txn(key: bytes, mod_revision: int) -> bytes:
    """Delete ``key`` only if it was last modified at ``mod_revision``."""
    delete = {"request_delete_range": {"key": b64(key)}}
    return _txn(_same_mod(key, mod_revision), delete, key)


def guard_txn(key: bytes, version_key_value: int, value: bytes) -> bytes:
    """Put ``key`` only if its version is ``version_key_value`` (the compactor's lock)."""
    compare = {"key": b64(key), "target": "VERSION", "result": "EQUAL"}
    compare["version"] = str(version_key_value)
    return _txn(compare, _put(key, value), key)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: On failure, the key as it is now (None if it does not exist).
    current: KeyValue | None


def parse_txn(data: dict[str, Any]) -> TxnResult:
    succeeded = bool(data.get("succeeded"))
    current = None
    if not succeeded:
        for response in data.get("responses") or []:
            ranged = response.get("response_range") if isinstance(response, dict) else None
            if isinstance(ranged, dict):
                kvs = parse_range(ranged).kvs
                current = kvs[0] if kvs else None
    return TxnResult(succeeded, revision(data), current)


def compaction_body(rev: int) -> bytes:
    return json.dumps({"revision": str(rev)}).encode()


def version_of(data: dict[str, Any]) -> int:
    """The version of the single key in a range response (0 if absent)."""
    kvs = data.get("kvs") or []
    return _int(kvs[0].get("version")) if kvs and isinstance(kvs[0], dict) else 0


# -- watches -----------------------------------------------------------------------------


def watch_body(key: bytes, end: bytes, start_revision: int) -> bytes:
    request = {
        "key": b64(key),
        "range_end": b64(end),
        "start_revision": str(start_revision),
        "prev_kv": True,
        "progress_notify": True,
    }
    return json.dumps({"create_request": request}).encode()


@dataclass(frozen=True)
class Change:
    deleted: bool
    kv: KeyValue
    prev: KeyValue | None


@dataclass(frozen=True)
class WatchMessage:
    revision: int
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    changes: tuple[Change, ...] = ()

    @property
    def progress(self) -> bool:
        """A progress notification: the revision the watch has reached, nothing else."""
        return not (self.created or self.canceled or self.changes)


def _change(event: Any) -> Change:
    if not isinstance(event, dict):
        raise EtcdError("etcd sent a watch event that is not an object")
    kind = event.get("type", "PUT")
    if kind not in ("PUT", "DELETE"):
        raise EtcdError(f"etcd sent a watch event of type {kind!r}")
    prev = event.get("prev_kv")
    return Change(kind == "DELETE", parse_kv(event.get("kv")), parse_kv(prev) if prev else None)


def parse_watch(line: bytes) -> WatchMessage:
    """One line of the watch stream."""
    data = decode(line)
    result = data.get("result")
    if not isinstance(result, dict):
        raise EtcdError("etcd sent a watch line without a result")
    events = result.get("events") or []
    if not isinstance(events, list):
        raise EtcdError("etcd sent watch events that are not a list")
    return WatchMessage(
        revision=revision(result),
        created=bool(result.get("created")),
        canceled=bool(result.get("canceled")),
        compact_revision=_int(result.get("compact_revision")),
        cancel_reason=str(result.get("cancel_reason") or ""),
        changes=tuple(_change(e) for e in events),
    )


class LineSplitter:
    """Bytes in, complete lines out; a line longer than ``limit`` is an error, so a peer
    cannot make the buffer grow without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        lines = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            if end - start > self.limit:
                self._too_long()
            line = bytes(self._buffer[start:end]).strip()
            if line:
                lines.append(line)
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self.limit:
            self._too_long()
        return lines

    def _too_long(self) -> None:
        self._buffer.clear()
        raise EtcdError(f"etcd sent a watch message longer than {self.limit} bytes")
