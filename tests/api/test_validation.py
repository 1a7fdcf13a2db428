from __future__ import annotations

import pytest

from hatchway.api.defaults import apply_defaults
from hatchway.api.status import StatusError
from hatchway.api.validation import check, check_update, validate, validate_update


def pod(**spec):
    spec.setdefault("containers", [{"name": "main", "image": "busybox"}])
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def fields(errs):
    return [(e.field, e.type) for e in errs]


def test_valid_pod():
    assert validate("pods", apply_defaults("pods", pod())) == []


def test_pod_needs_containers():
    assert fields(validate("pods", pod(containers=[]))) == [
        ("spec.containers", "FieldValueRequired")
    ]


def test_container_errors_with_paths():
    errs = validate(
        "pods",
        pod(
            containers=[
                {"name": "a", "image": "x"},
                {"name": "a", "image": ""},
                {
                    "image": "y",
                    "ports": [{"containerPort": 0}, {"containerPort": 80, "protocol": "X"}],
                },
                {"name": "Bad_Name", "image": "z", "imagePullPolicy": "Sometimes"},
            ]
        ),
    )
    assert fields(errs) == [
        ("spec.containers[1].image", "FieldValueRequired"),
        ("spec.containers[1].name", "FieldValueDuplicate"),
        ("spec.containers[2].name", "FieldValueRequired"),
        ("spec.containers[2].ports[0].containerPort", "FieldValueInvalid"),
        ("spec.containers[2].ports[1].protocol", "FieldValueNotSupported"),
        ("spec.containers[3].name", "FieldValueInvalid"),
        ("spec.containers[3].imagePullPolicy", "FieldValueNotSupported"),
    ]
    assert str(errs[3]) == (
        "spec.containers[2].ports[0].containerPort: Invalid value: 0: "
        "must be between 1 and 65535, inclusive"
    )


def test_init_and_regular_names_share_a_namespace():
    spec = pod(initContainers=[{"name": "main", "image": "x"}])
    assert fields(validate("pods", spec)) == [("spec.containers[0].name", "FieldValueDuplicate")]


def test_names():
    bad = pod()
    bad["metadata"]["name"] = "Not_OK"
    errs = validate("pods", bad)
    assert fields(errs) == [("metadata.name", "FieldValueInvalid")]
    assert str(errs[0]) == (
        'metadata.name: Invalid value: "Not_OK": a lowercase RFC 1123 subdomain must consist of'
        " lower case alphanumeric characters, '-' or '.', and must start and end with an"
        " alphanumeric character (e.g. 'example.com', regex used for validation is"
        " '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
    ns = {"metadata": {"name": "a.b"}}
    errs = validate("namespaces", ns)
    assert "(e.g. 'my-name',  or '123-abc', regex used" in str(errs[0])
    missing = validate("pods", {"metadata": {"namespace": "default"}, "spec": pod()["spec"]})
    assert str(missing[0]) == "metadata.name: Required value: name or generateName is required"
    assert fields(validate("pods", {"metadata": {"name": "p"}, "spec": pod()["spec"]})) == [
        ("metadata.namespace", "FieldValueRequired")
    ]
    assert fields(validate("nodes", {"metadata": {"name": "n", "namespace": "x"}})) == [
        ("metadata.namespace", "FieldValueForbidden")
    ]
    assert validate("nodes", {"metadata": {"name": "node-1.example.com"}}) == []


def test_labels():
    obj = pod()
    obj["metadata"]["labels"] = {"app": "web", "bad key!": "v", "ok": "not ok value"}
    assert fields(validate("pods", obj)) == [
        ("metadata.labels", "FieldValueInvalid"),
        ("metadata.labels", "FieldValueInvalid"),
    ]


def test_restart_policy_message():
    errs = validate("pods", pod(restartPolicy="Sometimes"))
    assert str(errs[0]) == (
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: '
        '"Always", "Never", "OnFailure"'
    )


def test_check_raises_422():
    with pytest.raises(StatusError) as info:
        check("pods", pod(containers=[{"name": "c"}]))
    s = info.value.status
    assert s["code"] == 422
    assert s["message"] == 'Pod "p" is invalid: spec.containers[0].image: Required value'
    assert s["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.containers[0].image",
        }
    ]


