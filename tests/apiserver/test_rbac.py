from __future__ import annotations

import json

import pytest

from hatchway.api.status import StatusError
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.apiserver.rbac import (
    Attributes,
    Decision,
    RbacAuthorizer,
    RbacPolicy,
    default_cluster_role_bindings,
    default_cluster_roles,
    forbidden_message,
    forbidden_status,
    rule_allows,
)
from hatchway.apiserver.request_info import parse_request_info

RBAC = "rbac.authorization.k8s.io"


def user(name: str, *groups: str) -> UserInfo:
    return UserInfo(name, (*groups, AUTHENTICATED_GROUP))


def crb(name, role, *subjects):
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


def rb(name, ns, kind, role, *subjects):
    return {
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
        "subjects": list(subjects),
    }


def role(name, ns, *rules, kind="Role"):
    meta = {"name": name, "namespace": ns} if ns else {"name": name}
    return {"kind": kind, "metadata": meta, "rules": list(rules)}


def U(name):
    return {"kind": "User", "apiGroup": RBAC, "name": name}


def G(name):
    return {"kind": "Group", "apiGroup": RBAC, "name": name}


def SA(name, ns=""):
    subject = {"kind": "ServiceAccount", "name": name}
    if ns:
        subject["namespace"] = ns
    return subject


POLICY = RbacPolicy.defaults(
    rb("v", "dev", "ClusterRole", "view", U("viewer")),
    rb("e", "dev", "ClusterRole", "edit", U("editor")),
    rb("a", "dev", "ClusterRole", "admin", U("nsadmin")),
    crb("root", "cluster-admin", U("root")),
    crb("global-view", "view", G("auditors")),
    role("exec-only", "dev", {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}),
    rb("x", "dev", "Role", "exec-only", U("execer")),
    role("get-exec", "dev", {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}),
    rb("g", "dev", "Role", "get-exec", U("getter")),
)
AUTHZ = RbacAuthorizer(POLICY)


def req(method: str, path: str, query: str = "") -> Attributes:
    return Attributes.from_request_info(parse_request_info(method, path, query))


NS = "/api/v1/namespaces"
EXEC_GET = req("GET", f"{NS}/dev/pods/web/exec", "command=sh")
EXEC_POST = req("POST", f"{NS}/dev/pods/web/exec", "command=sh")
ATTACH = req("GET", f"{NS}/dev/pods/web/attach")
PF = req("POST", f"{NS}/dev/pods/web/portforward")
GET_POD = req("GET", f"{NS}/dev/pods/web")
LIST_PODS = req("GET", f"{NS}/dev/pods")
WATCH_PODS = req("GET", f"{NS}/dev/pods", "watch=true")
LOGS = req("GET", f"{NS}/dev/pods/web/log")
CREATE_POD = req("POST", f"{NS}/dev/pods")
DELETE_POD = req("DELETE", f"{NS}/dev/pods/web")
LIST_ROLES = req("GET", f"/apis/{RBAC}/v1/namespaces/dev/roles")
LIST_NODES = req("GET", "/api/v1/nodes")
LIST_SECRETS = req("GET", f"{NS}/dev/secrets")
OTHER_NS_POD = req("GET", f"{NS}/prod/pods/web")
OTHER_NS_EXEC = req("POST", f"{NS}/prod/pods/web/exec")

ALLOWED = {
    "viewer": {GET_POD, LIST_PODS, WATCH_PODS, LOGS},
    "editor": {
        GET_POD,
        LIST_PODS,
        WATCH_PODS,
        LOGS,
        CREATE_POD,
        DELETE_POD,
        EXEC_GET,
        EXEC_POST,
        ATTACH,
        PF,
    },
    "nsadmin": {
        GET_POD,
        LIST_PODS,
        WATCH_PODS,
        LOGS,
        CREATE_POD,
        DELETE_POD,
        EXEC_GET,
        EXEC_POST,
        ATTACH,
        PF,
        LIST_ROLES,
    },
    "auditors": {GET_POD, LIST_PODS, WATCH_PODS, LOGS, OTHER_NS_POD},
    "execer": {EXEC_GET, EXEC_POST},
    "getter": set(),  # get on pods/exec no longer lets anyone exec, even over WebSocket GET
    "nobody": set(),
}
ALL = [
    EXEC_GET,
    EXEC_POST,
    ATTACH,
    PF,
    GET_POD,
    LIST_PODS,
    WATCH_PODS,
    LOGS,
    CREATE_POD,
    DELETE_POD,
    LIST_ROLES,
    LIST_NODES,
    LIST_SECRETS,
    OTHER_NS_POD,
    OTHER_NS_EXEC,
]


