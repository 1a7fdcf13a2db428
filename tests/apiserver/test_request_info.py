from __future__ import annotations

import pytest

from hatchway.apiserver.request_info import (
    RequestInfo,
    parse_query,
    parse_request_info,
    query_bool,
)

POD = "/api/v1/namespaces/default/pods"

# (method, path, query) -> (is_resource, verb, group, version, ns, resource, sub, name)
TABLE = [
    ("GET", POD, "", (True, "list", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=true", (True, "watch", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=1", (True, "watch", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=", (True, "watch", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=false", (True, "list", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=0", (True, "list", "", "v1", "default", "pods", "", "")),
    ("GET", POD, "watch=False", (True, "list", "", "v1", "default", "pods", "", "")),
    (
        "GET",
        "/api/v1/watch/namespaces/default/pods",
        "",
        (True, "watch", "", "v1", "default", "pods", "", ""),
    ),
    (
        "GET",
        "/api/v1/watch/namespaces/default/pods/web",
        "",
        (True, "watch", "", "v1", "default", "pods", "", "web"),
    ),
    ("GET", POD + "/web", "", (True, "get", "", "v1", "default", "pods", "", "web")),
    ("HEAD", POD + "/web", "", (True, "get", "", "v1", "default", "pods", "", "web")),
    ("POST", POD, "", (True, "create", "", "v1", "default", "pods", "", "")),
    ("PUT", POD + "/web", "", (True, "update", "", "v1", "default", "pods", "", "web")),
    ("PATCH", POD + "/web", "", (True, "patch", "", "v1", "default", "pods", "", "web")),
    ("DELETE", POD + "/web", "", (True, "delete", "", "v1", "default", "pods", "", "web")),
    ("DELETE", POD, "", (True, "deletecollection", "", "v1", "default", "pods", "", "")),
    ("GET", POD + "/web/log", "", (True, "get", "", "v1", "default", "pods", "log", "web")),
    (
        "PUT",
        POD + "/web/status",
        "",
        (True, "update", "", "v1", "default", "pods", "status", "web"),
    ),
    # connect subresources: create whatever the method
    (
        "GET",
        POD + "/web/exec",
        "command=ls",
        (True, "create", "", "v1", "default", "pods", "exec", "web"),
    ),
    (
        "POST",
        POD + "/web/exec",
        "command=ls",
        (True, "create", "", "v1", "default", "pods", "exec", "web"),
    ),
    (
        "GET",
        POD + "/web/attach",
        "",
        (True, "create", "", "v1", "default", "pods", "attach", "web"),
    ),
    (
        "GET",
        POD + "/web/portforward",
        "",
        (True, "create", "", "v1", "default", "pods", "portforward", "web"),
    ),
    (
        "DELETE",
        POD + "/web/proxy/x",
        "",
        (True, "create", "", "v1", "default", "pods", "proxy", "web"),
    ),
    (
        "GET",
        "/api/v1/nodes/n1/proxy/exec/default/web/main",
        "",
        (True, "create", "", "v1", "", "nodes", "proxy", "n1"),
    ),
    # cluster-scoped and namespaces themselves
    ("GET", "/api/v1/nodes", "", (True, "list", "", "v1", "", "nodes", "", "")),
    ("GET", "/api/v1/nodes/n1", "", (True, "get", "", "v1", "", "nodes", "", "n1")),
    ("GET", "/api/v1/namespaces", "", (True, "list", "", "v1", "", "namespaces", "", "")),
    ("GET", "/api/v1/namespaces/dev", "", (True, "get", "", "v1", "dev", "namespaces", "", "dev")),
    (
        "PUT",
        "/api/v1/namespaces/dev/finalize",
        "",
        (True, "update", "", "v1", "dev", "namespaces", "finalize", "dev"),
    ),
    (
        "PUT",
        "/api/v1/namespaces/dev/status",
        "",
        (True, "update", "", "v1", "dev", "namespaces", "status", "dev"),
    ),
    # groups
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/roles/r1",
        "",
        (True, "get", "rbac.authorization.k8s.io", "v1", "dev", "roles", "", "r1"),
    ),
    (
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "",
        (True, "create", "authorization.k8s.io", "v1", "", "selfsubjectaccessreviews", "", ""),
    ),
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "watch=true",
        (True, "watch", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", ""),
    ),
    # fieldSelector on metadata.name names the object
    (
        "GET",
        POD,
        "fieldSelector=metadata.name%3Dweb",
        (True, "list", "", "v1", "default", "pods", "", "web"),
    ),
    (
        "GET",
        POD,
        "fieldSelector=metadata.name%3D%3Dweb&watch=1",
        (True, "watch", "", "v1", "default", "pods", "", "web"),
    ),
    (
        "GET",
        POD,
        "fieldSelector=metadata.name%3Dweb,spec.nodeName%3Dn",
        (True, "list", "", "v1", "default", "pods", "", ""),
    ),
    (
        "GET",
        POD,
        "fieldSelector=spec.nodeName%3Dn",
        (True, "list", "", "v1", "default", "pods", "", ""),
    ),
]

NON_RESOURCE = [
    ("GET", "/version", "get"),
    ("GET", "/healthz", "get"),
    ("GET", "/api", "get"),
    ("GET", "/api/v1", "get"),
    ("GET", "/apis", "get"),
    ("GET", "/apis/rbac.authorization.k8s.io", "get"),
    ("GET", "/apis/rbac.authorization.k8s.io/v1", "get"),
    ("POST", "/openapi/v2", "post"),
    ("GET", "/", "get"),
    ("DELETE", "/foo/bar/baz", "delete"),
]


@pytest.mark.parametrize(("method", "path", "query", "want"), TABLE)
def test_resource_requests(method, path, query, want) -> None:
    info = parse_request_info(method, path, query)
    got = (
        info.is_resource_request,
        info.verb,
        info.api_group,
        info.api_version,
        info.namespace,
        info.resource,
        info.subresource,
        info.name,
    )
    assert got == want
    assert info.api_prefix == ("api" if not info.api_group else "apis")


@pytest.mark.parametrize(("method", "path", "verb"), NON_RESOURCE)
def test_non_resource_requests(method, path, verb) -> None:
    info = parse_request_info(method, path, "")
    assert info == RequestInfo(is_resource_request=False, path=path, verb=verb)


def test_exec_get_is_create_not_get() -> None:
    """The project rule, stricter than Kubernetes 1.32: WebSocket GET exec is create."""
    for method in ("GET", "POST", "PUT", "HEAD"):
        info = parse_request_info(method, POD + "/web/exec", "command=sh&tty=true")
        assert info.verb == "create"
        assert info.resource_path == "pods/exec"
        assert info.is_connect


def test_parts_and_resource_path() -> None:
    info = parse_request_info("GET", POD + "/web/proxy/a/b", None)
    assert info.parts == ("pods", "web", "proxy", "a", "b")
    assert info.resource_path == "pods/proxy"
    assert parse_request_info("GET", POD + "/web", None).resource_path == "pods"


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/minions/node-1.example.com/exec/default/web/main",
        "/proxy/nodes/node-1.example.com/exec/default/web/main",
        "/api/v1beta3/proxy/minions/node-1.example.com/exec/default/web/main",
        "/api/v1/proxy/nodes/node-1.example.com/exec/default/web/main",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_legacy_proxy_exec(path, method) -> None:
    info = parse_request_info(method, path, "command=ls&output=1")
    assert info.is_resource_request
    assert (info.verb, info.resource, info.subresource) == ("create", "pods", "exec")
    assert (info.namespace, info.name, info.container) == ("default", "web", "main")
    assert info.legacy_node == "node-1.example.com"
    assert info.api_group == ""


def test_legacy_attach_and_non_matches() -> None:
    info = parse_request_info("POST", "/proxy/minions/n/attach/ns/p/c", "")
    assert (info.verb, info.resource_path, info.namespace, info.name) == (
        "create",
        "pods/attach",
        "ns",
        "p",
    )
    # wrong action, too few/many parts: not the legacy route
    assert not parse_request_info("GET", "/proxy/minions/n/logs/ns/p/c", "").is_resource_request
    assert not parse_request_info("GET", "/proxy/minions/n/exec/ns/p", "").is_resource_request
    assert not parse_request_info("GET", "/proxy/minions/n/exec/ns/p/c/x", "").legacy_node
    # the Kubernetes proxy verb path with other content stays a nodes proxy request
    info = parse_request_info("GET", "/api/v1/proxy/nodes/n1/stats", "")
    assert (info.verb, info.resource, info.name, info.subresource) == ("proxy", "nodes", "n1", "")


def test_query_in_path_and_mapping_and_percent_decoding() -> None:
    info = parse_request_info("GET", POD + "?watch=true", None)
    assert info.verb == "watch" and info.path == POD
    assert parse_request_info("GET", POD, {"watch": ["1"]}).verb == "watch"
    info = parse_request_info("GET", "/api/v1/namespaces/my%2Dns/pods/a%2Eb", None)
    assert (info.namespace, info.name) == ("my-ns", "a.b")


def test_query_bool_matches_apiserver_rules() -> None:
    assert query_bool(None) is False
    assert query_bool([]) is False
    assert query_bool(["false"]) is False and query_bool(["FALSE"]) is False
    assert query_bool(["0"]) is False
    assert query_bool([""]) is True and query_bool(["True"]) is True
    assert query_bool(["1", "0"]) is True
    assert parse_query("a=1&a=2&b=") == {"a": ["1", "2"], "b": [""]}


def test_special_verb_without_resource_is_not_a_resource() -> None:
    info = parse_request_info("GET", "/api/v1/watch", "")
    assert not info.is_resource_request
