"""Impersonation as Kubernetes' WithImpersonation: the headers parsed, each attribute
authorised for the caller, the new identity built; then over real TLS against the API
server: the request runs as the impersonated user (RBAC, access reviews, exec
admission), refusals in Kubernetes' words, the audit naming both users, and the bounds
on what a peer may send."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from apiserver.support import TokenServer
from hatchway import pki
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.apiserver.impersonation import (
    MAX_VALUE_CHARS,
    MAX_VALUES,
    ImpersonationError,
    Wanted,
    impersonate,
    parse_headers,
    split_service_account,
)
from hatchway.apiserver.rbac import RbacAuthorizer, RbacPolicy
from hatchway.apiserver.server import ApiServer
from hatchway.transport import http, tls

from .test_proxy import EXEC_Q, PODS, SCALE, Client, _echo_roundtrip, api, data_dir, node

__all__ = ["api", "data_dir", "node"]  # test_proxy's fixtures, used by name

RBAC = "rbac.authorization.k8s.io"
ADMIN = UserInfo("admin", ("system:masters", AUTHENTICATED_GROUP))
ALICE = UserInfo("alice", (AUTHENTICATED_GROUP,))


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def crb(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": user}],
    }


def rule(resources: list[str], group: str = "", names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": ["impersonate"], "apiGroups": [group], "resources": resources}
    if names:
        out["resourceNames"] = names
    return out


# -- the headers ---------------------------------------------------------------------------
def test_no_headers_no_impersonation() -> None:
    assert parse_headers([("authorization", "Bearer x"), ("accept", "*/*")]) == []


def test_headers_in_kubernetes_order() -> None:
    headers = [
        ("impersonate-uid", "u-1"),
        ("impersonate-group", "g1"),
        ("impersonate-user", "bob"),
        ("impersonate-user", "ignored"),
        ("impersonate-extra-scopes", "view"),
        ("impersonate-group", "g2"),
        ("impersonate-extra-acme.com%2fproject", "p"),
        ("impersonate-extra-scopes", "edit"),
    ]
    assert parse_headers(headers) == [
        Wanted("User", "bob"),
        Wanted("Group", "g1"),
        Wanted("Group", "g2"),
        Wanted("UserExtra", "view", api_version="authentication.k8s.io/v1", field_path="scopes"),
        Wanted(
            "UserExtra", "p", api_version="authentication.k8s.io/v1", field_path="acme.com/project"
        ),
        Wanted("UserExtra", "edit", api_version="authentication.k8s.io/v1", field_path="scopes"),
        Wanted("UID", "u-1", api_version="authentication.k8s.io/v1"),
    ]


def test_malformed_extra_escape_is_kept_as_sent() -> None:
    (wanted,) = [
        w
        for w in parse_headers([("impersonate-user", "b"), ("impersonate-extra-a%zz%2f", "v")])
        if w.kind == "UserExtra"
    ]
    assert wanted.field_path == "a%zz%2f"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("system:serviceaccount:ns:sa", ("ns", "sa")),
        ("system:serviceaccount:ns:sa.with.dots", ("ns", "sa.with.dots")),
        ("system:serviceaccount:ns:sa:extra", None),
        ("system:serviceaccount:NS:sa", None),
        ("system:serviceaccount::sa", None),
        ("system:serviceaccount:ns:", None),
        ("system:serviceaccounts:ns", None),
        ("bob", None),
    ],
)
def test_service_account_names(name: str, expected: tuple[str, str] | None) -> None:
    assert split_service_account(name) == expected


def test_service_account_user_is_a_service_account() -> None:
    assert parse_headers([("impersonate-user", "system:serviceaccount:dev:robot")]) == [
        Wanted("ServiceAccount", "robot", "dev")
    ]
    # Not a valid account name: a plain user of that name, as Kubernetes does.
    assert parse_headers([("impersonate-user", "system:serviceaccount:dev:Robot")]) == [
        Wanted("User", "system:serviceaccount:dev:Robot")
    ]


@pytest.mark.parametrize(
    ("headers", "listed"),
    [
        ([("impersonate-group", "g")], "[{Group  g    }]"),
        ([("impersonate-uid", "1")], "[{UID  1  authentication.k8s.io/v1  }]"),
        (
            [("impersonate-extra-k", "<v>")],
            "[{UserExtra  &lt;v&gt;  authentication.k8s.io/v1  k}]",
        ),
    ],
)
def test_attributes_without_a_user_are_refused(headers: list[tuple[str, str]], listed: str) -> None:
    with pytest.raises(ImpersonationError) as caught:
        parse_headers(headers, "/api/v1/pods")
    assert caught.value.code == 500 and caught.value.body is None
    assert caught.value.message == (
        f'Internal Server Error: "/api/v1/pods": requested {listed} without impersonating a user'
    )


def test_count_and_size_are_bounded() -> None:
    many = [("impersonate-user", "bob")] + [
        ("impersonate-group", f"g{i}") for i in range(MAX_VALUES)
    ]
    with pytest.raises(ImpersonationError) as caught:
        parse_headers(many)
    assert caught.value.code == 400 and caught.value.body is not None
    assert caught.value.body["message"] == (
        f"too many impersonation headers: {MAX_VALUES + 1}, at most {MAX_VALUES} are accepted"
    )
    assert len(parse_headers(many[:MAX_VALUES])) == MAX_VALUES
    with pytest.raises(ImpersonationError) as caught:
        parse_headers([("impersonate-user", "b" * (MAX_VALUE_CHARS + 1))])
    assert caught.value.code == 400
    assert parse_headers([("impersonate-user", "b" * MAX_VALUE_CHARS)])


# -- the decision and the new identity ------------------------------------------------------
async def test_admin_becomes_the_user_with_authenticated_added() -> None:
    authz = RbacAuthorizer(RbacPolicy.defaults())
    got = await impersonate(authz, ADMIN, parse_headers([("impersonate-user", "bob")]))
    assert got == UserInfo("bob", (AUTHENTICATED_GROUP,))
    wanted = parse_headers(
        [
            ("impersonate-user", "bob"),
            ("impersonate-group", "g"),
            ("impersonate-uid", "42"),
            ("impersonate-extra-scopes", "a"),
            ("impersonate-extra-scopes", "b"),
        ]
    )
    got = await impersonate(authz, ADMIN, wanted)
    assert isinstance(got, UserInfo)
    assert (got.name, got.groups, got.uid, dict(got.extra)) == (
        "bob",
        ("g", AUTHENTICATED_GROUP),
        "42",
        {"scopes": ("a", "b")},
    )


async def test_groups_of_service_accounts_and_anonymous() -> None:
    authz = RbacAuthorizer(RbacPolicy.defaults())
    sa = await impersonate(authz, ADMIN, [Wanted("ServiceAccount", "robot", "dev")])
    assert sa == UserInfo(
        "system:serviceaccount:dev:robot",
        ("system:serviceaccounts", "system:serviceaccounts:dev", AUTHENTICATED_GROUP),
    )
    sa_groups = await impersonate(
        authz, ADMIN, [Wanted("ServiceAccount", "robot", "dev"), Wanted("Group", "g")]
    )
    assert isinstance(sa_groups, UserInfo) and sa_groups.groups == ("g", AUTHENTICATED_GROUP)
    anon = await impersonate(authz, ADMIN, [Wanted("User", "system:anonymous")])
    assert anon == UserInfo("system:anonymous", ("system:unauthenticated",))
    unauth = await impersonate(
        authz, ADMIN, [Wanted("User", "bob"), Wanted("Group", "system:unauthenticated")]
    )
    assert isinstance(unauth, UserInfo) and unauth.groups == ("system:unauthenticated",)


async def test_refusals_name_the_caller_and_the_attribute() -> None:
    authz = RbacAuthorizer(RbacPolicy.defaults())
    cases = [
        (
            Wanted("User", "bob"),
            'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in'
            ' API group "" at the cluster scope',
            {"name": "bob", "kind": "users"},
        ),
        (
            Wanted("Group", "g"),
            'groups "g" is forbidden: User "alice" cannot impersonate resource "groups" in'
            ' API group "" at the cluster scope',
            {"name": "g", "kind": "groups"},
        ),
        (
            Wanted("ServiceAccount", "robot", "dev"),
            'serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource'
            ' "serviceaccounts" in API group "" in the namespace "dev"',
            {"name": "robot", "kind": "serviceaccounts"},
        ),
        (
            Wanted("UID", "42", api_version="authentication.k8s.io/v1"),
            'uids.authentication.k8s.io "42" is forbidden: User "alice" cannot impersonate'
            ' resource "uids" in API group "authentication.k8s.io" at the cluster scope',
            {"name": "42", "group": "authentication.k8s.io", "kind": "uids"},
        ),
        (
            Wanted("UserExtra", "a", field_path="scopes"),
            'userextras.authentication.k8s.io "a" is forbidden: User "alice" cannot'
            ' impersonate resource "userextras/scopes" in API group "authentication.k8s.io"'
            " at the cluster scope",
            {"name": "a", "group": "authentication.k8s.io", "kind": "userextras"},
        ),
    ]
    for wanted, message, details in cases:
        body = await impersonate(authz, ALICE, [wanted])
        assert isinstance(body, dict)
        assert (body["code"], body["reason"], body["message"]) == (403, "Forbidden", message)
        assert body["details"] == details


async def test_impersonate_verb_in_roles_and_resource_names() -> None:
    policy = RbacPolicy.defaults(
        cluster_role("imp", rule(["users"], names=["bob"]), rule(["groups"])),
        crb("alice-imp", "imp", "alice"),
    )
    authz = RbacAuthorizer(policy)
    assert isinstance(
        await impersonate(authz, ALICE, [Wanted("User", "bob"), Wanted("Group", "g")]), UserInfo
    )
    refused = await impersonate(authz, ALICE, [Wanted("User", "carol")])
    assert isinstance(refused, dict) and refused["details"]["name"] == "carol"
    # Every part is checked: the user is allowed, the uid is not.
    refused = await impersonate(authz, ALICE, [Wanted("User", "bob"), Wanted("UID", "1")])
    assert isinstance(refused, dict) and refused["details"]["kind"] == "uids"


async def test_edit_may_impersonate_service_accounts_of_its_namespace_only() -> None:
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "ed", "namespace": "dev"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    authz = RbacAuthorizer(RbacPolicy.defaults(binding))
    ok = await impersonate(authz, ALICE, [Wanted("ServiceAccount", "robot", "dev")])
    assert isinstance(ok, UserInfo) and ok.name == "system:serviceaccount:dev:robot"
    elsewhere = await impersonate(authz, ALICE, [Wanted("ServiceAccount", "robot", "prod")])
    assert isinstance(elsewhere, dict) and elsewhere["code"] == 403
    users = await impersonate(authz, ALICE, [Wanted("User", "bob")])
    assert isinstance(users, dict) and users["code"] == 403


async def test_a_node_may_not_impersonate() -> None:
    from hatchway.apiserver import bootstrap

    authz = RbacAuthorizer(
        RbacPolicy.defaults(bootstrap.node_cluster_role(), bootstrap.node_cluster_role_binding())
    )
    node = UserInfo("system:node:n1", ("system:nodes", AUTHENTICATED_GROUP))
    for wanted in (Wanted("User", "admin"), Wanted("Group", "system:masters")):
        assert isinstance(await impersonate(authz, node, [wanted]), dict)


# -- over TLS against the API server -------------------------------------------------------
@pytest.fixture
async def server(token_server: TokenServer) -> ApiServer:
    return await token_server("tok-alice,alice,1\ntok-ed,ed,2\n")


async def call(
    server: ApiServer,
    path: str,
    *,
    creds: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
    **kw: Any,
) -> http.ClientResponse:
    assert server.paths is not None
    ctx = tls.client_context(ca_file=server.paths.client_ca, **(creds or {}))
    url = f"https://127.0.0.1:{server.port}{path}"
    return await http.request(kw.pop("method", "GET"), url, ssl=ctx, headers=headers or [], **kw)


def admin(server: ApiServer) -> dict[str, Any]:
    assert server.paths is not None
    d = server.paths.client_ca.parent
    return {"cert_file": d / "admin.crt", "key_file": d / "admin.key"}


def audit_lines(server: ApiServer) -> list[dict[str, Any]]:
    assert server.paths is not None and server.paths.audit is not None
    return [json.loads(x) for x in server.paths.audit.read_text().splitlines()]


async def create(server: ApiServer, path: str, obj: dict[str, Any]) -> None:
    resp = await call(
        server, path, creds=admin(server), method="POST", body=json.dumps(obj).encode()
    )
    assert resp.status == 201, resp.body


async def test_admin_acting_as_bob_is_refused_as_bob_and_audited_as_both(server: ApiServer) -> None:
    as_bob = [("Impersonate-User", "bob"), ("Impersonate-Group", "devs")]
    resp = await call(
        server, "/api/v1/namespaces/default/pods", creds=admin(server), headers=as_bob
    )
    assert resp.status == 403
    assert json.loads(resp.body)["message"] == (
        'pods is forbidden: User "bob" cannot list resource "pods" in API group ""'
        ' in the namespace "default"'
    )
    line = audit_lines(server)[-1]
    assert (line["user"], line["groups"], line["decision"], line["code"]) == (
        "admin",
        ["system:masters", "system:authenticated"],
        "deny",
        403,
    )
    assert line["impersonated_user"] == {
        "username": "bob",
        "groups": ["devs", "system:authenticated"],
    }
    plain = await call(server, "/api/v1/namespaces/default/pods", creds=admin(server))
    assert plain.status == 200
    assert "impersonated_user" not in audit_lines(server)[-1]


async def test_a_user_without_rights_is_refused_before_anything_runs(server: ApiServer) -> None:
    headers = [
        ("Authorization", "Bearer tok-alice"),
        ("Impersonate-User", "admin"),
        ("Impersonate-Group", "system:masters"),
    ]
    resp = await call(server, "/api/v1/namespaces", headers=headers)
    assert resp.status == 403
    body = json.loads(resp.body)
    assert body["message"] == (
        'users "admin" is forbidden: User "alice" cannot impersonate resource "users" in'
        ' API group "" at the cluster scope'
    )
    assert body["details"] == {"name": "admin", "kind": "users"}
    line = audit_lines(server)[-1]
    assert (line["user"], line["decision"], line["code"], line["reason"]) == (
        "alice",
        "deny",
        403,
        body["message"],
    )
    assert "impersonated_user" not in line


async def test_whoami_and_can_i_answer_for_the_impersonated_user(server: ApiServer) -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Impersonate-User", "bob"),
        ("Impersonate-Group", "g"),
        ("Impersonate-Extra-Reason", "debugging"),
    ]
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = await post_review(
        server, "authentication.k8s.io", "selfsubjectreviews", review, headers
    )
    assert answer["status"]["userInfo"] == {
        "username": "bob",
        "groups": ["g", "system:authenticated"],
        "extra": {"reason": ["debugging"]},
    }
    sar = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}
        },
    }
    answer = await post_review(
        server, "authorization.k8s.io", "selfsubjectaccessreviews", sar, headers
    )
    assert answer["status"]["allowed"] is False


async def post_review(
    server: ApiServer, group: str, resource: str, review: dict, headers: list[tuple[str, str]]
) -> dict:
    """POST ``review`` as the admin with ``headers``; the 201 answer's body."""
    resp = await call(
        server,
        f"/apis/{group}/v1/{resource}",
        creds=admin(server),
        headers=headers,
        method="POST",
        body=json.dumps(review).encode(),
    )
    assert resp.status == 201, resp.body
    return json.loads(resp.body)


