"""Pod Security admission wired into the API server, over real TLS: every write route
of a pod, the status subresource, warnings, audit, namespace labels, and exec/attach on
every route and transport, for an ``edit`` user and for the (exempt) administrator."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from hatchway import pki
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
PODS = "/api/v1/namespaces/default/pods"
HOST_PATH = 'violates PodSecurity "baseline:latest": hostPath volumes (volume "p")'
SPDY = [
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
]
WEBSOCKET = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
]


class Client:
    def __init__(self, server: ApiServer, user: str, groups: tuple[str, ...] = ()) -> None:
        assert server.paths is not None
        ca = server.paths.client_ca
        cert, key = pki.mint_component_cert(ca.parent, user, list(groups))
        self.ctx = tls.client_context(ca_file=ca, cert_data=cert, key_data=key)
        self.base = f"https://127.0.0.1:{server.port}"

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> http.ClientResponse:
        data = b"" if body is None else json.dumps(body).encode()
        return await http.request(
            method,
            self.base + path,
            headers=[("Content-Type", ctype)],
            body=data,
            ssl=self.ctx,
            timeout=10 * SCALE,
        )

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        resp = await self.call(method, path, body, **kw)
        assert 200 <= resp.status < 300, (resp.status, resp.body)
        return json.loads(resp.body)

    async def status(self, method: str, path: str, body: Any = None, **kw: Any) -> dict:
        resp = await self.call(method, path, body, **kw)
        assert resp.status >= 400, (resp.status, resp.body)
        return json.loads(resp.body)

    async def upgrade(self, method: str, path: str, headers: Any) -> http.ClientResponse:
        resp, stream = await http.upgrade(
            method, self.base + path, headers=headers, ssl=self.ctx, timeout=10 * SCALE
        )
        assert stream is None, "unexpected 101"
        return resp


def pod(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    main = {"name": "main", "image": "busybox"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [main], **spec},
    }


def host_path_pod(name: str, namespace: str = "default") -> dict[str, Any]:
    return pod(name, namespace, volumes=[{"name": "p", "hostPath": {"path": "/"}}], nodeName="n1")


def binding(user: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-edit", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


@pytest.fixture
async def server(tmp_path):
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0, scheduler_interval=30)
    srv = ApiServer(config)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
def admin(server: ApiServer) -> Client:
    return Client(server, "admin", ("system:masters",))


@pytest.fixture
async def dev(server: ApiServer, admin: Client) -> Client:
    await admin.ok("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                   binding("dev", "default"))  # fmt: skip
    return Client(server, "dev")


async def namespace(admin: Client, dev: Client, name: str, labels: dict[str, str]) -> str:
    await admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings"
    await admin.ok("POST", path, binding("dev", name))
    return name


def audit_lines(server: ApiServer) -> list[dict[str, Any]]:
    assert server.paths is not None and server.paths.audit is not None
    return [json.loads(x) for x in server.paths.audit.read_text().splitlines()]


async def test_create_refused_with_psa_status(server: ApiServer, dev: Client) -> None:
    body = await dev.status("POST", PODS, host_path_pod("x"))
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'pods "x" is forbidden: {HOST_PATH}',
        "reason": "Forbidden",
        "details": {"name": "x", "kind": "pods"},
        "code": 403,
    }
    assert (await dev.status("GET", f"{PODS}/x"))["code"] == 404
    denied = [x for x in audit_lines(server) if x["user"] == "dev" and x["verb"] == "create"]
    assert denied[-1]["decision"] == "deny" and denied[-1]["code"] == 403
    assert denied[-1]["reason"] == f'pods "x" is forbidden: {HOST_PATH}'


async def test_generate_name_is_resolved_before_the_message(dev: Client) -> None:
    manifest = host_path_pod("")
    manifest["metadata"] = {"generateName": "gen-"}
    body = await dev.status("POST", PODS, manifest)
    name = body["details"]["name"]
    assert name.startswith("gen-") and body["message"] == f'pods "{name}" is forbidden: {HOST_PATH}'


async def test_admin_is_exempt_and_audited_so(server: ApiServer, admin: Client) -> None:
    await admin.ok("POST", PODS, host_path_pod("root-owned"))
    created = [x for x in audit_lines(server) if x["user"] == "admin" and x["verb"] == "create"]
    assert created[-1]["annotations"] == {"pod-security.kubernetes.io/exempt": "user"}


SIGNIFICANT = [
    ("PUT", "application/json"),
    ("PATCH", "application/merge-patch+json"),
    ("PATCH", "application/strategic-merge-patch+json"),
    ("PATCH", "application/json-patch+json"),
    ("PATCH", "application/apply-patch+yaml"),
]


@pytest.mark.parametrize(("method", "ctype"), SIGNIFICANT)
async def test_every_update_route_is_checked(
    admin: Client, dev: Client, method: str, ctype: str
) -> None:
    """A new image for the administrator's hostPath pod: significant, so refused."""
    stored = await admin.ok("POST", PODS, host_path_pod("owned"))
    new = json.loads(json.dumps(stored))
    new["spec"]["containers"][0]["image"] = "busybox:2"
    body: Any = {
        "application/json": new,
        "application/merge-patch+json": {"spec": {"containers": [new["spec"]["containers"][0]]}},
        "application/strategic-merge-patch+json": {
            "spec": {"containers": [{"name": "main", "image": "busybox:2"}]}
        },
        "application/json-patch+json": [
            {"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:2"}
        ],
        "application/apply-patch+yaml": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "owned"},
            "spec": {"containers": [{"name": "main", "image": "busybox:2"}]},
        },
    }[ctype]
    query = "?fieldManager=dev&force=true" if "apply" in ctype else ""
    refused = await dev.status(method, f"{PODS}/owned{query}", body, ctype=ctype)
    assert (
        refused["code"] == 403 and refused["message"] == f'pods "owned" is forbidden: {HOST_PATH}'
    )
    after = await admin.ok("GET", f"{PODS}/owned")
    assert after["spec"]["containers"][0]["image"] == "busybox"