def who(name: str) -> UserInfo:
    return user("someone", "auditors") if name == "auditors" else user(name)


@pytest.mark.parametrize("name", list(ALLOWED))
@pytest.mark.parametrize("attrs", ALL, ids=lambda a: f"{a.verb}-{a.namespace}-{a.resource_path}")
async def test_matrix(name, attrs) -> None:
    decision = await AUTHZ.authorize(who(name), attrs)
    assert decision.allowed == (attrs in ALLOWED[name])


@pytest.mark.parametrize("attrs", ALL, ids=lambda a: f"{a.verb}-{a.resource_path}")
async def test_cluster_admin_and_masters_allowed_everything(attrs) -> None:
    assert (await AUTHZ.authorize(user("root"), attrs)).allowed
    masters = await AUTHZ.authorize(user("m", "system:masters"), attrs)
    assert masters == Decision(True, "")
    # masters needs no policy at all
    assert (
        await RbacAuthorizer(RbacPolicy()).authorize(user("m", "system:masters"), attrs)
    ).allowed


async def test_allow_reasons_name_the_binding() -> None:
    d = await AUTHZ.authorize(user("root"), LIST_NODES)
    assert (
        d.reason == 'RBAC: allowed by ClusterRoleBinding "root" of ClusterRole '
        '"cluster-admin" to User "root"'
    )
    d = await AUTHZ.authorize(user("editor"), EXEC_POST)
    assert d.reason == 'RBAC: allowed by RoleBinding "e/dev" of ClusterRole "edit" to User "editor"'


async def test_role_binding_to_cluster_role_is_namespace_scoped() -> None:
    editor = user("editor")
    assert (await AUTHZ.authorize(editor, EXEC_POST)).allowed
    assert not (await AUTHZ.authorize(editor, OTHER_NS_EXEC)).allowed
    # cluster-scoped requests never use RoleBindings
    all_pods = req("GET", "/api/v1/pods")
    assert not (await AUTHZ.authorize(editor, all_pods)).allowed
    assert (await AUTHZ.authorize(user("x", "auditors"), all_pods)).allowed