async def test_group_without_user_is_refused_as_kubernetes_does(server: ApiServer) -> None:
    resp = await call(
        server,
        "/api/v1/namespaces?limit=1",
        creds=admin(server),
        headers=[("Impersonate-Group", "g")],
    )
    assert resp.status == 500
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert resp.body == (
        b'Internal Server Error: "/api/v1/namespaces?limit=1": requested [{Group  g    }]'
        b" without impersonating a user\n"
    )
    line = audit_lines(server)[-1]
    assert (line["user"], line["decision"], line["code"]) == ("admin", "deny", 500)


async def test_too_many_headers_are_refused_and_said_so(server: ApiServer) -> None:
    headers = [("Impersonate-User", "bob")] + [
        ("Impersonate-Group", f"g{i}") for i in range(MAX_VALUES)
    ]
    resp = await call(server, "/api/v1/namespaces", creds=admin(server), headers=headers)
    assert resp.status == 400
    assert json.loads(resp.body)["message"] == (
        f"too many impersonation headers: {MAX_VALUES + 1}, at most {MAX_VALUES} are accepted"
    )


async def test_node_certificate_may_not_impersonate(server: ApiServer, tmp_path: Path) -> None:
    assert server.paths is not None
    cert, key = pki.mint_component_cert(
        server.paths.client_ca.parent, "system:node:n1", ["system:nodes"]
    )
    (tmp_path / "n.crt").write_bytes(cert)
    (tmp_path / "n.key").write_bytes(key)
    creds = {"cert_file": tmp_path / "n.crt", "key_file": tmp_path / "n.key"}
    plain = await call(server, "/api/v1/namespaces/default/pods", creds=creds)
    assert plain.status == 200  # the node may list pods
    resp = await call(
        server,
        "/api/v1/namespaces/default/pods",
        creds=creds,
        headers=[("Impersonate-User", "admin")],
    )
    assert resp.status == 403
    assert json.loads(resp.body)["message"].startswith(
        'users "admin" is forbidden: User "system:node:n1" cannot impersonate resource "users"'
    )


