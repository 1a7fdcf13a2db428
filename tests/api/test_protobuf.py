"""The protobuf codec (api/protobuf.py): every served kind's JSON survives our encoder and
decoder unchanged (property), the JSON a body decodes to is the one Go's encoding/json
writes for the same object (zero values, omitempty, inlined structs, special types), and
hostile bodies are a 400 "malformed protobuf body: ..." (or a 415 for a kind we do not
decode), never an exception or a different object.

The strategy draws *canonical* JSON, i.e. what Go would write: a field without
``omitempty`` is always there (``null`` for an unset pointer, slice or map), an
``omitempty`` scalar, slice or map is there only when non-empty, a struct always is (Go
never omits one), an inlined struct's fields sit in its parent."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.api import protobuf
from hatchway.api.protobuf_tables import KINDS, MESSAGES
from hatchway.api.status import StatusError

TEXT = st.text(max_size=8)
WORD = st.text(string.ascii_letters + "-./", min_size=1, max_size=8)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MOMENT = st.datetimes(datetime(1900, 1, 1), datetime(9999, 1, 1), timezones=st.just(UTC)).filter(
    lambda t: t.replace(microsecond=0) != _EPOCH
)
#: How deep the strategy goes into optional messages (required ones are always drawn).
MAX_OPTIONAL_DEPTH = 4


def _scalar(kind: str, nonzero: bool) -> st.SearchStrategy[Any]:
    base: dict[str, st.SearchStrategy[Any]] = {
        "string": TEXT,
        "bool": st.booleans(),
        "int32": INT32,
        "int64": INT64,
        "double": st.floats(allow_nan=False),
        "time": MOMENT.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        "microtime": MOMENT.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        "quantity": st.sampled_from(["1", "500m", "1Gi", "2.5", "100M", "1e3"]),
        "intorstr": INT32 | WORD,
        "fieldsv1": st.dictionaries(WORD, st.just({}) | st.dictionaries(WORD, st.just({}))),
    }
    strategy = base[kind]
    if nonzero:
        strategy = strategy.filter(lambda v: v not in ("", 0, False))
    return strategy


@st.composite
def canonical(draw: st.DrawFn, name: str, depth: int = 0) -> dict[str, Any]:
    """A JSON object of message ``name`` as Go's encoding/json writes one."""
    out: dict[str, Any] = {}
    table = MESSAGES[name]
    optional = [
        n
        for n, (_j, kind, _r, flags) in table.items()
        if "o" in flags or "z" in flags or "p" in flags
    ]
    chosen = set(
        draw(st.lists(st.sampled_from(optional), unique=True, max_size=3)) if optional else []
    )
    for number, (json_name, kind, ref, flags) in table.items():
        container = any(f in flags for f in "prmw")
        omittable = container or kind in ("string", "bool", "int32", "int64", "double")
        if "i" in flags:
            out.update(draw(canonical(ref, depth + 1)))
            continue
        if (("o" in flags and omittable) or "z" in flags) and number not in chosen:
            continue
        if kind == "message" and container and (depth >= MAX_OPTIONAL_DEPTH):
            if "o" in flags:
                continue
            out[json_name] = None
            continue
        if container and "o" not in flags and not draw(st.booleans()):
            out[json_name] = None  # a nil pointer, slice or map without omitempty
            continue
        item = canonical(ref, depth + 1) if kind == "message" else None
        if "w" in flags:
            item = st.lists(TEXT, max_size=2)
        if "r" in flags:
            out[json_name] = draw(
                st.lists(item if item is not None else _scalar(kind, False), min_size=1, max_size=2)
            )
        elif "m" in flags:
            values = item if item is not None else _scalar(kind, False)
            out[json_name] = draw(st.dictionaries(TEXT, values, min_size=1, max_size=2))
        elif item is not None and "w" not in flags:
            out[json_name] = draw(item)
        elif "w" in flags:
            out[json_name] = draw(item)
        elif kind in ("time", "microtime") and "p" not in flags and "z" not in flags:
            out[json_name] = draw(st.none() | _scalar(kind, False))  # zero time is null
        else:
            nonzero = "o" in flags and "p" not in flags
            out[json_name] = draw(_scalar(kind, nonzero))
    return out


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    (group, kind), message = draw(st.sampled_from(sorted(KINDS.items())))
    version = "v1"
    api_version = f"{group}/{version}" if group else version
    return {"apiVersion": api_version, "kind": kind, **draw(canonical(message))}


