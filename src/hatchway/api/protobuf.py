"""Kubernetes' protobuf encoding of API objects, driven by field tables (sans-I/O).

kubectl 1.32+ builds typed client-go clients that send ``create`` bodies as
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\x00`` then a
``runtime.Unknown`` {typeMeta=1 {apiVersion=1, kind=2}, raw=2, contentEncoding=3,
contentType=4} whose ``raw`` is the object's message. The messages' field numbers, JSON
names and Go types are in :mod:`.protobuf_tables` (generated from Kubernetes' API
types). :func:`decode` gives exactly the JSON object the same request would carry as
JSON, as Go's encoding/json writes it: ``omitempty`` fields at their zero value are left
out, fields without it are written even when absent on the wire (zero value, ``null``
for pointers, slices and maps), inlined structs are merged into their parent. So
everything downstream of the body is the same for both encodings.

Special messages have their own JSON form: ``metav1.Time`` {seconds=1, nanos=2} is an
RFC 3339 string (``null`` at zero), ``MicroTime`` the same with microseconds,
``metav1.Duration`` {duration=1 (ns)} Go's duration string, ``resource.Quantity``
{string=1} its string, ``intstr.IntOrString`` {type=1, intVal=2, strVal=3} a number or
a string, ``runtime.RawExtension`` and ``metav1.FieldsV1`` {raw=1} the JSON they hold.

What a peer controls is bounded: malformed input (truncated varints or fields, lengths
past the end, wire types that do not fit the field, field number 0, invalid UTF-8) is a
400 "malformed protobuf body: ...", message nesting is limited to :data:`MAX_DEPTH`
(the tables have no recursive message today; the limit keeps it so), the work a body
may cost to :data:`MAX_WORK` fields (protobuf claims far more per byte than JSON), and
sizes are bounded by the body limit before we are called.

Skipped, as Kubernetes' own decoder skips them: field numbers a table does not know (a
field added to Kubernetes after our tables; nothing Hatchway reads). Never skipped: an
envelope whose kind has no table, or with a ``contentEncoding``, or whose ``raw`` is
not protobuf — those are refused rather than decoded into a different object.

:func:`encode` is the inverse (keys the tables do not know are an error, never dropped).
"""

from __future__ import annotations

import base64
import functools
import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hatchway.api import status
from hatchway.api.protobuf_tables import KINDS, MESSAGES, Field
from hatchway.api.status import StatusError
from hatchway.errors import HatchwayError

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
#: How deep messages may nest (the envelope is depth 0).
MAX_DEPTH = 400

_TYPE_META = "runtime.TypeMeta"
#: runtime.TypeMeta of apimachinery's runtime package, the first field of the
#: runtime.Unknown envelope (the others, raw=2, contentEncoding=3, contentType=4, are
#: read by :func:`decode` itself).
_ENVELOPE: dict[str, dict[int, Field]] = {
    _TYPE_META: {1: ("apiVersion", "string", "", "o"), 2: ("kind", "string", "", "o")},
}
_SCALARS = {"string", "bytes", "bool", "int32", "int64", "double"}
_PACKABLE = {"bool", "int32", "int64", "double"}
#: The wire type each kind is written with (messages and special types are all 2).
_WIRE = {"bool": 0, "int32": 0, "int64": 0, "double": 1}


def _bad(what: str) -> StatusError:
    return StatusError(status.bad_request(f"malformed protobuf body: {what}"))


def _table(name: str) -> dict[int, Field]:
    return _ENVELOPE.get(name) or MESSAGES[name]