async def test_privileged_exec_is_decided_for_the_impersonated_user(server: ApiServer) -> None:
    """Exec admission exempts cluster admins: an editor allowed to impersonate the admin
    passes it, the admin acting as an editor does not."""
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "priv"},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "main", "image": "x", "securityContext": {"privileged": True}}],
        },
    }
    await create(server, "/api/v1/namespaces/default/pods", privileged)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    await create(
        server,
        f"{rbac}/clusterrolebindings",
        {**crb("ed-edit", "edit", "ed"), "apiVersion": f"{RBAC}/v1"},
    )
    upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ]
    exec_path = "/api/v1/namespaces/default/pods/priv/exec?command=sh&stdout=1"
    refused_text = 'pods "priv" is forbidden: cannot exec into or attach to a privileged container'
    as_ed = [*upgrade, ("Impersonate-User", "ed")]
    resp = await call(server, exec_path, creds=admin(server), headers=as_ed, method="POST")
    assert (resp.status, json.loads(resp.body)["message"]) == (403, refused_text)
    line = audit_lines(server)[-1]
    assert (line["user"], line["impersonated_user"]["username"], line["decision"]) == (
        "admin",
        "ed",
        "deny",
    )
    ed_as_admin = [
        *upgrade,
        ("Authorization", "Bearer tok-ed"),
        ("Impersonate-User", "admin"),
        ("Impersonate-Group", "system:masters"),
    ]
    resp = await call(server, exec_path, headers=ed_as_admin, method="POST")
    assert resp.status == 403
    assert json.loads(resp.body)["message"].startswith(
        'users "admin" is forbidden: User "ed" cannot impersonate'
    )
    role = cluster_role(
        "imp-admin", rule(["users"], names=["admin"]), rule(["groups"], names=["system:masters"])
    )
    await create(server, f"{rbac}/clusterroles", {**role, "apiVersion": f"{RBAC}/v1"})
    await create(
        server,
        f"{rbac}/clusterrolebindings",
        {**crb("ed-imp", "imp-admin", "ed"), "apiVersion": f"{RBAC}/v1"},
    )
    resp = await call(server, exec_path, headers=ed_as_admin, method="POST")
    # Past admission: the pod's node is not there, so the exec cannot be proxied.
    assert resp.status != 403, resp.body
    assert refused_text not in resp.body.decode()


