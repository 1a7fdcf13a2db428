"""Status objects byte-for-byte as a Kubernetes API server writes them."""

from __future__ import annotations

import json

import pytest

from hatchway.api import status as st
from hatchway.errors import ApiError


def wire(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


def test_not_found_exact_bytes():
    # protocol.md 7, the reference shape
    assert wire(st.not_found("pods", "nope")) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"pods \\"nope\\" not found","reason":"NotFound",'
        '"details":{"name":"nope","kind":"pods"},"code":404}'
    )


def test_not_found_with_group():
    s = st.not_found("roles", "r", st.RBAC_GROUP)
    assert s["message"] == 'roles.rbac.authorization.k8s.io "r" not found'
    assert list(s["details"]) == ["name", "group", "kind"]


def test_field_order_everywhere():
    builders = [
        st.not_found("pods", "a"),
        st.already_exists("pods", "a"),
        st.conflict("pods", "a"),
        st.invalid("Pod", "a", [st.required("spec.containers")]),
        st.forbidden("alice", "get", "pods", "exec", "", "default", "a"),
        st.unauthorized(),
        st.bad_request("x"),
        st.method_not_allowed("pods", "watch"),
        st.too_many_requests(1),
        st.internal_error("boom"),
        st.expired("too old"),
    ]
    order = ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]
    for s in builders:
        keys = list(s)
        assert keys == [k for k in order if k in keys]
        assert keys[:4] == order[:4] and keys[-1] == "code"


def test_already_exists_and_conflict():
    assert st.already_exists("pods", "a")["message"] == 'pods "a" already exists'
    c = st.conflict("pods", "x")
    assert (c["code"], c["reason"]) == (409, "Conflict")
    assert c["message"] == (
        'Operation cannot be fulfilled on pods "x": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_invalid_single_and_many():
    one = st.invalid("Pod", "p", [st.required("spec.containers[0].image")])
    assert wire(one) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"Pod \\"p\\" is invalid: spec.containers[0].image: Required value",'
        '"reason":"Invalid","details":{"name":"p","kind":"Pod","causes":[{"reason":'
        '"FieldValueRequired","message":"Required value","field":"spec.containers[0].image"}]},'
        '"code":422}'
    )
    many = st.invalid(
        "Pod",
        "p",
        [
            st.required("spec.containers[0].name"),
            st.invalid_value("metadata.name", "Bad", "must be lower case"),
            st.duplicate("spec.containers[1].name", "a"),
            st.not_supported("spec.restartPolicy", "Sometimes", ["Always", "Never"]),
            st.invalid_value("spec.containers[0].ports[0].containerPort", 0, "out of range"),
        ],
    )
    assert many["message"] == (
        'Pod "p" is invalid: [spec.containers[0].name: Required value, '
        'metadata.name: Invalid value: "Bad": must be lower case, '
        'spec.containers[1].name: Duplicate value: "a", '
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", '
        "spec.containers[0].ports[0].containerPort: Invalid value: 0: out of range]"
    )
    causes = many["details"]["causes"]
    assert [c["reason"] for c in causes] == [
        "FieldValueRequired",
        "FieldValueInvalid",
        "FieldValueDuplicate",
        "FieldValueNotSupported",
        "FieldValueInvalid",
    ]
    assert list(causes[0]) == ["reason", "message", "field"]


def test_invalid_with_group_and_no_causes():
    s = st.invalid("Role", "r", [], st.RBAC_GROUP)
    assert s["message"] == 'Role.rbac.authorization.k8s.io "r" is invalid'
    assert s["details"] == {"name": "r", "group": st.RBAC_GROUP, "kind": "Role"}


def test_forbidden_messages():
    s = st.forbidden("alice", "get", "pods", "exec", "", "default", "mypod")
    assert s["message"] == (
        'pods "mypod" is forbidden: User "alice" cannot get resource "pods/exec" '
        'in API group "" in the namespace "default"'
    )
    assert s["details"] == {"name": "mypod", "kind": "pods"}
    assert (s["code"], s["reason"]) == (403, "Forbidden")
    s = st.forbidden("bob", "list", "nodes")
    assert s["message"] == (
        'nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" '
        "at the cluster scope"
    )
    s = st.forbidden("bob", "create", "roles", group=st.RBAC_GROUP, namespace="x", reason="no")
    assert s["message"].startswith("roles.rbac.authorization.k8s.io is forbidden: ")
    assert s["message"].endswith(
        'in API group "rbac.authorization.k8s.io" in the namespace "x": no'
    )
    s = st.forbidden("system:anonymous", "get", path="/")
    assert wire(s) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"forbidden: User \\"system:anonymous\\" cannot get path \\"/\\"",'
        '"reason":"Forbidden","details":{},"code":403}'
    )


def test_simple_ones():
    assert wire(st.unauthorized()) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"Unauthorized","reason":"Unauthorized","code":401}'
    )
    assert st.bad_request("Upgrade request required")["code"] == 400
    m = st.method_not_allowed("pods", "watch")
    assert m["message"] == 'watch is not supported on resources of kind "pods"'
    assert m["code"] == 405
    t = st.too_many_requests(3)
    assert t["details"] == {"retryAfterSeconds": 3} and t["code"] == 429
    i = st.internal_error("boom")
    assert i["message"] == "Internal error occurred: boom"
    assert i["details"] == {"causes": [{"message": "boom"}]}
    e = st.expired("too old resource version: 1 (5)")
    assert (e["code"], e["reason"]) == (410, "Expired")
    assert st.gone("x")["reason"] == "Gone"
    assert st.not_found_path()["details"] == {}
    assert list(st.success()) == ["kind", "apiVersion", "metadata", "status"]


def test_status_error_carries_status():
    s = st.not_found("pods", "a")
    with pytest.raises(ApiError) as info:
        raise st.StatusError(s)
    err = info.value
    assert isinstance(err, st.StatusError)
    assert (err.code, err.reason, err.message, err.status) == (404, "NotFound", s["message"], s)
    assert str(err) == 'pods "a" not found'


def test_field_error_values_like_go():
    assert st.invalid_value("f", True, "d").body() == "Invalid value: true: d"
    assert st.invalid_value("f", None, "d").body() == 'Invalid value: "null": d'
    assert st.invalid_value("f", 'a"b').body() == 'Invalid value: "a\\"b"'
    assert st.forbidden_field("spec", "no").body() == "Forbidden: no"


def test_a_list_value_is_printed_as_go_prints_a_string_slice() -> None:
    error = st.not_supported("dryRun", ["Yes", "No"], ["All"])
    doc = st.invalid("CreateOptions", "", [error], "meta.k8s.io")
    assert (
        'dryRun: Unsupported value: []string{"Yes", "No"}: supported values: "All"'
        in (doc["message"])
    )