def test_rbac():
    role = {
        "metadata": {"name": "r", "namespace": "default"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"resources": ["pods"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ],
    }
    assert fields(validate("roles", role)) == [
        ("rules[1].verbs", "FieldValueRequired"),
        ("rules[1].apiGroups", "FieldValueRequired"),
        ("rules[2].nonResourceURLs", "FieldValueInvalid"),
    ]
    cr = {"metadata": {"name": "system:cr"}, "rules": [{"nonResourceURLs": ["/x"], "verbs": ["*"]}]}
    assert validate("clusterroles", cr) == []
    with pytest.raises(StatusError) as info:
        check("roles", role)
    assert info.value.message.startswith('Role.rbac.authorization.k8s.io "r" is invalid: [')
    assert info.value.status["details"]["group"] == "rbac.authorization.k8s.io"


def test_bindings():
    rb = {
        "metadata": {"name": "b", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    assert validate("rolebindings", rb) == []
    crb = {**rb, "metadata": {"name": "b"}}
    crb["subjects"] = [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]
    assert fields(validate("clusterrolebindings", crb)) == [
        ("roleRef.kind", "FieldValueNotSupported"),
        ("subjects[0].namespace", "FieldValueRequired"),
        ("subjects[1].kind", "FieldValueNotSupported"),
    ]


def test_reviews():
    assert fields(validate("selfsubjectaccessreviews", {"spec": {}})) == [
        ("spec.resourceAttributes", "FieldValueInvalid")
    ]
    ok = {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}
    assert validate("selfsubjectaccessreviews", ok) == []
    assert fields(validate("subjectaccessreviews", ok)) == [("spec.user", "FieldValueInvalid")]


def test_kind_mismatch():
    obj = pod()
    obj["kind"] = "Node"
    assert fields(validate("pods", obj)) == [("kind", "FieldValueNotSupported")]


def test_pod_update_rules():
    old = apply_defaults("pods", pod(), uid="u")
    new = apply_defaults("pods", pod(), uid="u")
    new["spec"]["containers"][0]["image"] = "busybox:2"
    new["metadata"]["labels"] = {"a": "b"}
    assert validate_update("pods", new, old) == []
    bound = apply_defaults("pods", pod(nodeName="n1"), uid="u")
    assert validate_update("pods", bound, old) == []  # binding sets nodeName once
    moved = apply_defaults("pods", pod(nodeName="n2"), uid="u")
    assert fields(validate_update("pods", moved, bound)) == [("spec", "FieldValueForbidden")]
    changed = apply_defaults("pods", pod(restartPolicy="Never"), uid="u")
    errs = validate_update("pods", changed, old)
    assert str(errs[0]).startswith(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    )
    renamed = apply_defaults("pods", pod(), uid="other")
    assert fields(validate_update("pods", renamed, old)) == [("metadata.uid", "FieldValueInvalid")]
    with pytest.raises(StatusError):
        check_update("pods", changed, old)


def test_binding_role_ref_immutable():
    rb = {
        "metadata": {"name": "b", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
    }
    other = {**rb, "roleRef": {**rb["roleRef"], "name": "r2"}}
    errs = validate_update("rolebindings", other, rb)
    assert [str(e).split(":")[0] for e in errs] == ["roleRef"]
    assert "cannot change roleRef" in str(errs[0])


HOSTILE = ["..", "../etc", "/", "a/b", "a\x00b", ".", "-a", "A"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_names_that_become_node_paths_are_dns_names(bad):
    """Issue 9: the node builds host paths from these; none may hold a path."""
    named = pod(volumes=[{"name": bad, "emptyDir": {}}])
    named["metadata"] = {"name": bad, "namespace": bad}
    named["spec"]["containers"] = [{"name": bad, "image": "busybox"}]
    assert sorted(fields(validate("pods", named))) == [
        ("metadata.name", "FieldValueInvalid"),
        ("metadata.namespace", "FieldValueInvalid"),
        ("spec.containers[0].name", "FieldValueInvalid"),
        ("spec.volumes[0].name", "FieldValueInvalid"),
    ]


def test_non_string_names_are_invalid_not_a_crash():
    bad = pod(volumes=[{"name": 5, "emptyDir": {}}], containers=[{"name": 7, "image": "b"}])
    assert sorted(fields(validate("pods", bad))) == [
        ("spec.containers[0].name", "FieldValueInvalid"),
        ("spec.volumes[0].name", "FieldValueInvalid"),
    ]