# -- through the exec proxy, with test_proxy's fake node ------------------------------------
def _as(user: str, *groups: str) -> list[tuple[str, str]]:
    return [("Impersonate-User", user), *(("Impersonate-Group", g) for g in groups)]


async def test_the_node_never_sees_impersonation_headers(api, node) -> None:  # type: ignore[no-untyped-def]
    admin = Client(api, "admin", ["system:masters"])
    admin.headers = [
        *_as("ops", "system:masters"),
        ("Impersonate-Uid", "7"),
        ("Impersonate-Extra-Ticket", "T-1"),
    ]
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.status == 101
    await _echo_roundtrip(resp, stream)
    sent = node.requests[-1]
    assert [k for k, _ in sent.headers if k.lower().startswith("impersonate-")] == []
    assert api.paths is not None and api.paths.audit is not None
    deadline = time.monotonic() + 5 * SCALE
    while True:
        lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
        sessions = [x for x in lines if x["type"] in ("session_start", "session_end")]
        if len(sessions) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [x["type"] for x in sessions] == ["session_start", "session_end"]
    for line in sessions:
        assert line["user"] == "admin"
        assert line["impersonated_user"] == {
            "username": "ops",
            "groups": ["system:masters", "system:authenticated"],
            "uid": "7",
            "extra": {"ticket": ["T-1"]},
        }


