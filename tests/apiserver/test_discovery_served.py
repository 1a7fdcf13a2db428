"""Discovery lists only what is served (issue 12, protocol.md 2.9): walking ``/api``,
``/apis`` and every group version's resource list, each advertised resource answers each
advertised verb, and each subresource its verbs, over real TLS as the cluster admin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

NS = "default"
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "probe"},
    "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "9"]}]},
}
_REF = {"apiVersion": "v1", "kind": "Pod", "name": "probe", "namespace": NS}
_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
_BINDING = {
    "subjects": [{"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}],
}
_ACCESS = {"resourceAttributes": {"namespace": NS, "verb": "get", "resource": "pods"}}
#: A body to create for each (group, resource) discovery names; the rest of the verbs
#: act on it.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("", "namespaces"): {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}},
    ("", "nodes"): {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "probe"}},
    ("", "pods"): POD,
    ("", "serviceaccounts"): {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "probe"},
    },
    ("", "events"): {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "probe"},
        "involvedObject": _REF,
        "reason": "Probed",
        "message": "core/v1",
    },
    ("events.k8s.io", "events"): {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "probe-v1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "example.com/probe",
        "reportingInstance": "probe-1",
        "action": "Probing",
        "reason": "Probed",
        "regarding": _REF,
        "note": "events.k8s.io/v1",
        "type": "Normal",
    },
    ("rbac.authorization.k8s.io", "roles"): {"metadata": {"name": "probe"}, "rules": _RULES},
    ("rbac.authorization.k8s.io", "clusterroles"): {
        "metadata": {"name": "probe"},
        "rules": _RULES,
    },
    ("rbac.authorization.k8s.io", "rolebindings"): {
        "metadata": {"name": "probe"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
        **_BINDING,
    },
    ("rbac.authorization.k8s.io", "clusterrolebindings"): {
        "metadata": {"name": "probe"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        **_BINDING,
    },
    ("authorization.k8s.io", "subjectaccessreviews"): {"spec": {"user": "x", **_ACCESS}},
    ("authorization.k8s.io", "selfsubjectaccessreviews"): {"spec": _ACCESS},
    ("authorization.k8s.io", "selfsubjectrulesreviews"): {"spec": {"namespace": NS}},
    ("authentication.k8s.io", "selfsubjectreviews"): {},
    ("coordination.k8s.io", "leases"): {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "probe"},
        "spec": {"holderIdentity": "probe", "leaseDurationSeconds": 15},
    },
}
#: Subresource requests that need more than the object's path.
_SUB_QUERY = {
    "exec": "?command=true&stdout=true",
    "attach": "?stdout=true",
    "log": "",
    "portforward": "?ports=80",
}
_MERGE = [("Content-Type", "application/merge-patch+json")]
_JSON = [("Content-Type", "application/json")]


@pytest.fixture
async def server(tmp_path: Path):
    srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0))
    await srv.start()
    yield srv
    await srv.close()


class Admin:
    def __init__(self, server: ApiServer) -> None:
        assert server.paths is not None
        pki = server.paths.client_ca.parent
        self.ctx = tls.client_context(
            ca_file=server.paths.client_ca, cert_file=pki / "admin.crt", key_file=pki / "admin.key"
        )
        self.base = f"https://127.0.0.1:{server.port}"
        self.calls: list[str] = []

    async def __call__(
        self, method: str, path: str, body: Any = None, headers: Any = None
    ) -> http.ClientResponse:
        self.calls.append(f"{method} {path}")
        data = json.dumps(body).encode() if body is not None else b""
        hdrs = headers if headers is not None else (_JSON if data else [])
        return await http.request(method, self.base + path, ssl=self.ctx, headers=hdrs, body=data)

    async def watch_status(self, path: str) -> int:
        self.calls.append(f"WATCH {path}")
        async with await http.stream("GET", self.base + path, ssl=self.ctx) as answer:
            return answer.status


def _served(answer: http.ClientResponse, what: str) -> None:
    """Anything but "no such resource" or "no such verb"; and no server error."""
    assert answer.status not in (404, 405) and answer.status < 500, (
        what,
        answer.status,
        answer.body[:300],
    )


def _ok(answer: http.ClientResponse, what: str) -> dict[str, Any]:
    assert 200 <= answer.status < 300, (what, answer.status, answer.body[:300])
    return json.loads(answer.body) if answer.body else {}


async def _group_versions(admin: Admin) -> list[str]:
    """Every group version discovery names, each checked to answer."""
    found = [f"/api/{v}" for v in _ok(await admin("GET", "/api"), "/api")["versions"]]
    for group in _ok(await admin("GET", "/apis"), "/apis")["groups"]:
        _ok(await admin("GET", f"/apis/{group['name']}"), group["name"])
        found += [f"/apis/{v['groupVersion']}" for v in group["versions"]]
    return found


async def _exercise(admin: Admin, base: str, entry: dict[str, Any], subs: list[dict[str, Any]]):
    """Every verb of one resource and its subresources, on an object created for it."""
    name, verbs = entry["name"], set(entry["verbs"])
    group = base.split("/")[2] if base.startswith("/apis/") else ""
    body = BODIES[(group, name)]
    scope = f"/namespaces/{NS}" if entry["namespaced"] else ""
    collection = f"{base}{scope}/{name}"
    if verbs == {"create"}:
        _ok(await admin("POST", collection, body), f"create {collection}")
        return
    assert "create" in verbs, name
    _ok(await admin("POST", collection, body), f"create {collection}")
    item = f"{collection}/{body['metadata']['name']}"
    if "get" in verbs:
        _ok(await admin("GET", item), f"get {item}")
    if "list" in verbs:
        _ok(await admin("GET", collection), f"list {collection}")
    if "watch" in verbs:
        assert await admin.watch_status(collection + "?watch=1") == 200, collection
    if "patch" in verbs:
        patch = {"metadata": {"labels": {"probed": "yes"}}}
        _ok(await admin("PATCH", item, patch, _MERGE), f"patch {item}")
    if "update" in verbs:
        current = _ok(await admin("GET", item), f"get {item}")
        _ok(await admin("PUT", item, current), f"update {item}")
    for sub in subs:
        await _exercise_sub(admin, item, sub)
    if "deletecollection" in verbs:
        _ok(await admin("DELETE", collection + "?dryRun=All"), f"deletecollection {collection}")
    if "delete" in verbs:
        _ok(await admin("DELETE", item), f"delete {item}")


async def _exercise_sub(admin: Admin, item: str, sub: dict[str, Any]) -> None:
    part = sub["name"].split("/", 1)[1]
    path = f"{item}/{part}"
    verbs = set(sub["verbs"])
    if part == "status":
        current = _ok(await admin("GET", path), f"get {path}")
        assert "get" in verbs
        if "patch" in verbs:
            _ok(await admin("PATCH", path, {"status": {}}, _MERGE), f"patch {path}")
        if "update" in verbs:
            current = _ok(await admin("GET", path), f"get {path}")
            _ok(await admin("PUT", path, current), f"update {path}")
        return
    if part == "token":
        assert verbs == {"create"}
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        _ok(await admin("POST", path, request), f"create {path}")
        return
    # exec, attach, log, portforward: the pod is not running (no node), so each answers why: a 400,
    # not a 404 (no such resource) nor a 405 (no such verb).
    query = _SUB_QUERY[part]
    for verb in verbs:
        method = {"get": "GET", "create": "POST"}[verb]
        _served(await admin(method, path + query), f"{verb} {path}")


async def test_every_advertised_resource_and_verb_is_served(server: ApiServer) -> None:
    admin = Admin(server)
    advertised: set[str] = set()
    for base in await _group_versions(admin):
        doc = _ok(await admin("GET", base), base)
        entries = [e for e in doc["resources"] if "/" not in e["name"]]
        for entry in entries:
            subs = [e for e in doc["resources"] if e["name"].startswith(entry["name"] + "/")]
            advertised |= {f"{base} {e['name']}" for e in [entry, *subs]}
            await _exercise(admin, base, entry, subs)
    # The walk reached every group version and kind this server has a body for.
    groups = {(b.split("/")[2] if b.startswith("/apis/") else "") for b in advertised}
    assert {group for group, _ in BODIES} == groups
    assert len([a for a in advertised if "/" not in a.split(" ")[1]]) == len(BODIES)
    assert "/api/v1 pods/exec" in advertised and "/api/v1 serviceaccounts/token" in advertised
    assert "/api/v1 pods/portforward" in advertised


async def test_every_group_version_has_an_openapi_document(server: ApiServer) -> None:
    admin = Admin(server)
    index = _ok(await admin("GET", "/openapi/v3"), "/openapi/v3")["paths"]
    for base in await _group_versions(admin):
        url = index[base.lstrip("/")]["serverRelativeURL"]
        doc = _ok(await admin("GET", url), url)
        kinds = {e["kind"] for e in _ok(await admin("GET", base), base)["resources"]}
        gvks = {
            g["kind"]
            for schema in doc["components"]["schemas"].values()
            for g in schema.get("x-kubernetes-group-version-kind", [])
        }
        served = {k for k in kinds if not k.endswith("Options") and k != "TokenRequest"}
        assert served <= gvks, (base, served - gvks)


async def test_unserved_kubernetes_resources_are_404(server: ApiServer) -> None:
    admin = Admin(server)
    for path in (
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/persistentvolumes",
        "/api/v1/namespaces/default/pods/probe/eviction",
        "/api/v1/namespaces/default/pods/probe/ephemeralcontainers",
        "/apis/apps/v1/namespaces/default/deployments",
        "/apis/batch/v1",
    ):
        answer = await admin("GET", path)
        assert answer.status == 404, path
