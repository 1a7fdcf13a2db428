"""RBAC authorisation with Kubernetes semantics, over plain rbac/v1 dicts.

    policy_source = lambda: RbacPolicy(roles=..., cluster_roles=..., role_bindings=...,
                                       cluster_role_bindings=...)   # or an async function
    authz = RbacAuthorizer(policy_source)
    attrs = Attributes.from_request_info(parse_request_info("POST", path, query))
    decision = await authz.authorize(user, attrs)
    if not decision.allowed:
        status = forbidden_status(user, attrs, decision.reason)   # 403 body

``RbacAuthorizer(source)`` takes a callable returning an :class:`RbacPolicy` (or an
awaitable of one), called once per decision: pass an async function over
``await store.list(...)`` results, or ``lambda: cache.policy`` for a snapshot a watch
keeps fresh, or an :class:`RbacPolicy` itself. ``RbacPolicy.from_objects(objs)`` sorts
mixed objects by ``kind``; the constructor takes the four lists (list items from a
store may lack ``kind``).

Semantics, as Kubernetes' RBAC authorizer:

* The group ``system:masters`` is always allowed (reason ``""``).
* ClusterRoleBindings grant their ClusterRole everywhere; a RoleBinding grants its Role,
  or a ClusterRole, only for requests in the binding's namespace.
* Subjects: ``User`` by name, ``Group`` by membership, ``ServiceAccount`` as the user
  ``system:serviceaccount:{ns}:{name}`` (ns defaulting to the binding's).
* A rule matches when verb (or ``*``), API group (or ``*``) and resource match and, if
  it lists ``resourceNames``, the request names one of them (so such a rule never grants
  ``create`` or an unnamed ``list``). Resources: ``*`` matches everything including
  subresources; ``pods/exec`` matches only that; ``*/scale`` matches every ``scale``
  subresource. As upstream, ``pods/*`` is *not* "all pod subresources" (it matches a
  subresource literally named ``*``). ``nonResourceURLs``: exact, ``*``, or a trailing
  ``*`` prefix.
* A binding that names a missing role contributes an error; a denial then carries the
  reason ``RBAC: <error>`` (``[e1, e2]`` for several), appended to the Forbidden message.
  An allow carries ``RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User
  "u"``.

Also: :func:`forbidden_message` / :func:`forbidden_status` (the 403 texts and Status),
:meth:`RbacAuthorizer.is_cluster_admin`, :meth:`RbacAuthorizer.subject_access_review`
(the ``status`` of a (Self)SubjectAccessReview, for ``kubectl auth can-i``), and
:func:`default_cluster_roles` / :func:`default_cluster_role_bindings`.

Status bodies come from :mod:`hatchway.api.status`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hatchway.api import status as api_status
from hatchway.apiserver.authn import MASTERS_GROUP, UserInfo
from hatchway.apiserver.request_info import RequestInfo

__all__ = [
    "Attributes",
    "Decision",
    "RbacAuthorizer",
    "RbacPolicy",
    "default_cluster_role_bindings",
    "default_cluster_roles",
    "forbidden_message",
    "forbidden_status",
    "review_attributes",
    "rule_allows",
]

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Attributes:
    """What is asked (Kubernetes' authorizer.Attributes without the user)."""

    verb: str
    is_resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    @classmethod
    def from_request_info(cls, info: RequestInfo) -> Attributes:
        return cls(
            verb=info.verb,
            is_resource_request=info.is_resource_request,
            namespace=info.namespace,
            api_group=info.api_group,
            api_version=info.api_version,
            resource=info.resource,
            subresource=info.subresource,
            name=info.name,
            path=info.path,
        )

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class RbacPolicy:
    """One consistent set of RBAC objects (rbac/v1 dicts)."""

    roles: Sequence[Mapping[str, Any]] = ()
    cluster_roles: Sequence[Mapping[str, Any]] = ()
    role_bindings: Sequence[Mapping[str, Any]] = ()
    cluster_role_bindings: Sequence[Mapping[str, Any]] = ()
    _roles: dict[tuple[str, str], Mapping[str, Any]] = field(init=False, repr=False, compare=False)
    _cluster_roles: dict[str, Mapping[str, Any]] = field(init=False, repr=False, compare=False)
    _bindings_by_ns: dict[str, list[Mapping[str, Any]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("roles", "cluster_roles", "role_bindings", "cluster_role_bindings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        roles = {(_meta(r, "namespace"), _meta(r, "name")): r for r in self.roles}
        cluster_roles = {_meta(r, "name"): r for r in self.cluster_roles}
        by_ns: dict[str, list[Mapping[str, Any]]] = {}
        for b in self.role_bindings:
            by_ns.setdefault(_meta(b, "namespace"), []).append(b)
        object.__setattr__(self, "_roles", roles)
        object.__setattr__(self, "_cluster_roles", cluster_roles)
        object.__setattr__(self, "_bindings_by_ns", by_ns)

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> RbacPolicy:
        """Sort Role/ClusterRole/RoleBinding/ClusterRoleBinding dicts by ``kind``."""
        kinds: dict[str, list[Mapping[str, Any]]] = {
            "Role": [],
            "ClusterRole": [],
            "RoleBinding": [],
            "ClusterRoleBinding": [],
        }
        for obj in objects:
            kinds.get(str(obj.get("kind")), []).append(obj)
        return cls(
            kinds["Role"], kinds["ClusterRole"], kinds["RoleBinding"], kinds["ClusterRoleBinding"]
        )

    @classmethod
    def defaults(cls, *extra: Mapping[str, Any]) -> RbacPolicy:
        """The default roles and bindings plus ``extra`` objects."""
        return cls.from_objects(
            [*default_cluster_roles(), *default_cluster_role_bindings(), *extra]
        )

    def role_rules(
        self, role_ref: Mapping[str, Any], binding_namespace: str
    ) -> tuple[list[Mapping[str, Any]], str | None]:
        """The rules a roleRef points at, or an error text as Kubernetes words it."""
        kind, name = role_ref.get("kind"), str(role_ref.get("name", ""))
        if kind == "ClusterRole":
            role = self._cluster_roles.get(name)
            missing = f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        elif kind == "Role" and binding_namespace:
            role = self._roles.get((binding_namespace, name))
            missing = f'role.rbac.authorization.k8s.io "{name}" not found'
        else:
            return [], f"unsupported role reference kind: {kind!r}"
        if role is None:
            return [], missing
        return list(role.get("rules") or []), None

    def bindings_in(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._bindings_by_ns.get(namespace, [])


PolicySource = RbacPolicy | Callable[[], RbacPolicy | Awaitable[RbacPolicy]]


def _meta(obj: Mapping[str, Any], key: str) -> str:
    return str((obj.get("metadata") or {}).get(key) or "")


# ---------------------------------------------------------------- rule matching


def _has(values: Any, wanted: str) -> bool:
    return any(v == "*" or v == wanted for v in values or ())


def _resource_matches(rule_resources: Any, combined: str, subresource: str) -> bool:
    for res in rule_resources or ():
        if res == "*" or res == combined:
            return True
        if subresource and res == f"*/{subresource}":
            return True
    return False


def _url_matches(rule_urls: Any, path: str) -> bool:
    for url in rule_urls or ():
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """Kubernetes' RuleAllows for one PolicyRule dict."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.is_resource_request:
        return _url_matches(rule.get("nonResourceURLs"), attrs.path)
    names = rule.get("resourceNames") or ()
    return (
        _has(rule.get("apiGroups"), attrs.api_group)
        and _resource_matches(rule.get("resources"), attrs.resource_path, attrs.subresource)
        and (not names or attrs.name in names)
    )


def _subject_applies(subject: Mapping[str, Any], user: UserInfo, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_ns = subject.get("namespace") or namespace
        return bool(sa_ns) and user.name == f"{SA_PREFIX}{sa_ns}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], namespace: str) -> str:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or namespace}"'
    return f'{kind} "{name}"'


def _evaluate(policy: RbacPolicy, user: UserInfo, attrs: Attributes) -> Decision:
    errors: list[str] = []
    scopes: list[tuple[str, Iterable[Mapping[str, Any]]]] = [("", policy.cluster_role_bindings)]
    if attrs.namespace:
        scopes.append((attrs.namespace, policy.bindings_in(attrs.namespace)))
    for ns, bindings in scopes:
        for binding in bindings:
            found = _binding_allows(policy, binding, ns, user, attrs, errors)
            if found is not None:
                return Decision(True, f"RBAC: allowed by {found}")
    unique = list(dict.fromkeys(errors))
    if not unique:
        return Decision(False, "")
    joined = unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
    return Decision(False, f"RBAC: {joined}")


def _binding_allows(
    policy: RbacPolicy,
    binding: Mapping[str, Any],
    ns: str,
    user: UserInfo,
    attrs: Attributes,
    errors: list[str],
) -> str | None:
    """A description of the binding if it grants ``attrs`` to ``user``, else None."""
    subject = next(
        (s for s in binding.get("subjects") or () if _subject_applies(s, user, ns)), None
    )
    if subject is None:
        return None
    ref = binding.get("roleRef") or {}
    if not ns and ref.get("kind") != "ClusterRole":
        errors.append(f"unsupported role reference kind: {ref.get('kind')!r}")
        return None
    rules, error = policy.role_rules(ref, ns)
    if error:
        errors.append(error)
    if not any(rule_allows(r, attrs) for r in rules):
        return None
    name = _meta(binding, "name")
    label = f'ClusterRoleBinding "{name}"' if not ns else f'RoleBinding "{name}/{ns}"'
    return f'{label} of {ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, ns)}'


# ---------------------------------------------------------------- the authorizer


class RbacAuthorizer:
    """Answers "may this user do this?" from a policy source (see module docstring)."""

    def __init__(self, source: PolicySource) -> None:
        self._source = source

    async def policy(self) -> RbacPolicy:
        src = self._source
        if isinstance(src, RbacPolicy):
            return src
        result = src()
        if inspect.isawaitable(result):
            result = await result
        return result

    async def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        if MASTERS_GROUP in user.groups:
            return Decision(True, "")
        return _evaluate(await self.policy(), user, attrs)

    async def is_cluster_admin(self, user: UserInfo) -> bool:
        """``system:masters``, or granted every verb on every resource in every group at
        cluster scope (what binding ``cluster-admin`` with a ClusterRoleBinding gives)."""
        attrs = Attributes(verb="*", api_group="*", resource="*")
        return (await self.authorize(user, attrs)).allowed

    async def subject_access_review(
        self, spec: Mapping[str, Any], user: UserInfo | None = None
    ) -> dict[str, Any]:
        """The ``status`` of an access review. ``user`` is the caller for a
        SelfSubjectAccessReview; without it the spec's user/groups/uid/extra are used
        (SubjectAccessReview). ``reason`` is omitted when empty, as Kubernetes does.
        Raises StatusError (422 Invalid) unless exactly one of resourceAttributes and
        nonResourceAttributes is given."""
        kind = "SelfSubjectAccessReview" if user is not None else "SubjectAccessReview"
        attrs = review_attributes(spec, kind)
        if user is None:
            extra = {k: tuple(v) for k, v in (spec.get("extra") or {}).items()}
            user = UserInfo(
                str(spec.get("user") or ""),
                tuple(spec.get("groups") or ()),
                str(spec.get("uid") or ""),
                extra,
            )
        decision = await self.authorize(user, attrs)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return status

    async def rules_review(self, user: UserInfo, namespace: str) -> dict[str, Any]:
        """The ``status`` of a SelfSubjectRulesReview: every rule bound to ``user`` at
        cluster scope and in ``namespace``; ``incomplete`` when a binding points at a
        role that does not exist (as Kubernetes words it, in ``evaluationError``)."""
        rules, errors = user_rules(await self.policy(), user, namespace)
        status: dict[str, Any] = {
            "resourceRules": [_resource_rule(r) for r in rules if r.get("resources")],
            "nonResourceRules": [
                {"verbs": list(r.get("verbs") or []), "nonResourceURLs": list(r["nonResourceURLs"])}
                for r in rules
                if r.get("nonResourceURLs")
            ],
            "incomplete": bool(errors),
        }
        if errors:
            status["evaluationError"] = ", ".join(dict.fromkeys(errors))
        return status


def _resource_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: list(rule.get(key) or []) for key in ("verbs", "apiGroups", "resources")}
    if rule.get("resourceNames"):
        out["resourceNames"] = list(rule["resourceNames"])
    return out


def user_rules(
    policy: RbacPolicy, user: UserInfo, namespace: str
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The rules of every binding that applies to ``user`` (cluster-wide, then in
    ``namespace``), and the errors of bindings whose role is missing."""
    rules: list[Mapping[str, Any]] = []
    errors: list[str] = []
    scopes: list[tuple[str, Iterable[Mapping[str, Any]]]] = [("", policy.cluster_role_bindings)]
    if namespace:
        scopes.append((namespace, policy.bindings_in(namespace)))
    for ns, bindings in scopes:
        for binding in bindings:
            subjects = binding.get("subjects") or ()
            ref = binding.get("roleRef") or {}
            if not any(_subject_applies(s, user, ns) for s in subjects):
                continue
            if not ns and ref.get("kind") != "ClusterRole":
                continue
            found, error = policy.role_rules(ref, ns)
            if error:
                errors.append(error)
            rules.extend(found)
    return rules, errors


_EXACTLY_ONE = "exactly one of nonResourceAttributes or resourceAttributes must be specified"


def review_attributes(spec: Mapping[str, Any], kind: str = "SubjectAccessReview") -> Attributes:
    """Attributes from a SubjectAccessReviewSpec dict; StatusError (422) if it names
    neither or both of resourceAttributes and nonResourceAttributes."""
    res, nonres = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (res is None) == (nonres is None):
        cause = api_status.invalid_value("spec.resourceAttributes", None, _EXACTLY_ONE)
        raise api_status.StatusError(
            api_status.invalid(kind, "", [cause], group="authorization.k8s.io")
        )
    if nonres is not None:
        return Attributes(
            verb=str(nonres.get("verb") or ""),
            is_resource_request=False,
            path=str(nonres.get("path") or ""),
        )
    return Attributes(
        verb=str(res.get("verb") or ""),
        namespace=str(res.get("namespace") or ""),
        api_group=str(res.get("group") or ""),
        api_version=str(res.get("version") or ""),
        resource=str(res.get("resource") or ""),
        subresource=str(res.get("subresource") or ""),
        name=str(res.get("name") or ""),
    )


# ---------------------------------------------------------------- Forbidden texts


def _quote(text: str) -> str:
    """Go's ``%q`` for the texts we meet, as api/status.py quotes them."""
    return json.dumps(text, ensure_ascii=False)


def forbidden_message(user: UserInfo, attrs: Attributes, reason: str = "") -> str:
    """``User "alice" cannot create resource "pods/exec" in API group "" in the
    namespace "default"`` (``at the cluster scope``; ``cannot get path "/x"``), with
    ``: <reason>`` appended when the authorizer gave one."""
    who = f"User {_quote(user.name)} cannot {attrs.verb}"
    if not attrs.is_resource_request:
        text = f"{who} path {_quote(attrs.path)}"
    else:
        where = (
            f"in the namespace {_quote(attrs.namespace)}"
            if attrs.namespace
            else "at the cluster scope"
        )
        resource = _quote(attrs.resource_path)
        text = f"{who} resource {resource} in API group {_quote(attrs.api_group)} {where}"
    return f"{text}: {reason}" if reason else text


def forbidden_status(user: UserInfo, attrs: Attributes, reason: str = "") -> dict[str, Any]:
    """The 403 Status body Kubernetes sends when authorisation fails:
    ``pods "p" is forbidden: User ...`` (``forbidden: User ... path ...``)."""
    if not attrs.is_resource_request:
        return api_status.forbidden(user.name, attrs.verb, reason=reason, path=attrs.path)
    return api_status.forbidden(
        user.name,
        attrs.verb,
        attrs.resource,
        attrs.subresource,
        attrs.api_group,
        attrs.namespace,
        attrs.name,
        reason,
    )


# ---------------------------------------------------------------- defaults

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_DISCOVERY_URLS = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/swagger-2.0.0.pb-v1",
    "/version",
    "/version/",
]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _view_rules() -> list[dict[str, Any]]:
    return [
        _rule(
            _READ,
            [""],
            [
                "pods",
                "pods/log",
                "pods/status",
                "namespaces",
                "namespaces/status",
                "serviceaccounts",
                "events",
            ],
        )
    ]


def _edit_rules() -> list[dict[str, Any]]:
    return [
        *_view_rules(),
        _rule(_WRITE, [""], ["pods", "serviceaccounts"]),
        _rule(["create", *_READ], [""], ["pods/exec", "pods/attach", "pods/portforward"]),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        # Kubernetes' system:aggregate-to-edit grants this too: an editor may act as the
        # service accounts of the namespaces it edits (whose tokens it can mint anyway).
        _rule(["impersonate"], [""], ["serviceaccounts"]),
    ]


def _admin_rules() -> list[dict[str, Any]]:
    return [
        *_edit_rules(),
        _rule([*_READ, *_WRITE], [RBAC_GROUP], ["roles", "rolebindings"]),
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    ]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "ClusterRole",
        "apiVersion": RBAC_API_VERSION,
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    }


def default_cluster_roles() -> list[dict[str, Any]]:
    """cluster-admin, admin, edit, view, system:basic-user, system:discovery.

    view reads pods (with log and status), namespaces and service accounts but cannot
    exec, attach or port-forward; edit adds writing pods and service accounts, create on
    pods/exec, pods/attach and pods/portforward, serviceaccounts/token and ``impersonate``
    on serviceaccounts (Kubernetes' edit has both); admin adds Roles and RoleBindings.
    Only resources Hatchway serves, and users, groups and uids to impersonate (granted
    by cluster-admin's ``*`` alone, as on Kubernetes).
    """
    return [
        _cluster_role(
            "cluster-admin",
            [
                _rule(["*"], ["*"], ["*"]),
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
            ],
        ),
        _cluster_role("admin", _admin_rules()),
        _cluster_role("edit", _edit_rules()),
        _cluster_role("view", _view_rules()),
        _cluster_role(
            "system:basic-user",
            [
                _rule(
                    ["create"],
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
            ],
        ),
        _cluster_role("system:discovery", [{"verbs": ["get"], "nonResourceURLs": _DISCOVERY_URLS}]),
    ]


def _cluster_role_binding(name: str, role: str, group: str) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "apiVersion": RBAC_API_VERSION,
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}],
    }


def default_cluster_role_bindings() -> list[dict[str, Any]]:
    """cluster-admin to system:masters; basic-user and discovery to system:authenticated."""
    return [
        _cluster_role_binding("cluster-admin", "cluster-admin", MASTERS_GROUP),
        _cluster_role_binding("system:basic-user", "system:basic-user", "system:authenticated"),
        _cluster_role_binding("system:discovery", "system:discovery", "system:authenticated"),
    ]
