"""Discovery documents as kubectl reads them."""

from __future__ import annotations

from hatchway.api import resources as r


def test_api_versions():
    assert r.api_versions() == {"kind": "APIVersions", "versions": ["v1"]}
    doc = r.api_versions("10.0.0.1:6443")
    assert doc["serverAddressByClientCIDRs"] == [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}
    ]


def test_api_group_list():
    doc = r.api_group_list()
    assert list(doc) == ["kind", "apiVersion", "groups"]
    assert [g["name"] for g in doc["groups"]] == [
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
    ]
    rbac = doc["groups"][3]
    assert rbac == {
        "name": "rbac.authorization.k8s.io",
        "versions": [{"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"},
    }
    assert r.api_group("rbac.authorization.k8s.io")["kind"] == "APIGroup"


def _by_name(doc):
    return {e["name"]: e for e in doc["resources"]}


def test_core_v1():
    doc = r.api_resource_list("", "v1")
    assert doc["groupVersion"] == "v1" and doc["kind"] == "APIResourceList"
    entries = _by_name(doc)
    assert entries["pods"] == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        "shortNames": ["po"],
        "categories": ["all"],
    }
    assert entries["pods/exec"] == {
        "name": "pods/exec",
        "singularName": "",
        "namespaced": True,
        "kind": "PodExecOptions",
        "verbs": ["create", "get"],
    }
    assert entries["pods/attach"]["verbs"] == ["create", "get"]
    assert entries["pods/log"]["verbs"] == ["get"] and entries["pods/log"]["kind"] == "Pod"
    assert entries["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert entries["namespaces"]["shortNames"] == ["ns"]
    assert entries["namespaces"]["namespaced"] is False
    assert entries["nodes"]["shortNames"] == ["no"]
    assert "nodes/status" in entries
    assert "roles" not in entries


def test_rbac_and_authorization():
    rbac = _by_name(r.api_resource_list("rbac.authorization.k8s.io", "v1"))
    assert sorted(rbac) == ["clusterrolebindings", "clusterroles", "rolebindings", "roles"]
    assert rbac["roles"]["namespaced"] and not rbac["clusterroles"]["namespaced"]
    assert "shortNames" not in rbac["roles"]
    authz = _by_name(r.api_resource_list("authorization.k8s.io", "v1"))
    assert authz["selfsubjectaccessreviews"]["verbs"] == ["create"]
    assert authz["subjectaccessreviews"]["kind"] == "SubjectAccessReview"
    assert r.api_resource_list("apps", "v1") is None


def test_version():
    v = r.version_info(platform="linux/arm64")
    assert (v["major"], v["minor"], v["gitVersion"]) == ("1", "32", "v1.32.4-hatchway")
    assert v["platform"] == "linux/arm64"
    assert list(v)[:3] == ["major", "minor", "gitVersion"]


def test_lookups():
    assert r.lookup("pods").kind == "Pod"
    assert r.lookup("roles") is None
    assert r.lookup("roles", r.RBAC).namespaced
    for token in ("po", "pod", "pods", "Pod", "pods."):
        assert r.resolve(token.rstrip(".")).name == "pods"
    assert r.resolve("roles.rbac.authorization.k8s.io").name == "roles"
    assert r.resolve("nope") is None
    pods = r.lookup("pods")
    assert pods.subresource("exec").kind == "PodExecOptions"
    assert pods.subresource("eviction") is None
    assert r.lookup("roles", r.RBAC).api_version == "rbac.authorization.k8s.io/v1"