async def test_session_slots_are_charged_to_the_caller(api, node) -> None:  # type: ignore[no-untyped-def]
    """per_user is 2 here: acting as a third user buys no third session."""
    node.mode = "hold"
    admin = Client(api, "admin", ["system:masters"])
    held = []
    for i in range(2):
        admin.headers = _as(f"u{i}", "system:masters")
        held.append(await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}"))
    assert [resp.status for resp, _ in held] == [101, 101]
    admin.headers = _as("u2", "system:masters")
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert stream is None and resp.status == 429
    assert json.loads(resp.body)["message"].endswith("for user 'admin'")
    for _, s in held:
        assert s is not None
        s.close()


async def test_acting_as_a_node_is_held_to_that_nodes_objects(server: ApiServer) -> None:
    """Node restriction decides for the impersonated identity, as Kubernetes' Node
    authorizer does."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "elsewhere"},
        "spec": {"nodeName": "n2", "containers": [{"name": "main", "image": "x"}]},
    }
    await create(server, "/api/v1/namespaces/default/pods", pod)
    as_node = [("Impersonate-User", "system:node:n1"), ("Impersonate-Group", "system:nodes")]
    path = "/api/v1/namespaces/default/pods/elsewhere"
    resp = await call(server, path, creds=admin(server), headers=as_node, method="DELETE")
    assert resp.status == 403
    assert json.loads(resp.body)["message"] == (
        'pods "elsewhere" is forbidden: node "n1" can only modify pods bound to it,'
        " not one on 'n2'"
    )
    assert (await call(server, path, creds=admin(server))).status == 200
