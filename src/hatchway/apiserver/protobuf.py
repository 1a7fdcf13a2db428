"""Just enough of Kubernetes' protobuf encoding to read access and rules reviews.

``kubectl auth can-i`` posts its SelfSubjectAccessReview as
``application/vnd.kubernetes.protobuf`` with no JSON fallback, so the API server must
read that one message. The envelope is the magic ``k8s\\x00`` followed by a
``runtime.Unknown`` (typeMeta=1 {apiVersion=1, kind=2}, raw=2); ``raw`` is the
message: (Self)SubjectAccessReview {metadata=1, spec=2, status=3}. Field numbers are
those of k8s.io/api/authorization/v1/generated.proto. The answer goes back as JSON,
which client-go decodes by the response's Content-Type.
"""

from __future__ import annotations

from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

_RESOURCE_ATTRS = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_ATTRS = {1: "path", 2: "verb"}


def _bad(what: str) -> StatusError:
    return StatusError(status.bad_request(f"malformed protobuf body: {what}"))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _bad("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` pairs: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _bad("truncated field")
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise _bad(f"unsupported wire type {wire}")
    return out


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise _bad("expected a string")
    return value.decode("utf-8", "replace")


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    return {names[n]: _text(v) for n, v in fields(data) if n in names}


def _spec(data: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1 and isinstance(value, bytes):
            spec["resourceAttributes"] = _strings(value, _RESOURCE_ATTRS)
        elif number == 2 and isinstance(value, bytes):
            spec["nonResourceAttributes"] = _strings(value, _NON_RESOURCE_ATTRS)
        elif number == 3:
            spec["user"] = _text(value)
        elif number == 4:
            spec.setdefault("groups", []).append(_text(value))
        elif number == 6:
            spec["uid"] = _text(value)
    return spec


def decode_review(body: bytes) -> dict[str, Any]:
    """A (Self)SubjectAccessReview in protobuf as its JSON-shaped dict."""
    if not body.startswith(MAGIC):
        raise _bad("missing the k8s envelope")
    api_version = kind = ""
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            meta = _strings(value, {1: "apiVersion", 2: "kind"})
            api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
        elif number == 2 and isinstance(value, bytes):
            raw = value
    review: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for number, value in fields(raw):
        if number == 2 and isinstance(value, bytes):
            review["spec"] = _SPECS.get(kind, _spec)(value)
    return review


def _rules_spec(data: bytes) -> dict[str, Any]:
    """SelfSubjectRulesReviewSpec {namespace=1}."""
    return _strings(data, {1: "namespace"})


def _no_spec(data: bytes) -> dict[str, Any]:
    return {}


_SPECS = {"SelfSubjectRulesReview": _rules_spec, "SelfSubjectReview": _no_spec}