@settings(max_examples=400, deadline=None)
@given(objects())
def test_json_survives_encode_and_decode(obj: dict[str, Any]) -> None:
    assert protobuf.decode(protobuf.encode(obj)) == obj


@settings(max_examples=100, deadline=None)
@given(canonical("core/v1.Pod"))
def test_pods_survive_encode_and_decode(pod: dict[str, Any]) -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", **pod}
    assert protobuf.decode(protobuf.encode(obj)) == obj


def test_every_served_kind_has_a_table() -> None:
    from hatchway.api import resources

    for res in resources.RESOURCES:
        assert (res.group, res.kind) in KINDS, res.kind
    for message in list(KINDS.values()):
        for _json, kind, ref, _flags in MESSAGES[message].values():
            assert kind != "message" or ref in MESSAGES, ref


# -- the JSON Go writes ---------------------------------------------------------------


def _field(number: int, data: bytes) -> bytes:
    return protobuf._put_bytes(number, data)


def _varint(number: int, value: int) -> bytes:
    return protobuf._key(number, 0) + protobuf._put_varint(value)


def _body(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw)


def test_a_rolebinding_as_kubectl_writes_it() -> None:
    """Field numbers of rbac/v1 generated.proto; empty strings written, as gogo does."""
    meta = _field(1, b"rb") + _field(2, b"") + _field(3, b"") + _field(8, b"")
    subject = _field(1, b"User") + _field(2, b"rbac.authorization.k8s.io") + _field(3, b"bob")
    subject += _field(4, b"")
    role_ref = _field(1, b"rbac.authorization.k8s.io") + _field(2, b"Role") + _field(3, b"r")
    raw = _field(1, meta) + _field(2, subject) + _field(3, role_ref)
    obj = protobuf.decode(_body("rbac.authorization.k8s.io/v1", "RoleBinding", raw))
    assert obj == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
    }


def test_zero_values_without_omitempty_are_written() -> None:
    """PolicyRule.verbs has no omitempty (``null`` when unset); a Subject's kind and name
    neither (``""``); RoleRef is a struct, always there."""
    obj = protobuf.decode(_body("rbac.authorization.k8s.io/v1", "Role", _field(2, b"")))
    assert obj["rules"] == [{"verbs": None}]
    assert obj["metadata"] == {}
    obj = protobuf.decode(_body("rbac.authorization.k8s.io/v1", "RoleBinding", _field(2, b"")))
    assert obj["subjects"] == [{"kind": "", "name": ""}]
    assert obj["roleRef"] == {"apiGroup": "", "kind": "", "name": ""}


def test_pod_special_types_and_inlined_structs() -> None:
    port = _varint(1, 1) + _field(3, b"http")  # IntOrString "http"
    probe = _field(1, _field(2, _field(2, port)))  # handler (inline) .httpGet .port
    limits = _field(1, _field(1, b"cpu") + _field(2, _field(1, b"500m")))
    container = _field(1, b"c") + _field(10, probe) + _field(8, limits)
    container += _varint(18, 1)  # tty
    spec = _field(2, container) + _varint(4, 30)  # terminationGracePeriodSeconds (pointer)
    spec += _field(1, _field(1, b"v") + _field(2, _field(2, b"")))  # volume: emptyDir {}
    when = _varint(1, 1_700_000_000) + _varint(2, 5)
    meta = _field(1, b"p") + _field(8, when) + _field(11, _field(1, b"a") + _field(2, b""))
    raw = _field(1, meta) + _field(2, spec) + _field(3, b"")
    pod = protobuf.decode(_body("v1", "Pod", raw))
    assert pod["metadata"] == {
        "name": "p",
        "creationTimestamp": "2023-11-14T22:13:20Z",
        "labels": {"a": ""},
    }
    container_json = pod["spec"]["containers"][0]
    assert container_json["livenessProbe"] == {"httpGet": {"port": "http"}}
    assert container_json["resources"] == {"limits": {"cpu": "500m"}}
    assert container_json["tty"] is True and container_json["name"] == "c"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert pod["status"] == {}


