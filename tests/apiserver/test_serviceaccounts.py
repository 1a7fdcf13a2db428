"""Service accounts and TokenRequest over real TLS: a default account per namespace,
tokens that authenticate as the account, and every way a token must stop working:
deleted (or re-created) account, expiry, another audience, a forged or altered token."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from apiserver import test_rest
from apiserver.test_rest import Api
from hatchway.apiserver.server import ApiServer
from hatchway.transport import http, tls

server = test_rest.server
admin = test_rest.admin

SA = "/api/v1/namespaces/default/serviceaccounts"
REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW_BODY = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


async def _as(server: ApiServer, token: str, method: str, path: str, body: Any = None):  # type: ignore[no-untyped-def]
    assert server.paths is not None
    return await http.request(
        method,
        f"https://127.0.0.1:{server.port}{path}",
        headers=[("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")],
        body=json.dumps(body).encode() if body is not None else b"",
        ssl=tls.client_context(ca_file=server.paths.client_ca),
    )


async def _token(admin: Api, name: str, **spec: Any) -> str:
    answer = await admin.ok("POST", f"{SA}/{name}/token", {"spec": spec})
    assert answer["kind"] == "TokenRequest" and answer["status"]["expirationTimestamp"]
    return str(answer["status"]["token"])


async def test_every_namespace_has_a_default_account(admin: Api) -> None:
    assert (await admin.ok("GET", f"{SA}/default"))["metadata"]["uid"]
    await admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    team = await admin.ok("GET", "/api/v1/namespaces/team/serviceaccounts/default")
    assert team["metadata"]["namespace"] == "team"


async def test_a_token_authenticates_as_its_account(server: ApiServer, admin: Api) -> None:
    await admin.ok("POST", SA, {"metadata": {"name": "bot"}})
    token = await _token(admin, "bot")
    who = await _as(server, token, "POST", REVIEW, REVIEW_BODY)
    assert who.status == 201, who.body
    user = json.loads(who.body)["status"]["userInfo"]
    assert user["username"] == "system:serviceaccount:default:bot"
    assert user["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ]
    refused = await _as(server, token, "GET", "/api/v1/namespaces/default/pods")
    assert refused.status == 403  # authenticated, not authorised: no binding yet
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bot-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}],
    }
    await admin.ok(
        "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", binding
    )
    allowed = await _as(server, token, "GET", "/api/v1/namespaces/default/pods")
    assert allowed.status == 200, allowed.body


async def test_a_deleted_account_takes_its_tokens_along(server: ApiServer, admin: Api) -> None:
    await admin.ok("POST", SA, {"metadata": {"name": "gone"}})
    token = await _token(admin, "gone")
    assert (await _as(server, token, "POST", REVIEW, REVIEW_BODY)).status == 201
    await admin.ok("DELETE", f"{SA}/gone")
    assert (await _as(server, token, "POST", REVIEW, REVIEW_BODY)).status == 401
    await admin.ok("POST", SA, {"metadata": {"name": "gone"}})  # same name, new uid
    assert (await _as(server, token, "POST", REVIEW, REVIEW_BODY)).status == 401
    fresh = await _token(admin, "gone")
    assert (await _as(server, fresh, "POST", REVIEW, REVIEW_BODY)).status == 201


def _part(token: str, index: int) -> dict[str, Any]:
    text = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))  # type: ignore[no-any-return]


def _with(token: str, index: int, changes: dict[str, Any]) -> str:
    parts = token.split(".")
    data = {**_part(token, index), **changes}
    parts[index] = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return ".".join(parts)


async def test_forged_expired_and_foreign_tokens_are_refused(server: ApiServer, admin: Api) -> None:
    await admin.ok("POST", SA, {"metadata": {"name": "victim"}})
    token = await _token(admin, "victim")
    claims = _part(token, 1)
    assert claims["sub"] == "system:serviceaccount:default:victim"
    assert claims["exp"] - claims["iat"] == 3600
    forged = [
        _with(token, 1, {"sub": "system:serviceaccount:kube-system:default"}),  # altered
        _with(token, 0, {"alg": "none"}),
        ".".join(token.split(".")[:2]) + ".",  # no signature
        _with(token, 0, {"alg": "HS256"}),
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
    ]
    for bad in forged:
        assert (await _as(server, bad, "POST", REVIEW, REVIEW_BODY)).status == 401, bad
    tokens = server.tokens
    assert tokens is not None
    account = await admin.ok("GET", f"{SA}/victim")
    expired = tokens.issue(account, [tokens.issuer], 600, time.time() - 601)
    assert (await _as(server, expired, "POST", REVIEW, REVIEW_BODY)).status == 401
    elsewhere = await _token(admin, "victim", audiences=["https://vault.example"])
    assert (await _as(server, elsewhere, "POST", REVIEW, REVIEW_BODY)).status == 401


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (
            599,
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than"
            " 10 minutes",
        ),
        (1 << 33, "may not specify a duration larger than 2^32 seconds"),
    ],
)
async def test_token_lifetimes_are_bounded(admin: Api, seconds: int, text: str) -> None:
    refused = await admin.fail(
        "POST", f"{SA}/default/token", {"spec": {"expirationSeconds": seconds}}
    )
    assert refused["code"] == 422 and text in refused["message"], refused["message"]


async def test_tokens_of_a_missing_account_are_not_issued(admin: Api) -> None:
    missing = await admin.fail("POST", f"{SA}/nobody/token", {"spec": {}})
    assert missing["code"] == 404