# -- wire format -----------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _bad("truncated varint")
        if shift > 63:
            raise _bad("varint longer than 10 bytes")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(number, wire type, value)`` of each field of one message: varints and fixed
    ints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _bad("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if size > len(data) - pos:
                raise _bad(f"field {number} is longer than the message")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > len(data) - pos:
                raise _bad(f"truncated fixed-width field {number}")
            yield number, wire, int.from_bytes(data[pos : pos + width], "little")
            pos += width
        else:
            raise _bad(f"unsupported wire type {wire} (field {number})")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` pairs of one message, whatever its table: for tests and
    other protobuf documents (the OpenAPI v2 one)."""
    return [(number, value) for number, _wire, value in _fields(data)]


def _key(number: int, wire: int) -> bytes:
    return _put_varint(number << 3 | wire)


def _put_varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF_FFFF_FFFF  # negative ints as 64-bit two's complement, as Go
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _put_bytes(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _put_varint(len(data)) + data


# -- decoding --------------------------------------------------------------------------


#: Versions other than v1 a kind is decoded in (same shape): kubectl 1.27's ``auth
#: whoami`` posts v1alpha1, then v1beta1.
_OTHER_VERSIONS = {("authentication.k8s.io", "SelfSubjectReview"): ("v1alpha1", "v1beta1")}


#: Options kinds a typed client sends in the group version of the resource it acts on
#: (an rbac client's DELETE carries an ``rbac.authorization.k8s.io/v1`` DeleteOptions).
_EVERY_GROUP = {"DeleteOptions": "meta/v1.DeleteOptions"}


def decode(body: bytes) -> dict[str, Any]:
    """The object of a protobuf request body as its JSON form."""
    if not body.startswith(MAGIC):
        raise _bad("missing the k8s\\x00 envelope")
    decoder = _Decoder()
    type_meta: dict[str, Any] = {}
    raw = b""
    encoding = content_type = ""
    for number, wire, value in _fields(body[len(MAGIC) :]):
        if number == 1:
            type_meta = decoder.message(_TYPE_META, _bytes("Unknown.typeMeta", wire, value), 1)
        elif number == 2:
            raw = _bytes("Unknown.raw", wire, value)
        elif number == 3:
            encoding = _text("Unknown.contentEncoding", _bytes("Unknown", wire, value))
        elif number == 4:
            content_type = _text("Unknown.contentType", _bytes("Unknown", wire, value))
    if encoding:
        raise _bad(f"unsupported contentEncoding {encoding!r}")
    if content_type not in ("", MEDIA_TYPE):
        raise _bad(f"unsupported contentType {content_type!r}")
    api_version = type_meta.get("apiVersion", "")
    kind = type_meta.get("kind", "")
    group, _, version = api_version.rpartition("/")
    message = KINDS.get((group, kind)) or _EVERY_GROUP.get(kind)
    if message is None or version not in ("v1", *_OTHER_VERSIONS.get((group, kind), ())):
        raise StatusError(
            status.unsupported_media_type(
                f"the body of the request was in an unknown format ({MEDIA_TYPE}):"
                f" no protobuf decoding for {api_version or '<no apiVersion>'}"
                f" {kind or '<no kind>'}"
            )
        )
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    obj.update(decoder.message(message, raw, 1))
    return obj


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    """One message of table ``name`` as its JSON object."""
    return _Decoder().message(name, data, 1)


#: How much work one body may cost, in fields: each message decoded costs the size of
#: its table (every field is looked at, to write Go's zero values), each field read one
#: more. A real object costs thousands; protobuf lets a peer claim far more per byte
#: than JSON does (an empty element of a repeated message is two bytes and decodes to
#: every non-omitempty field of it), so a flood of them is cut here.
MAX_WORK = 1_000_000


class _Decoder:
    def __init__(self) -> None:
        self.work = 0

    def _count(self, n: int) -> None:
        self.work += n
        if self.work > MAX_WORK:
            raise _bad(f"the object costs more than {MAX_WORK} fields to decode")

    def message(self, name: str, data: bytes, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise _bad(f"messages nested deeper than {MAX_DEPTH}")
        table = _table(name)
        self._count(len(table))
        found: dict[int, Any] = {}
        parts: dict[int, list[bytes]] = {}
        for number, wire, value in _fields(data):
            field = table.get(number)
            if field is None:
                continue  # a field newer than our tables: skipped, as Kubernetes does
            json_name, kind, ref, flags = field
            where = f"{name}.{json_name or ref}"
            self._count(1)
            if "m" in flags:
                key, item = self._entry(where, field, _bytes(where, wire, value), depth)
                found.setdefault(number, {})[key] = item
            elif "r" in flags:
                items = found.setdefault(number, [])
                if wire == 2 and kind in _PACKABLE:
                    packed = _packed(where, kind, _bytes(where, wire, value))
                    self._count(len(packed))
                    items.extend(packed)
                else:
                    items.append(self._value(where, field, wire, value, depth))
            elif kind == "message" and "w" not in flags:
                # A message field given twice is the merge of both, as protobuf has it
                # (and Go decodes it): the concatenation of their bytes.
                parts.setdefault(number, []).append(_bytes(where, wire, value))
            else:
                found[number] = self._value(where, field, wire, value, depth)
        for number, chunks in parts.items():
            json_name, kind, ref, flags = table[number]
            merged = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            found[number] = self.message(ref, merged, depth + 1)
        out: dict[str, Any] = {}
        for number, (json_name, kind, ref, flags) in table.items():
            if "i" in flags:
                inner = found.get(number)
                out.update(inner if inner is not None else self.message(ref, b"", depth + 1))
                continue
            if number in found:
                value = found[number]
                if "p" not in flags and _omitted(kind, flags, value):
                    continue
                out[json_name] = value
            elif "o" in flags and _omittable(kind, flags):
                continue  # omitempty and absent: Go leaves it out (a struct is never empty)
            elif "z" in flags:
                continue
            else:
                out[json_name] = self._zero(kind, ref, flags, depth)
        return out

    def _zero(self, kind: str, ref: str, flags: str, depth: int) -> Any:
        """The JSON of an absent field that Go writes anyway (no omitempty)."""
        if any(f in flags for f in "prmw"):
            return None
        if kind == "message":
            return self.message(ref, b"", depth + 1)
        return _ZEROS.get(kind)  # bytes, time, microtime, raw, fieldsv1: null

    def _value(self, where: str, field: Field, wire: int, value: int | bytes, depth: int) -> Any:
        _json_name, kind, ref, flags = field
        if kind in _WIRE:
            if wire != _WIRE[kind] or not isinstance(value, int):
                raise _bad(f"{where}: wire type {wire} for a {kind}")
            if kind == "bool":
                return value != 0
            if kind == "double":
                return struct.unpack("<d", value.to_bytes(8, "little"))[0]
            return _signed(value, 32 if kind == "int32" else 64)
        data = _bytes(where, wire, value)
        if "w" in flags:
            items = [_text(where, _bytes(where, w, v)) for n, w, v in _fields(data) if n == 1]
            self._count(len(items))
            return items
        if kind == "string":
            return _text(where, data)
        if kind == "bytes":
            return base64.b64encode(data).decode("ascii")
        if kind == "message":
            return self.message(ref, data, depth + 1)
        return _special(where, kind, data)

    def _entry(self, where: str, field: Field, data: bytes, depth: int) -> tuple[str, Any]:
        json_name, kind, ref, flags = field
        value_field = (json_name, kind, ref, flags.replace("m", ""))
        key = ""
        item: Any = None
        for number, wire, value in _fields(data):
            if number == 1:
                key = _text(where, _bytes(where, wire, value))
            elif number == 2:
                item = self._value(where, value_field, wire, value, depth)
        if item is None:
            item = self._zero(kind, ref, value_field[3], depth)
        return key, item


_ZEROS: dict[str, Any] = {
    "string": "",
    "bool": False,
    "int32": 0,
    "int64": 0,
    "double": 0.0,
    "quantity": "0",
    "intorstr": 0,
    "duration": "0s",
}


def _omittable(kind: str, flags: str) -> bool:
    """Whether omitempty can leave the field out: scalars, pointers, slices and maps;
    structs (messages and the special types) are never "empty" to encoding/json."""
    return kind in _SCALARS or any(f in flags for f in "prmw")


def _omitted(kind: str, flags: str, value: Any) -> bool:
    """Whether Go's encoding/json leaves out a present non-pointer ``value``."""
    if "z" in flags and value is None:  # omitzero on a zero time
        return True
    if "o" not in flags or not _omittable(kind, flags):
        return False
    return value in ("", 0, False) or value == [] or value == {}


def _bytes(where: str, wire: int, value: int | bytes) -> bytes:
    if wire != 2 or not isinstance(value, bytes):
        raise _bad(f"{where}: wire type {wire} where a length-delimited field belongs")
    return value


def _text(where: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{where}: a string that is not UTF-8") from None


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _packed(where: str, kind: str, data: bytes) -> list[Any]:
    out: list[Any] = []
    pos = 0
    while pos < len(data):
        if kind == "double":
            if len(data) - pos < 8:
                raise _bad(f"{where}: truncated packed double")
            out.append(struct.unpack_from("<d", data, pos)[0])
            pos += 8
            continue
        value, pos = _varint(data, pos)
        out.append(value != 0 if kind == "bool" else _signed(value, 32 if kind == "int32" else 64))
    return out


def _ints(where: str, data: bytes, names: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for number, wire, value in _fields(data):
        if number in names:
            if wire != 0 or not isinstance(value, int):
                raise _bad(f"{where}: wire type {wire} for an integer")
            out[names[number]] = _signed(value, 64)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _special(where: str, kind: str, data: bytes) -> Any:
    if kind in ("time", "microtime"):
        t = _ints(where, data, {1: "seconds", 2: "nanos"})
        seconds, nanos = t.get("seconds", 0), _signed(t.get("nanos", 0), 32)
        if not seconds and not nanos:
            return None
        try:
            when = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
        except OverflowError:
            raise _bad(f"{where}: time out of range") from None
        if kind == "time":
            return when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "duration":
        return go_duration(_ints(where, data, {1: "duration"}).get("duration", 0))
    if kind == "quantity":
        text = ""
        for number, wire, value in _fields(data):
            if number == 1:
                text = _text(where, _bytes(where, wire, value))
        return text or "0"
    if kind == "intorstr":
        kind_of, number_, text = 0, 0, ""
        for number, wire, value in _fields(data):
            if number in (1, 2):
                if wire != 0 or not isinstance(value, int):
                    raise _bad(f"{where}: wire type {wire} for an integer")
                if number == 1:
                    kind_of = value
                else:
                    number_ = _signed(value, 32)
            elif number == 3:
                text = _text(where, _bytes(where, wire, value))
        if kind_of not in (0, 1):
            raise _bad(f"{where}: IntOrString of type {kind_of}")
        return text if kind_of == 1 else number_
    # raw, fieldsv1: the JSON they carry
    raw = b""
    for number, wire, value in _fields(data):
        if number == 1:
            raw = _bytes(where, wire, value)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        raise _bad(f"{where}: embedded JSON nested too deeply") from None
    except ValueError:
        raise _bad(f"{where}: embedded object is not JSON") from None


_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9))


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: ``1h2m3.5s``, ``1.5ms``, ``0s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if u >= size:
                return sign + _frac(u, size) + unit
    out = ""
    for unit, size in _UNITS:
        if u >= size or out:
            out += f"{u // size}{unit}"
            u %= size
    return sign + out + _frac(u, 10**9) + "s"


def _frac(value: int, size: int) -> str:
    whole, rest = divmod(value, size)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string (the units :func:`go_duration` writes)."""
    sizes = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "µs": 10**3}
    sizes |= {"us": 10**3, "ns": 1}
    sign = -1 if text.startswith("-") else 1
    rest = text.lstrip("+-")
    total = 0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        number, unit = rest[:i], rest[i:j]
        if not number or unit not in sizes:
            raise ValueError(f"invalid duration {text!r}")
        whole, _, frac = number.partition(".")
        size = sizes[unit]
        total += int(whole or 0) * size + (int(frac) * size // 10 ** len(frac) if frac else 0)
        rest = rest[j:]
    return sign * total


# -- encoding --------------------------------------------------------------------------


def only_protobuf(accept: str) -> bool:
    """Whether an ``Accept`` header allows protobuf and nothing else (client-go's typed
    clients send ``application/vnd.kubernetes.protobuf, application/json``: JSON is
    then fine, and what we answer)."""
    ranges = [r.split(";")[0].strip().lower() for r in accept.split(",") if r.strip()]
    return bool(ranges) and all(r == MEDIA_TYPE for r in ranges)


class EncodeError(HatchwayError, ValueError):
    """An object that has no protobuf form in our tables."""


def encode(obj: dict[str, Any]) -> bytes:
    """``obj`` (with apiVersion and kind) as a protobuf body."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    message = KINDS.get((str(api_version).rpartition("/")[0], str(kind)))
    message = message or _EVERY_GROUP.get(str(kind))
    if message is None:
        raise EncodeError(f"no protobuf table for {api_version} {kind}")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    type_meta = encode_message(_TYPE_META, {"apiVersion": api_version, "kind": kind})
    return MAGIC + _put_bytes(1, type_meta) + _put_bytes(2, encode_message(message, body))


@functools.cache
def _json_keys(name: str) -> frozenset[str]:
    """The JSON keys of message ``name``, its inlined structs' included."""
    keys: set[str] = set()
    for json_name, _kind, ref, flags in _table(name).values():
        keys |= _json_keys(ref) if "i" in flags else {json_name}
    return frozenset(keys)


def encode_message(name: str, obj: dict[str, Any]) -> bytes:
    if not isinstance(obj, dict):
        raise EncodeError(f"{name}: expected an object, got {type(obj).__name__}")
    # apiVersion and kind of an object inside another (a list's items) are its TypeMeta,
    # which protobuf carries only in the envelope.
    extra = set(obj) - _json_keys(name) - {"apiVersion", "kind"}
    if extra:
        raise EncodeError(f"{name}: no field for {sorted(extra)}")
    out = bytearray()
    for number, (json_name, kind, ref, flags) in sorted(_table(name).items()):
        if "i" in flags:
            keys = _json_keys(ref)
            out += _put_bytes(number, encode_message(ref, {k: obj[k] for k in keys if k in obj}))
            continue
        value = obj.get(json_name)
        if value is None:
            continue
        where = f"{name}.{json_name}"
        if "m" in flags:
            if not isinstance(value, dict):
                raise EncodeError(f"{where}: expected an object")
            for key in sorted(value):
                entry = _put_bytes(1, str(key).encode())
                if value[key] is not None:
                    entry += _encode_value(where, 2, kind, ref, flags, value[key])
                out += _put_bytes(number, entry)
        elif "r" in flags:
            if not isinstance(value, list):
                raise EncodeError(f"{where}: expected a list")
            for item in value:
                out += _encode_value(where, number, kind, ref, flags, item)
        else:
            out += _encode_value(where, number, kind, ref, flags, value)
    return bytes(out)


def _encode_value(where: str, number: int, kind: str, ref: str, flags: str, value: Any) -> bytes:
    if "w" in flags:
        if not isinstance(value, list):
            raise EncodeError(f"{where}: expected a list")
        return _put_bytes(number, b"".join(_put_bytes(1, _str(where, v).encode()) for v in value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise EncodeError(f"{where}: expected a boolean")
        return _key(number, 0) + _put_varint(int(value))
    if kind in ("int32", "int64"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(f"{where}: expected an integer")
        return _key(number, 0) + _put_varint(value)
    if kind == "double":
        return _key(number, 1) + struct.pack("<d", float(value))
    if kind == "string":
        return _put_bytes(number, _str(where, value).encode())
    if kind == "bytes":
        return _put_bytes(number, base64.b64decode(_str(where, value)))
    if kind == "message":
        return _put_bytes(number, encode_message(ref, value))
    return _put_bytes(number, _encode_special(where, kind, value))


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise EncodeError(f"{where}: expected a string")
    return value


def _encode_special(where: str, kind: str, value: Any) -> bytes:
    if kind in ("time", "microtime"):
        try:
            when = datetime.fromisoformat(_str(where, value))
        except ValueError:
            raise EncodeError(f"{where}: not an RFC 3339 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delta = when - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        nanos = delta.microseconds * 1000 if kind == "microtime" else 0
        return (
            _key(1, 0) + _put_varint(seconds) + (_key(2, 0) + _put_varint(nanos) if nanos else b"")
        )
    if kind == "duration":
        try:
            ns = parse_go_duration(_str(where, value))
        except ValueError as exc:
            raise EncodeError(f"{where}: {exc}") from None
        return _key(1, 0) + _put_varint(ns)
    if kind == "quantity":
        return _put_bytes(1, _str(where, value).encode())
    if kind == "intorstr":
        if isinstance(value, str):
            return _key(1, 0) + _put_varint(1) + _put_bytes(3, value.encode())
        if isinstance(value, int) and not isinstance(value, bool):
            return _key(1, 0) + _put_varint(0) + _key(2, 0) + _put_varint(value)
        raise EncodeError(f"{where}: expected an integer or a string")
    return _put_bytes(1, json.dumps(value, separators=(",", ":")).encode())