async def test_role_in_other_namespace_not_used() -> None:
    policy = RbacPolicy.from_objects(
        [
            role("r", "prod", {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            rb("b", "dev", "Role", "r", U("u")),
        ]
    )
    d = await RbacAuthorizer(policy).authorize(user("u"), GET_POD)
    assert d == Decision(False, 'RBAC: role.rbac.authorization.k8s.io "r" not found')


def attrs(verb, resource, sub="", name="", group="", ns="dev") -> Attributes:
    return Attributes(
        verb=verb, namespace=ns, api_group=group, resource=resource, subresource=sub, name=name
    )


@pytest.mark.parametrize(
    ("rule_resources", "request_", "allowed"),
    [
        (["*"], ("pods", ""), True),
        (["*"], ("pods", "exec"), True),  # "*" matches subresources too
        (["pods"], ("pods", "exec"), False),
        (["pods/exec"], ("pods", ""), False),
        (["pods/exec"], ("pods", "exec"), True),
        (["pods/exec"], ("pods", "attach"), False),
        (["*/exec"], ("pods", "exec"), True),
        (["*/exec"], ("nodes", "exec"), True),
        (["*/exec"], ("pods", ""), False),
        (["*/exec"], ("pods", "execx"), False),
        (["pods/*"], ("pods", "exec"), False),  # upstream: not "all pod subresources"
        (["*/*"], ("pods", "exec"), False),
        (["pods/*"], ("pods", "*"), True),
    ],
)
def test_resource_wildcards(rule_resources, request_, allowed) -> None:
    rule = {"apiGroups": [""], "resources": rule_resources, "verbs": ["create"]}
    assert rule_allows(rule, attrs("create", *request_, name="web")) is allowed


def test_verb_and_group_wildcards() -> None:
    rule = {"apiGroups": ["*"], "resources": ["roles"], "verbs": ["*"]}
    assert rule_allows(rule, attrs("escalate", "roles", group=RBAC))
    rule = {"apiGroups": ["apps"], "resources": ["roles"], "verbs": ["get"]}
    assert not rule_allows(rule, attrs("get", "roles", group=RBAC))
    assert not rule_allows(rule, attrs("list", "roles", group="apps"))
    # a requested "*" verb is only granted by a "*" rule
    assert not rule_allows(
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, attrs("*", "pods")
    )


def test_resource_names() -> None:
    rule = {
        "apiGroups": [""],
        "resources": ["pods", "pods/exec"],
        "verbs": ["*"],
        "resourceNames": ["web"],
    }
    assert rule_allows(rule, attrs("get", "pods", name="web"))
    assert rule_allows(rule, attrs("create", "pods", "exec", name="web"))
    assert not rule_allows(rule, attrs("get", "pods", name="db"))
    assert not rule_allows(rule, attrs("create", "pods"))  # create has no name
    assert not rule_allows(rule, attrs("list", "pods"))
    # ...unless the list is pinned to the name with a fieldSelector, as Kubernetes does
    pinned = req("GET", f"{NS}/dev/pods", "fieldSelector=metadata.name%3Dweb")
    assert rule_allows(rule, pinned)


@pytest.mark.parametrize(
    ("urls", "path", "allowed"),
    [
        (["/healthz"], "/healthz", True),
        (["/healthz"], "/healthz/ready", False),
        (["/healthz*"], "/healthz/ready", True),
        (["/apis/*"], "/apis/rbac.authorization.k8s.io/v1", True),
        (["/apis/*"], "/apis", False),
        (["*"], "/anything", True),
        (["/version"], "/Version", False),
    ],
)
def test_non_resource_urls(urls, path, allowed) -> None:
    rule = {"nonResourceURLs": urls, "verbs": ["get"]}
    a = Attributes(verb="get", is_resource_request=False, path=path)
    assert rule_allows(rule, a) is allowed
    assert not rule_allows(rule, Attributes(verb="post", is_resource_request=False, path=path))


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/x/v1",
        "/version",
        "/healthz",
        "/livez",
        "/readyz",
        "/openapi/v2",
    ],
)
async def test_discovery_for_every_authenticated_user(path) -> None:
    a = Attributes.from_request_info(parse_request_info("GET", path, ""))
    assert not a.is_resource_request
    assert (await AUTHZ.authorize(user("nobody"), a)).allowed
    assert not (await AUTHZ.authorize(UserInfo("anon", ()), a)).allowed
    assert not (await AUTHZ.authorize(user("nobody"), req("POST", path))).allowed