def test_negative_ints_and_packed_repeated() -> None:
    ctx = _field(4, b"\x01\x02\x03") + _varint(4, -5)  # supplementalGroups, packed and not
    ctx += _varint(2, -1)  # runAsUser (pointer) -1: a 10-byte varint
    pod = protobuf.decode(_body("v1", "Pod", _field(2, _field(14, ctx))))
    assert pod["spec"]["securityContext"] == {"runAsUser": -1, "supplementalGroups": [1, 2, 3, -5]}


def test_unknown_fields_are_skipped() -> None:
    raw = _field(1, _field(1, b"ns") + _field(999, b"new")) + _varint(77, 1)
    assert protobuf.decode(_body("v1", "Namespace", raw)) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "ns"},
        "spec": {},
        "status": {},
    }


def test_a_message_given_twice_is_merged() -> None:
    """As protobuf (and Go) have it: not the last one alone, which would drop fields."""
    meta = _field(1, _field(1, b"ns")) + _field(1, _field(11, _field(1, b"a") + _field(2, b"b")))
    obj = protobuf.decode(_body("v1", "Namespace", meta))
    assert obj["metadata"] == {"name": "ns", "labels": {"a": "b"}}


def test_older_selfsubjectreview_versions() -> None:
    obj = protobuf.decode(_body("authentication.k8s.io/v1beta1", "SelfSubjectReview", b""))
    assert obj["kind"] == "SelfSubjectReview"


def test_go_duration() -> None:
    cases = {
        0: "0s",
        1: "1ns",
        1500: "1.5µs",
        2_000_000: "2ms",
        10**9: "1s",
        90 * 10**9: "1m30s",
        3600 * 10**9: "1h0m0s",
        3723_500_000_000: "1h2m3.5s",
        -(10**9): "-1s",
    }
    for ns, text in cases.items():
        assert protobuf.go_duration(ns) == text
        assert protobuf.parse_go_duration(text) == ns


@settings(max_examples=300, deadline=None)
@given(INT64)
def test_go_duration_round_trip(ns: int) -> None:
    assert protobuf.parse_go_duration(protobuf.go_duration(ns)) == ns


@given(MOMENT)
def test_microtime_round_trip(when: datetime) -> None:
    text = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    encoded = protobuf._encode_special("t", "microtime", text)
    assert protobuf._special("t", "microtime", encoded) == text
    assert when - _EPOCH == timedelta(
        seconds=protobuf._ints("t", encoded, {1: "s"})["s"], microseconds=when.microsecond
    )


# -- hostile input --------------------------------------------------------------------


def _refused(body: bytes, code: int = 400) -> str:
    with pytest.raises(StatusError) as caught:
        protobuf.decode(body)
    assert caught.value.status["code"] == code
    message: str = caught.value.status["message"]
    if code == 400:
        assert message.startswith("malformed protobuf body: "), message
    return message


