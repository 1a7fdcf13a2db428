"""SelfSubjectRulesReview (``kubectl auth can-i --list``) and SelfSubjectReview
(``kubectl auth whoami``) over real TLS, in JSON and in kubectl's protobuf."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apiserver.support import TokenServer
from hatchway.apiserver.server import ApiServer
from hatchway.transport import http, tls

RULES = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@pytest.fixture
async def server(token_server: TokenServer) -> ApiServer:
    return await token_server('tok-dev,dev,42,"devs,qa"\n')


async def call(
    server: ApiServer,
    path: str,
    body: bytes,
    *,
    token: str | None = None,
    ctype: str = "application/json",
) -> tuple[int, Any]:
    assert server.paths is not None
    pki = server.paths.client_ca.parent
    creds: dict[str, Any] = {}
    headers = [("Content-Type", ctype)]
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    else:
        creds = {"cert_file": pki / "admin.crt", "key_file": pki / "admin.key"}
    ctx = tls.client_context(ca_file=server.paths.client_ca, **creds)
    url = f"https://127.0.0.1:{server.port}{path}"
    resp = await http.request("POST", url, headers=headers, body=body, ssl=ctx)
    return resp.status, json.loads(resp.body)


def _field(number: int, data: bytes) -> bytes:
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def protobuf_review(api_version: str, kind: str, spec: bytes) -> bytes:
    """The k8s envelope around a review whose spec (field 2) is ``spec``."""
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, _field(2, spec))


def _json(kind: str, api_version: str, spec: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"kind": kind, "apiVersion": api_version, "metadata": {}}
    if spec is not None:
        doc["spec"] = spec
    return json.dumps(doc).encode()


async def bind(server: ApiServer, user: str, role: str, namespace: str = "default") -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    code, _ = await call(server, path, json.dumps(binding).encode())
    assert code == 201


async def test_whoami_json_protobuf_and_v1beta1(server: ApiServer) -> None:
    code, review = await call(
        server, WHOAMI, _json("SelfSubjectReview", "authentication.k8s.io/v1"), token="tok-dev"
    )
    assert code == 201
    assert (review["kind"], review["apiVersion"]) == (
        "SelfSubjectReview",
        "authentication.k8s.io/v1",
    )
    assert review["status"]["userInfo"] == {
        "username": "dev",
        "uid": "42",
        "groups": ["devs", "qa", "system:authenticated"],
    }
    body = protobuf_review("authentication.k8s.io/v1beta1", "SelfSubjectReview", b"")
    path = WHOAMI.replace("/v1/", "/v1beta1/")
    code, review = await call(server, path, body, ctype="application/vnd.kubernetes.protobuf")
    assert code == 201 and review["apiVersion"] == "authentication.k8s.io/v1beta1"
    assert review["status"]["userInfo"]["username"] == "admin"
    code, _ = await call(server, WHOAMI.replace("/v1/", "/v1alpha1/"), body)
    assert code == 404


def _grants(status: dict[str, Any], verb: str, resource: str) -> bool:
    return any(
        (verb in r["verbs"] or "*" in r["verbs"])
        and (resource in r["resources"] or "*" in r["resources"])
        for r in status["resourceRules"]
    )


async def test_rules_review_follows_bindings(server: ApiServer) -> None:
    spec = {"namespace": "default"}
    body = _json("SelfSubjectRulesReview", "authorization.k8s.io/v1", spec)
    code, review = await call(server, RULES, body, token="tok-dev")
    assert code == 201
    status = review["status"]
    assert status["incomplete"] is False
    assert not _grants(status, "get", "pods")
    assert _grants(status, "create", "selfsubjectrulesreviews")
    assert _grants(status, "create", "selfsubjectreviews")
    assert any(
        r["verbs"] == ["get"] and "/api" in r["nonResourceURLs"] for r in status["nonResourceRules"]
    )

    await bind(server, "dev", "view")
    code, review = await call(server, RULES, body, token="tok-dev")
    status = review["status"]
    assert _grants(status, "get", "pods") and _grants(status, "get", "pods/log")
    assert not _grants(status, "create", "pods/exec")
    # the binding is in default only
    other = _json("SelfSubjectRulesReview", "authorization.k8s.io/v1", {"namespace": "kube-system"})
    code, review = await call(server, RULES, other, token="tok-dev")
    assert not _grants(review["status"], "get", "pods")

    await bind(server, "dev", "missing-role")
    code, review = await call(server, RULES, body, token="tok-dev")
    assert review["status"]["incomplete"] is True
    assert "missing-role" in review["status"]["evaluationError"]


async def test_rules_review_protobuf_and_errors(server: ApiServer) -> None:
    spec = _field(1, b"default")
    body = protobuf_review("authorization.k8s.io/v1", "SelfSubjectRulesReview", spec)
    code, review = await call(server, RULES, body, ctype="application/vnd.kubernetes.protobuf")
    assert code == 201 and review["spec"] == {"namespace": "default"}
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in review["status"][
        "resourceRules"
    ]
    code, status = await call(server, RULES, _json("SelfSubjectRulesReview", "x", {}))
    assert (code, status["reason"]) == (422, "Invalid")
    assert "spec.namespace: Required value" in status["message"]