async def test_self_subject_access_review_for_everyone() -> None:
    a = req("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert (await AUTHZ.authorize(user("nobody"), a)).allowed


async def test_subjects_groups_and_service_accounts() -> None:
    read = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    policy = RbacPolicy.from_objects(
        [
            role("r", "dev", read),
            rb("b1", "dev", "Role", "r", SA("builder")),  # namespace defaults to the binding's
            rb("b2", "dev", "Role", "r", SA("deployer", "ci"), G("team")),
        ]
    )
    authz = RbacAuthorizer(policy)
    ok = [
        user("system:serviceaccount:dev:builder"),
        user("system:serviceaccount:ci:deployer"),
        user("bob", "team"),
    ]
    no = [
        user("system:serviceaccount:ci:builder"),
        user("builder"),
        user("team"),
        user("system:serviceaccount:dev:deployer"),
    ]
    for u in ok:
        assert (await authz.authorize(u, GET_POD)).allowed, u
    for u in no:
        assert not (await authz.authorize(u, GET_POD)).allowed, u
    d = await authz.authorize(user("system:serviceaccount:dev:builder"), GET_POD)
    assert d.reason.endswith('to ServiceAccount "builder/dev"')


async def test_missing_roles_give_rbac_reasons() -> None:
    policy = RbacPolicy.from_objects(
        [
            crb("c1", "gone", U("u")),
            rb("b1", "dev", "Role", "also-gone", U("u")),
            rb("b2", "dev", "Role", "also-gone", U("other")),
        ]
    )
    d = await RbacAuthorizer(policy).authorize(user("u"), GET_POD)
    assert d == Decision(
        False,
        'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not '
        'found, role.rbac.authorization.k8s.io "also-gone" not found]',
    )
    # a different user is not told about bindings that do not apply to it
    assert await RbacAuthorizer(policy).authorize(user("x"), GET_POD) == Decision(False, "")


async def test_policy_source_sync_async_and_fresh() -> None:
    current = {"policy": RbacPolicy()}
    authz = RbacAuthorizer(lambda: current["policy"])
    assert not (await authz.authorize(user("editor"), EXEC_POST)).allowed
    current["policy"] = POLICY
    assert (await authz.authorize(user("editor"), EXEC_POST)).allowed

    async def from_store() -> RbacPolicy:
        return RbacPolicy(
            cluster_roles=default_cluster_roles(),
            role_bindings=[rb("e", "dev", "ClusterRole", "edit", U("editor"))],
        )

    assert (await RbacAuthorizer(from_store).authorize(user("editor"), EXEC_POST)).allowed


async def test_is_cluster_admin() -> None:
    assert await AUTHZ.is_cluster_admin(user("root"))
    assert await AUTHZ.is_cluster_admin(user("m", "system:masters"))
    for name in ("editor", "nsadmin", "viewer", "execer", "nobody"):
        assert not await AUTHZ.is_cluster_admin(user(name))
    # admin of a namespace via a RoleBinding to cluster-admin is not a cluster admin
    policy = RbacPolicy.defaults(rb("ns-root", "dev", "ClusterRole", "cluster-admin", U("r")))
    assert not await RbacAuthorizer(policy).is_cluster_admin(user("r"))


def test_forbidden_messages() -> None:
    alice = user("alice")
    a = req("POST", f"{NS}/default/pods/mypod/exec")
    assert forbidden_message(alice, a) == (
        'User "alice" cannot create resource "pods/exec" in API group "" in the namespace "default"'
    )
    status = forbidden_status(alice, a)
    assert list(status) == [
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ]
    assert status["message"] == (
        'pods "mypod" is forbidden: User "alice" cannot create resource "pods/exec" in API '
        'group "" in the namespace "default"'
    )
    assert status["details"] == {"name": "mypod", "kind": "pods"}
    assert (status["code"], status["reason"]) == (403, "Forbidden")
    # a WebSocket GET is refused as create too
    ws = req("GET", f"{NS}/default/pods/mypod/exec", "command=sh")
    assert forbidden_status(alice, ws) == status
    nodes = forbidden_status(alice, LIST_NODES)
    assert nodes["message"] == (
        'nodes is forbidden: User "alice" cannot list resource "nodes" '
        'in API group "" at the cluster scope'
    )
    roles = forbidden_status(
        alice,
        req("GET", f"/apis/{RBAC}/v1/namespaces/dev/roles/r"),
        'RBAC: role.rbac.authorization.k8s.io "x" not found',
    )
    assert roles["message"] == (
        f'roles.{RBAC} "r" is forbidden: User "alice" cannot get resource "roles" in API group'
        f' "{RBAC}" in the namespace "dev": RBAC: role.rbac.authorization.k8s.io "x" not found'
    )
    assert roles["details"] == {"name": "r", "group": RBAC, "kind": "roles"}
    path = forbidden_status(alice, req("GET", "/logs"))
    assert json.dumps(path, separators=(",", ":")) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
        '"forbidden: User \\"alice\\" cannot get path \\"/logs\\"","reason":"Forbidden",'
        '"details":{},"code":403}'
    )