NS = _body("v1", "Namespace", b"")[4:]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{}", "missing the k8s"),
        (b"k8s\x00\x0a", "truncated varint"),
        (b"k8s\x00\x0a\x05ab", "longer than the message"),
        (b"k8s\x00\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer than 10"),
        (b"k8s\x00\x0b", "unsupported wire type 3"),
        (b"k8s\x00\x0c", "unsupported wire type 4"),
        (b"k8s\x00\x0e", "unsupported wire type 6"),
        (b"k8s\x00\x09\x01\x02", "truncated fixed-width"),
        (b"k8s\x00\x00\x00", "field number 0"),
        (b"k8s\x00\x08\x01", "wire type 0 where a length-delimited"),
        (b"k8s\x00" + NS + _field(3, b"gzip"), "contentEncoding"),
        (b"k8s\x00" + NS + _field(4, b"application/json"), "contentType"),
        (_body("v1", "Namespace", _field(1, _field(1, b"\xff"))), "not UTF-8"),
        (_body("v1", "Namespace", _field(1, _varint(1, 5))), "wire type 0 where"),
        (_body("v1", "Pod", _field(2, _field(4, b"x"))), "wire type 2 for a int64"),
        (_body("v1", "Pod", _field(2, _field(2, _field(10, b"\x0a")))), "truncated varint"),
        (_body("v1", "Pod", _field(1, _field(8, _field(1, b"")))), "wire type 2 for an integer"),
        (_body("v1", "Pod", _field(1, _field(8, _varint(1, 2**62)))), "time out of range"),
        (_body("v1", "Pod", _field(1, _field(17, _field(7, _field(1, b"{"))))), "not JSON"),
        (
            _body("v1", "Pod", _field(1, _field(17, _field(7, _field(1, b"[" * 100_000))))),
            "nested too deeply",
        ),
    ],
)
def test_malformed_bodies_are_400(body: bytes, why: str) -> None:
    assert why in _refused(body)


def test_unknown_kinds_are_415_not_another_object() -> None:
    message = _refused(_body("apps/v1", "Deployment", b""), 415)
    assert "no protobuf decoding for apps/v1 Deployment" in message
    assert "v1beta1 Pod" in _refused(_body("v1beta1", "Pod", b""), 415)
    assert "<no kind>" in _refused(b"k8s\x00", 415)


def test_an_empty_element_flood_is_bounded() -> None:
    """Two bytes per empty container each cost a Container's table to decode (Go's zero
    values): the total work is bounded (a JSON body of the same size costs far less)."""
    containers = b"\x12\x00" * 1_200_000
    body = _body("v1", "Pod", _field(2, containers))
    assert "costs more than 1000000 fields" in _refused(body)
    # A real pod with many containers is far from it.
    many = b"".join(
        _field(2, _field(1, f"c{i}".encode()) + _field(2, b"busybox")) for i in range(2000)
    )
    assert len(protobuf.decode(_body("v1", "Pod", _field(2, many)))["spec"]["containers"]) == 2000


def test_nesting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No served table nests without end; a recursive one (as a newer kind could have) is
    cut at MAX_DEPTH with a 400, not a RecursionError."""
    monkeypatch.setitem(MESSAGES, "test.Nested", {1: ("child", "message", "test.Nested", "op")})
    monkeypatch.setitem(KINDS, ("", "Nested"), "test.Nested")

    def nested(levels: int) -> bytes:
        data = b""
        for _ in range(levels):
            data = _field(1, data)
        return data

    ok = protobuf.decode(_body("v1", "Nested", nested(protobuf.MAX_DEPTH - 2)))
    assert ok["child"]["child"]
    assert "nested deeper than 400" in _refused(_body("v1", "Nested", nested(protobuf.MAX_DEPTH)))


def test_encoder_refuses_what_it_cannot_write() -> None:
    with pytest.raises(protobuf.EncodeError, match="no field for"):
        protobuf.encode({"apiVersion": "v1", "kind": "Namespace", "metadata": {"nmae": "x"}})
    with pytest.raises(protobuf.EncodeError, match="expected an integer"):
        protobuf.encode({"apiVersion": "v1", "kind": "Pod", "spec": {"priority": "high"}})
    with pytest.raises(protobuf.EncodeError, match="no protobuf table"):
        protobuf.encode({"apiVersion": "apps/v1", "kind": "Deployment"})
