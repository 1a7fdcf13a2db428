"""The API server application over real TLS: discovery and version, authentication (no
anonymous access), access reviews, audit lines, restart with data kept, and the real
kubectl against it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from apiserver.support import TokenServer
from hatchway import pki
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


@pytest.fixture
async def server(token_server: TokenServer) -> ApiServer:
    return await token_server("tok-view,viewer,1\n")


def _ca(server: ApiServer) -> Path:
    assert server.paths is not None
    return server.paths.client_ca


async def get(
    server: ApiServer, path: str, *, creds: dict[str, Any] | None = None, **kw: Any
) -> http.ClientResponse:
    ctx = tls.client_context(ca_file=_ca(server), **(creds or {}))
    return await http.request(
        kw.pop("method", "GET"), f"https://127.0.0.1:{server.port}{path}", ssl=ctx, **kw
    )


def admin_creds(server: ApiServer) -> dict[str, Any]:
    d = _ca(server).parent
    return {"cert_file": d / "admin.crt", "key_file": d / "admin.key"}


async def test_discovery_and_version(server: ApiServer) -> None:
    creds = admin_creds(server)
    version = json.loads((await get(server, "/version?timeout=5s", creds=creds)).body)
    assert (version["major"], version["minor"]) == ("1", "32")
    api = await get(server, "/api", creds=creds, headers=[("Accept", AGGREGATED)])
    assert api.header("content-type") == "application/json"
    assert json.loads(api.body)["kind"] == "APIVersions"
    groups = json.loads((await get(server, "/apis", creds=creds)).body)
    names = [g["name"] for g in groups["groups"]]
    assert names == [
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
    ]
    leases = json.loads((await get(server, "/apis/coordination.k8s.io/v1", creds=creds)).body)
    assert [(r["name"], r["kind"], r["namespaced"]) for r in leases["resources"]] == [
        ("leases", "Lease", True)
    ]
    core = json.loads((await get(server, "/api/v1", creds=creds)).body)
    by_name = {r["name"]: r for r in core["resources"]}
    assert {"pods", "pods/exec", "pods/attach", "pods/log", "nodes", "namespaces"} <= set(by_name)
    assert "create" in by_name["pods/exec"]["verbs"]
    for path in (
        "/apis/rbac.authorization.k8s.io/v1",
        "/apis/authorization.k8s.io/v1",
        "/apis/rbac.authorization.k8s.io",
    ):
        assert (await get(server, path, creds=creds)).status == 200, path
    for path in ("/healthz", "/livez", "/readyz"):
        resp = await get(server, path, creds=creds)
        assert (resp.status, resp.body) == (200, b"ok")
    index = json.loads((await get(server, "/openapi/v3", creds=creds)).body)
    core = index["paths"]["api/v1"]["serverRelativeURL"]
    doc = json.loads((await get(server, core, creds=creds)).body)
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert patch["parameters"][0]["name"] == "fieldValidation"
    v2 = await get(server, "/openapi/v2", creds=creds)
    assert (v2.status, v2.header("content-type")) == (200, "application/json")
    assert json.loads(v2.body)["swagger"] == "2.0"
    for path in ("/openapi/v3/apis/apps/v1", "/apis/apps/v1", "/nothing"):
        resp = await get(server, path, creds=creds)
        assert resp.status == 404 and json.loads(resp.body)["reason"] == "NotFound"


async def test_no_anonymous_access(server: ApiServer) -> None:
    for path in ("/version", "/api", "/healthz", "/api/v1/namespaces/default/pods"):
        resp = await get(server, path)
        assert resp.status == 401, path
        body = json.loads(resp.body)
        assert (body["reason"], body["message"], body["code"]) == (
            "Unauthorized",
            "Unauthorized",
            401,
        )
    bad = await get(server, "/api", headers=[("Authorization", "Bearer nope")])
    assert bad.status == 401
    good = await get(server, "/api", headers=[("Authorization", "Bearer tok-view")])
    assert good.status == 200  # discovery for every authenticated user
    denied = await get(
        server, "/api/v1/namespaces/default/pods", headers=[("Authorization", "Bearer tok-view")]
    )
    assert denied.status == 403
    assert json.loads(denied.body)["message"] == (
        'pods is forbidden: User "viewer" cannot list resource "pods" in API group ""'
        ' in the namespace "default"'
    )


async def test_access_reviews(server: ApiServer) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": "default",
                "verb": "create",
                "resource": "pods",
                "subresource": "exec",
            }
        },
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    body = json.dumps(review).encode()
    headers = [("Content-Type", "application/json")]
    as_admin = await get(
        server, path, method="POST", body=body, headers=headers, creds=admin_creds(server)
    )
    assert as_admin.status == 201 and json.loads(as_admin.body)["status"]["allowed"] is True
    viewer = [*headers, ("Authorization", "Bearer tok-view")]
    as_viewer = await get(server, path, method="POST", body=body, headers=viewer)
    assert as_viewer.status == 201 and json.loads(as_viewer.body)["status"]["allowed"] is False
    sar = dict(review, kind="SubjectAccessReview")
    sar["spec"] = dict(review["spec"], user="someone", groups=["system:masters"])
    resp = await get(
        server,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        method="POST",
        body=json.dumps(sar).encode(),
        headers=headers,
        creds=admin_creds(server),
    )
    assert json.loads(resp.body)["status"]["allowed"] is True
    no_sar = await get(
        server,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        method="POST",
        body=json.dumps(sar).encode(),
        headers=viewer,
    )
    assert no_sar.status == 403


async def test_audit_one_line_per_request(server: ApiServer) -> None:
    await get(server, "/api/v1/namespaces", creds=admin_creds(server))
    await get(server, "/api", headers=[("Authorization", "Bearer tok-view"), ("User-Agent", "t/1")])
    await get(server, "/api")
    assert server.paths is not None and server.paths.audit is not None
    lines = [json.loads(x) for x in server.paths.audit.read_text().splitlines()]
    assert [(x["user"], x["decision"], x["code"]) for x in lines] == [
        ("admin", "allow", 200),
        ("viewer", "allow", 200),
        ("", "deny", 401),
    ]
    assert lines[0]["verb"] == "list" and lines[0]["resource"] == "namespaces"
    assert lines[1]["user_agent"] == "t/1" and "tok-view" not in json.dumps(lines)


async def test_restart_keeps_data(tmp_path: Path) -> None:
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "keep"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    async with ApiServer(config) as first:
        creds = admin_creds(first)
        resp = await get(
            first,
            "/api/v1/namespaces/default/pods",
            method="POST",
            body=json.dumps(pod).encode(),
            headers=[("Content-Type", "application/json")],
            creds=creds,
        )
        assert resp.status == 201
        uid = json.loads(resp.body)["metadata"]["uid"]
        ca_before = _ca(first).read_bytes()
    async with ApiServer(config) as second:
        assert _ca(second).read_bytes() == ca_before
        resp = await get(second, "/api/v1/namespaces/default/pods/keep", creds=creds)
        assert resp.status == 200 and json.loads(resp.body)["metadata"]["uid"] == uid
        namespaces = json.loads((await get(second, "/api/v1/namespaces", creds=creds)).body)
        assert [n["metadata"]["name"] for n in namespaces["items"]].count("default") == 1


# -- the real kubectl ------------------------------------------------------------------


def _kubeconfig(server: ApiServer, home: Path, user: str, groups: list[str]) -> Path:
    ca = _ca(server)
    cert, key = pki.mint_user_cert(ca.parent, user, groups, admin=True)
    (home / f"{user}.crt").write_bytes(cert)
    (home / f"{user}.key").write_bytes(key)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hw",
                "cluster": {
                    "server": f"https://127.0.0.1:{server.port}",
                    "certificate-authority": str(ca),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(home / f"{user}.crt"),
                    "client-key": str(home / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "hw", "context": {"cluster": "hw", "user": user}}],
        "current-context": "hw",
    }
    path = home / f"{user}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def kubectl(kubeconfig: Path, home: Path, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, HOME=str(home), KUBECONFIG=str(kubeconfig))
    proc = await asyncio.create_subprocess_exec(
        "kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60 * SCALE)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_real_kubectl(server: ApiServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    admin = _kubeconfig(server, home, "root", ["system:masters"])
    code, out, err = await kubectl(admin, home, "get", "ns")
    assert code == 0, err
    assert out.split("\n")[0].split() == ["NAME", "STATUS", "AGE"]
    assert {"default", "kube-system"} <= {line.split()[0] for line in out.splitlines()[1:]}
    code, out, err = await kubectl(admin, home, "get", "pods")
    assert code == 0 and "No resources found in default namespace." in err, (out, err)
    manifest = home / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n"
        "  containers:\n  - name: main\n    image: busybox\n"
    )
    code, out, err = await kubectl(admin, home, "create", "-f", str(manifest))
    assert (code, out.strip()) == (0, "pod/x created"), err
    code, out, err = await kubectl(admin, home, "get", "pods")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["x", "0/1", "Pending"], out
    code, out, err = await kubectl(admin, home, "auth", "can-i", "create", "pods/exec")
    assert (code, out.strip()) == (0, "yes"), err
    code, out, err = await kubectl(
        admin, home, "auth", "can-i", "create", "pods", "--subresource=exec"
    )
    assert (code, out.strip()) == (0, "yes"), err
    nobody = _kubeconfig(server, home, "nobody", [])
    code, out, err = await kubectl(
        nobody, home, "auth", "can-i", "create", "pods", "--subresource=exec"
    )
    assert (code, out.strip()) == (1, "no"), err
    code, out, err = await kubectl(nobody, home, "get", "pods")
    assert code == 1 and "Error from server (Forbidden)" in err, err
    code, out, err = await kubectl(admin, home, "delete", "pod", "x")
    assert (code, out.strip()) == (0, 'pod "x" deleted'), err
    code, out, err = await kubectl(admin, home, "get", "pod", "x")
    assert code == 1 and 'pods "x" not found' in err


async def test_admission_refusal_is_audited_as_a_denial(server: ApiServer) -> None:
    """Exec admission refuses after authorisation allowed: the audit line says deny, with
    admission's reason (it said allow with code 403 before). Other failures of an
    authorised request (a missing pod) stay allow."""
    admin = admin_creds(server)
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "priv"},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "main", "image": "x", "securityContext": {"privileged": True}}],
        },
    }
    binding = {
        "metadata": {"name": "viewer-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "viewer"}],
    }
    for path, body in (
        ("/api/v1/namespaces/default/pods", privileged),
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
    ):
        created = await get(
            server, path, creds=admin, method="POST", body=json.dumps(body).encode()
        )
        assert created.status == 201, created.body
    upgrade = [
        ("Authorization", "Bearer tok-view"),
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ]
    exec_path = "/api/v1/namespaces/default/pods/priv/exec?command=sh&stdout=1"
    refused = await get(server, exec_path, method="POST", headers=upgrade)
    assert refused.status == 403
    missing = "/api/v1/namespaces/default/pods/ghost/exec?command=sh&stdout=1"
    assert (await get(server, missing, method="POST", headers=upgrade)).status == 404
    assert server.paths is not None and server.paths.audit is not None
    lines = [json.loads(x) for x in server.paths.audit.read_text().splitlines()]
    (denied,) = [x for x in lines if x["name"] == "priv" and x["resource"] == "pods/exec"]
    reason = 'pods "priv" is forbidden: cannot exec into or attach to a privileged container'
    assert (denied["user"], denied["decision"], denied["code"]) == ("viewer", "deny", 403)
    assert denied["reason"] == reason
    (ghost,) = [x for x in lines if x["name"] == "ghost"]
    assert (ghost["decision"], ghost["code"]) == ("allow", 404)