async def test_server_side_apply_create_is_checked(dev: Client) -> None:
    manifest = host_path_pod("applied")
    path = f"{PODS}/applied?fieldManager=dev"
    body = await dev.status("PATCH", path, manifest, ctype="application/apply-patch+yaml")
    assert body["message"] == f'pods "applied" is forbidden: {HOST_PATH}'


async def test_metadata_updates_of_a_violating_pod_pass(admin: Client, dev: Client) -> None:
    """Not significant (PSA skips them): labels by a user, status by the node."""
    await admin.ok("POST", PODS, host_path_pod("owned"))
    patch = {"metadata": {"labels": {"touched": "yes"}}}
    await dev.ok("PATCH", f"{PODS}/owned", patch, ctype="application/merge-patch+json")
    status = {"status": {"phase": "Running"}}
    await admin.ok("PATCH", f"{PODS}/owned/status", status, ctype="application/merge-patch+json")
    await dev.ok("DELETE", f"{PODS}/owned")


async def test_status_subresource_cannot_change_the_spec(admin: Client) -> None:
    stored = await admin.ok("POST", PODS, pod("plain"))
    sneaky = json.loads(json.dumps(stored))
    sneaky["spec"]["volumes"] = [{"name": "p", "hostPath": {"path": "/"}}]
    sneaky["status"] = {"phase": "Running"}
    after = await admin.ok("PUT", f"{PODS}/plain/status", sneaky)
    assert after["status"]["phase"] == "Running" and "volumes" not in after["spec"]