async def test_subject_access_review() -> None:
    spec = {
        "resourceAttributes": {
            "namespace": "dev",
            "verb": "create",
            "resource": "pods",
            "subresource": "exec",
            "name": "web",
        }
    }
    assert await AUTHZ.subject_access_review(spec, user("viewer")) == {"allowed": False}
    ok = await AUTHZ.subject_access_review(spec, user("editor"))
    assert ok["allowed"] is True and ok["reason"].startswith("RBAC: allowed by RoleBinding")
    # SubjectAccessReview: the user comes from the spec
    sar = {**spec, "user": "editor", "groups": ["x"]}
    assert (await AUTHZ.subject_access_review(sar))["allowed"] is True
    sar = {**spec, "user": "x", "groups": ["system:masters"]}
    assert await AUTHZ.subject_access_review(sar) == {"allowed": True}
    nonres = {"nonResourceAttributes": {"path": "/version", "verb": "get"}}
    assert (await AUTHZ.subject_access_review(nonres, user("nobody")))["allowed"] is True
    # `kubectl auth can-i '*' '*'`
    star = {"resourceAttributes": {"verb": "*", "resource": "*", "group": "*"}}
    assert (await AUTHZ.subject_access_review(star, user("root")))["allowed"] is True
    assert (await AUTHZ.subject_access_review(star, user("editor")))["allowed"] is False
    for bad in ({}, {**spec, **nonres}):
        with pytest.raises(StatusError) as info:
            await AUTHZ.subject_access_review(bad, user("editor"))
        assert info.value.code == 422 and info.value.reason == "Invalid"
        assert "exactly one of nonResourceAttributes or resourceAttributes" in info.value.message


def test_default_objects() -> None:
    roles = {r["metadata"]["name"]: r for r in default_cluster_roles()}
    assert {
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
    } <= set(roles)
    view_resources = {res for rule in roles["view"]["rules"] for res in rule["resources"]}
    assert not view_resources & {"pods/exec", "pods/attach", "pods/portforward", "secrets", "*"}
    for r in roles.values():
        assert r["kind"] == "ClusterRole" and r["apiVersion"] == f"{RBAC}/v1"
    bindings = {b["metadata"]["name"]: b for b in default_cluster_role_bindings()}
    assert bindings["cluster-admin"]["subjects"] == [
        {"apiGroup": RBAC, "kind": "Group", "name": "system:masters"}
    ]
    assert bindings["cluster-admin"]["roleRef"]["name"] == "cluster-admin"
    # fresh copies each call: callers may mutate them
    default_cluster_roles()[0]["rules"].clear()
    assert default_cluster_roles()[0]["rules"]


def test_from_objects_ignores_unknown_kinds() -> None:
    policy = RbacPolicy.from_objects([{"kind": "Pod", "metadata": {"name": "x"}}])
    assert policy == RbacPolicy()


def test_leases_are_the_nodes_alone_among_the_default_roles() -> None:
    """As Kubernetes' bootstrap policy: system:node gets, creates, updates, patches and
    deletes leases (node_restriction.py narrows that to its own); admin, edit and view
    have nothing on coordination.k8s.io."""
    from hatchway.apiserver.bootstrap import node_cluster_role
    from hatchway.apiserver.rbac import _evaluate

    node = user("system:node:n1", "system:nodes")
    policy = RbacPolicy.defaults(node_cluster_role(), crb("n", "system:node", G("system:nodes")))
    for verb in ("get", "create", "update", "patch", "delete"):
        attrs = Attributes(verb=verb, api_group="coordination.k8s.io", resource="leases",
                           namespace="kube-node-lease", name="n1")  # fmt: skip
        assert _evaluate(policy, node, attrs).allowed, verb
    for verb in ("list", "watch"):
        attrs = Attributes(verb=verb, api_group="coordination.k8s.io", resource="leases",
                           namespace="kube-node-lease")  # fmt: skip
        assert not _evaluate(policy, node, attrs).allowed, verb
    for role in default_cluster_roles():
        if role["metadata"]["name"] in ("admin", "edit", "view"):
            groups = {g for rule in role["rules"] for g in rule.get("apiGroups", [])}
            assert "coordination.k8s.io" not in groups and "*" not in groups
