"""REST semantics of the API server over real TLS: CRUD, conflicts, patches, watches,
selectors, Tables, graceful pod deletion, status subresource, error shapes."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


class Api:
    """A JSON client of the test server with one identity."""

    def __init__(self, server: ApiServer, **creds: Any) -> None:
        pki = server.paths
        assert pki is not None
        self.base = f"https://127.0.0.1:{server.port}"
        self.ctx = tls.client_context(ca_file=pki.client_ca, **creds)

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json", **kw
    ) -> http.ClientResponse:
        data = b"" if body is None else json.dumps(body).encode()
        headers = [("Content-Type", ctype), *kw.pop("headers", [])]
        return await http.request(
            method, self.base + path, headers=headers, body=data, ssl=self.ctx, timeout=10 * SCALE
        )

    async def ok(self, method: str, path: str, body: Any = None, **kw) -> dict[str, Any]:
        resp = await self.call(method, path, body, **kw)
        assert 200 <= resp.status < 300, (resp.status, resp.body)
        return json.loads(resp.body)

    async def fail(self, method: str, path: str, body: Any = None, **kw) -> dict[str, Any]:
        resp = await self.call(method, path, body, **kw)
        assert resp.status >= 400, (resp.status, resp.body)
        status = json.loads(resp.body)
        assert status["kind"] == "Status" and status["code"] == resp.status
        assert list(status)[:4] == ["kind", "apiVersion", "metadata", "status"]
        return status


@pytest.fixture
async def server(tmp_path):
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0, scheduler_interval=0.2)
    srv = ApiServer(config)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
def admin(server: ApiServer) -> Api:
    pki = server.paths.client_ca.parent  # type: ignore[union-attr]
    return Api(server, cert_file=pki / "admin.crt", key_file=pki / "admin.key")


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


PODS = "/api/v1/namespaces/default/pods"


async def test_create_get_list_and_errors(admin: Api) -> None:
    created = await admin.ok("POST", PODS, pod("web"))
    assert created["metadata"]["resourceVersion"]
    assert created["metadata"]["uid"] and created["status"]["phase"] == "Pending"
    got = await admin.ok("GET", f"{PODS}/web")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    listed = await admin.ok("GET", PODS)
    assert listed["kind"] == "PodList" and listed["metadata"]["resourceVersion"]
    assert [p["metadata"]["name"] for p in listed["items"]] == ["web"]
    dup = await admin.fail("POST", PODS, pod("web"))
    assert dup["reason"] == "AlreadyExists" and dup["message"] == 'pods "web" already exists'
    missing = await admin.fail("GET", f"{PODS}/nope")
    assert missing["code"] == 404 and missing["message"] == 'pods "nope" not found'
    bad = await admin.fail("POST", PODS, {"metadata": {"name": "x"}, "spec": {"containers": []}})
    assert bad["code"] == 422 and bad["reason"] == "Invalid"
    nons = await admin.fail("POST", "/api/v1/namespaces/ghost/pods", pod("x"))
    assert nons["code"] == 404 and 'namespaces "ghost" not found' in nons["message"]
    wrong = await admin.fail("PUT", f"{PODS}", pod("web"))
    assert wrong["code"] == 405
    garbage = await admin.call("POST", PODS, None)
    assert garbage.status == 400


async def test_update_conflict_and_status_subresource(admin: Api) -> None:
    first = await admin.ok("POST", PODS, pod("web"))
    changed = dict(first, metadata=dict(first["metadata"], labels={"app": "web", "v": "2"}))
    second = await admin.ok("PUT", f"{PODS}/web", changed)
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale = await admin.fail("PUT", f"{PODS}/web", changed)  # first's resourceVersion
    assert stale["reason"] == "Conflict" and stale["code"] == 409
    # PUT of the main resource keeps the status; /status changes only the status.
    second["status"] = {"phase": "Running"}
    kept = await admin.ok("PUT", f"{PODS}/web", second)
    assert kept["status"]["phase"] == "Pending"
    kept["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    kept["metadata"]["labels"] = {"ignored": "yes"}
    running = await admin.ok("PUT", f"{PODS}/web/status", kept)
    assert running["status"]["phase"] == "Running"
    assert running["metadata"]["labels"] == {"app": "web", "v": "2"}
    spec_change = dict(running, spec=dict(running["spec"], restartPolicy="Never"))
    forbidden = await admin.fail("PUT", f"{PODS}/web", spec_change)
    assert forbidden["code"] == 422


async def test_patch_kinds(admin: Api) -> None:
    await admin.ok("POST", PODS, pod("web"))
    merged = await admin.ok(
        "PATCH",
        f"{PODS}/web",
        {"metadata": {"labels": {"m": "1"}}},
        ctype="application/merge-patch+json",
    )
    assert merged["metadata"]["labels"] == {"app": "web", "m": "1"}
    strategic = await admin.ok(
        "PATCH",
        f"{PODS}/web",
        {"spec": {"containers": [{"name": "main", "image": "busybox:1"}]}},
        ctype="application/strategic-merge-patch+json",
    )
    assert strategic["spec"]["containers"][0]["image"] == "busybox:1"
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    patched = await admin.ok("PATCH", f"{PODS}/web", ops, ctype="application/json-patch+json")
    assert patched["metadata"]["annotations"] == {"a": "b"}
    # server-side apply (tests/apiserver/test_apply.py) needs a field manager
    apply = await admin.fail("PATCH", f"{PODS}/web", {}, ctype="application/apply-patch+yaml")
    assert (apply["code"], apply["reason"]) == (422, "Invalid")
    failing = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    assert (await admin.fail("PATCH", f"{PODS}/web", failing, ctype="application/json-patch+json"))[
        "code"
    ] == 422
    stale = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    conflict = await admin.fail("PATCH", f"{PODS}/web", stale, ctype="application/merge-patch+json")
    assert conflict["reason"] == "Conflict"
    status = await admin.ok(
        "PATCH",
        f"{PODS}/web/status",
        {"status": {"phase": "Running"}},
        ctype="application/merge-patch+json",
    )
    assert status["status"]["phase"] == "Running"


async def test_selectors_and_table(admin: Api) -> None:
    for name in ("a", "b", "c"):
        await admin.ok("POST", PODS, pod(name))
    only_b = await admin.ok("GET", f"{PODS}?labelSelector=app%3Db")
    assert [p["metadata"]["name"] for p in only_b["items"]] == ["b"]
    not_a = await admin.ok("GET", f"{PODS}?labelSelector=app%21%3Da")
    assert [p["metadata"]["name"] for p in not_a["items"]] == ["b", "c"]
    by_field = await admin.ok("GET", f"{PODS}?fieldSelector=metadata.name%3Dc")
    assert [p["metadata"]["name"] for p in by_field["items"]] == ["c"]
    bad = await admin.fail("GET", f"{PODS}?labelSelector=%3D%3D%3D")
    assert bad["code"] == 400
    all_ns = await admin.ok("GET", "/api/v1/pods")
    assert len(all_ns["items"]) == 3
    tab = await admin.ok("GET", PODS, headers=[("Accept", TABLE)])
    assert tab["kind"] == "Table"
    assert [c["name"] for c in tab["columnDefinitions"]][:3] == ["Name", "Ready", "Status"]
    assert [r["cells"][0] for r in tab["rows"]] == ["a", "b", "c"]
    one = await admin.ok("GET", f"{PODS}/a", headers=[("Accept", TABLE)])
    assert one["kind"] == "Table" and len(one["rows"]) == 1


async def _watch_lines(admin: Api, path: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with await http.stream("GET", admin.base + path, ssl=admin.ctx) as resp:
        assert resp.status == 200
        buf = b""
        async for chunk in resp:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                events.append(json.loads(line))
            if len(events) >= count:
                return events
    return events


async def test_watch_from_resource_version_and_live(admin: Api) -> None:
    first = await admin.ok("POST", PODS, pod("a"))
    rv = first["metadata"]["resourceVersion"]
    await admin.ok("POST", PODS, pod("b"))
    watcher = asyncio.ensure_future(
        _watch_lines(admin, f"{PODS}?watch=true&resourceVersion={rv}&labelSelector=app%3Db", 2)
    )
    await asyncio.sleep(0.2)
    await admin.ok("DELETE", f"{PODS}/b")
    events = await asyncio.wait_for(watcher, 10 * SCALE)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("DELETED", "b"),
    ]
    timed = await asyncio.wait_for(_watch_lines(admin, f"{PODS}?watch=1&timeoutSeconds=1", 99), 10)
    assert [e["type"] for e in timed] == ["ADDED"]  # the synthetic ADDED for "a", then the end


async def test_graceful_pod_deletion(admin: Api) -> None:
    unbound = await admin.ok("POST", PODS, pod("pending"))
    gone = await admin.ok("DELETE", f"{PODS}/pending")
    assert gone["metadata"]["uid"] == unbound["metadata"]["uid"]
    assert (await admin.fail("GET", f"{PODS}/pending"))["code"] == 404
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    await admin.ok("POST", "/api/v1/nodes", node)
    await admin.ok("POST", PODS, pod("bound", nodeName="n1"))
    marked = await admin.ok("DELETE", f"{PODS}/bound", {"gracePeriodSeconds": 30})
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 30
    still = await admin.ok("GET", f"{PODS}/bound")
    assert still["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    wrong_uid = {"gracePeriodSeconds": 0, "preconditions": {"uid": "not-it"}}
    precondition = await admin.fail("DELETE", f"{PODS}/bound", wrong_uid)
    assert precondition["reason"] == "Conflict" and "Precondition failed" in precondition["message"]
    right_uid = {"gracePeriodSeconds": 0, "preconditions": {"uid": still["metadata"]["uid"]}}
    await admin.ok("DELETE", f"{PODS}/bound", right_uid)
    assert (await admin.fail("GET", f"{PODS}/bound"))["code"] == 404


async def test_namespaces_and_rbac_crud(admin: Api) -> None:
    names = {n["metadata"]["name"] for n in (await admin.ok("GET", "/api/v1/namespaces"))["items"]}
    assert {"default", "kube-system"} <= names
    await admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    base = "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles"
    created = await admin.ok("POST", base, role)
    assert created["metadata"]["namespace"] == "team"
    assert (await admin.ok("GET", f"{base}/r"))["rules"][0]["verbs"] == ["get"]
    protected = await admin.fail("DELETE", "/api/v1/namespaces/default")
    assert protected["code"] == 403
    await admin.ok("DELETE", "/api/v1/namespaces/team")
    assert (await admin.fail("GET", f"{base}/r"))["code"] == 404
    crs = await admin.ok("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles")
    assert {"cluster-admin", "admin", "edit", "view"} <= {
        r["metadata"]["name"] for r in crs["items"]
    }


async def test_node_agents_write_only_their_own_objects(server: ApiServer, admin: Api) -> None:
    from hatchway import pki

    ca = server.paths.client_ca.parent  # type: ignore[union-attr]
    cert, key = pki.mint_component_cert(ca, "system:node:n1", ["system:nodes"])
    n1 = Api(server, cert_data=cert, key_data=key)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    await n1.ok("POST", "/api/v1/nodes", node)
    other = await n1.fail("POST", "/api/v1/nodes", {**node, "metadata": {"name": "n2"}})
    assert other["code"] == 403
    await admin.ok("POST", "/api/v1/nodes", {**node, "metadata": {"name": "n2"}})
    beat = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    patched = await n1.ok(
        "PATCH", "/api/v1/nodes/n1/status", beat, ctype="application/merge-patch+json"
    )
    assert patched["status"]["conditions"][0]["status"] == "True"
    assert (
        await n1.fail(
            "PATCH", "/api/v1/nodes/n2/status", beat, ctype="application/merge-patch+json"
        )
    )["code"] == 403
    await admin.ok("POST", PODS, pod("mine", nodeName="n1"))
    await admin.ok("POST", PODS, pod("theirs", nodeName="n2"))
    mine = {"metadata": {"name": "mine"}, "status": {"phase": "Running"}}
    assert (await n1.ok("PUT", f"{PODS}/mine/status", mine))["status"]["phase"] == "Running"
    theirs = {"metadata": {"name": "theirs"}, "status": {"phase": "Running"}}
    assert (await n1.fail("PUT", f"{PODS}/theirs/status", theirs))["code"] == 403
    assert (await n1.fail("DELETE", f"{PODS}/theirs?gracePeriodSeconds=0"))["code"] == 403
    await n1.ok("DELETE", f"{PODS}/mine?gracePeriodSeconds=0")
    assert (await n1.fail("PUT", f"{PODS}/theirs", pod("theirs")))["code"] == 403
    listed = await n1.ok("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1")
    assert listed["items"] == []