async def test_warn_and_audit_labels(server: ApiServer, admin: Client, dev: Client) -> None:
    labels = {"pod-security.kubernetes.io/warn": "restricted"}
    labels["pod-security.kubernetes.io/audit"] = "restricted"
    ns = await namespace(admin, dev, "watched", labels)
    resp = await dev.call("POST", f"/api/v1/namespaces/{ns}/pods", pod("w", ns))
    assert resp.status == 201
    warnings = [v for k, v in resp.headers if k.lower() == "warning"]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        '299 - "would violate PodSecurity \\"restricted:latest\\": allowPrivilegeEscalation !='
        ' false (container \\"main\\" must set securityContext.allowPrivilegeEscalation=false)'
    )
    line = [x for x in audit_lines(server) if x["name"] == "" and x["namespace"] == ns][-1]
    notes = line["annotations"]
    assert notes["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest"
    assert notes["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    )


async def test_restricted_namespace(admin: Client, dev: Client) -> None:
    ns = await namespace(admin, dev, "strict", {"pod-security.kubernetes.io/enforce": "restricted"})
    body = await dev.status("POST", f"/api/v1/namespaces/{ns}/pods", pod("root", ns))
    assert body["message"].startswith(
        'pods "root" is forbidden: violates PodSecurity "restricted:latest":'
        " allowPrivilegeEscalation != false"
    )


async def test_namespace_labels_are_validated(admin: Client) -> None:
    bad = {"metadata": {"name": "odd", "labels": {"pod-security.kubernetes.io/warn": "loose"}}}
    body = await admin.status("POST", "/api/v1/namespaces", bad)
    assert body["code"] == 422 and body["message"] == (
        'Namespace "odd" is invalid: metadata.labels[pod-security.kubernetes.io/warn]: Invalid'
        ' value: "loose": must be one of privileged, baseline, restricted'
    )
    await admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "odd"}})
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce-version": "1.30"}}}
    body = await admin.status(
        "PATCH", "/api/v1/namespaces/odd", patch, ctype="application/merge-patch+json"
    )
    assert body["code"] == 422


async def test_raising_enforce_warns_of_existing_pods(admin: Client, dev: Client) -> None:
    for name in ("b", "a", "c"):
        await admin.ok("POST", PODS, pod(name))
    await admin.ok("POST", PODS, host_path_pod("h"))
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    resp = await admin.call(
        "PATCH", "/api/v1/namespaces/default", patch, ctype="application/merge-patch+json"
    )
    assert resp.status == 200
    warnings = [v for k, v in resp.headers if k.lower() == "warning"]
    root = "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true,"
    assert warnings == [
        '299 - "existing pods in namespace \\"default\\" violate the new PodSecurity enforce'
        ' level \\"restricted:latest\\""',
        f'299 - "a (and 2 other pods): {root} seccompProfile"',
        '299 - "h: allowPrivilegeEscalation != false, unrestricted capabilities, restricted'
        ' volume types, runAsNonRoot != true, seccompProfile"',
    ]


EXEC = "/api/v1/namespaces/default/pods/owned/exec?command=id&container=main&stdout=true"
ATTACH = "/api/v1/namespaces/default/pods/owned/attach?container=main&stdout=true"


LEGACY = "/proxy/minions/n1/exec/default/owned/main?command=id&output=1"


@pytest.mark.parametrize("path", [EXEC, ATTACH, LEGACY], ids=["exec", "attach", "legacy"])
@pytest.mark.parametrize(
    ("method", "headers"), [("POST", SPDY), ("GET", WEBSOCKET)], ids=["spdy", "websocket"]
)
async def test_exec_refused_into_a_pod_the_user_could_not_create(
    server: ApiServer, admin: Client, dev: Client, path: str, method: str, headers: Any
) -> None:
    await admin.ok("POST", PODS, host_path_pod("owned"))
    resp = await dev.upgrade(method, path, headers)
    assert resp.status == 403
    assert json.loads(resp.body)["message"] == (
        f'pods "owned" is forbidden: cannot exec into or attach to a pod that {HOST_PATH}'
    )
    line = [x for x in audit_lines(server) if x["user"] == "dev"][-1]
    assert line["decision"] == "deny" and "violates PodSecurity" in line["reason"]
    admitted = await admin.upgrade(method, path, headers)  # exempt: on to the (absent) node
    assert admitted.status == 500 and b"error dialing backend" in admitted.body


async def test_exec_follows_the_namespace_level(admin: Client, dev: Client) -> None:
    """A pod created before the namespace went restricted is out of the user's reach."""
    ns = await namespace(admin, dev, "later", {})
    await dev.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("mine", ns, nodeName="n1"))
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    await admin.ok("PATCH", f"/api/v1/namespaces/{ns}", patch, ctype="application/merge-patch+json")
    path = f"/api/v1/namespaces/{ns}/pods/mine/exec?command=id&container=main&stdout=true"
    resp = await dev.upgrade("POST", path, SPDY)
    assert resp.status == 403 and (
        b'cannot exec into or attach to a pod that violates PodSecurity \\"restricted:latest\\"'
        in resp.body
    )
