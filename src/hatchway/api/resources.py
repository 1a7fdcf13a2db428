"""The resources Hatchway serves, and the discovery documents kubectl reads about them.

Shapes follow what a Kubernetes 1.32 API server answers on ``/api``, ``/apis``,
``/api/v1``, ``/apis/<group>/<version>`` and ``/version`` (legacy, non-aggregated
discovery: kubectl falls back to it when the answer is plain ``application/json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CORE = ""
RBAC = "rbac.authorization.k8s.io"
AUTHZ = "authorization.k8s.io"
AUTHN = "authentication.k8s.io"
EVENTS = "events.k8s.io"
COORDINATION = "coordination.k8s.io"

_RW = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """One served resource, as an ``APIResource`` describes it."""

    name: str
    singular_name: str
    kind: str
    group: str
    version: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = field(default=())

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` an object of this resource carries."""
        return self.group_version

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "namespaces",
        "namespace",
        "Namespace",
        CORE,
        "v1",
        False,
        ("create", "delete", "get", "list", "patch", "update", "watch"),
        ("ns",),
        subresources=(Subresource("status", "Namespace", ("get", "patch", "update")),),
    ),
    Resource(
        "nodes",
        "node",
        "Node",
        CORE,
        "v1",
        False,
        _RW,
        ("no",),
        subresources=(Subresource("status", "Node", ("get", "patch", "update")),),
    ),
    Resource(
        "pods",
        "pod",
        "Pod",
        CORE,
        "v1",
        True,
        _RW,
        ("po",),
        ("all",),
        subresources=(
            Subresource("attach", "PodAttachOptions", ("create", "get")),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("log", "Pod", ("get",)),
            Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
            Subresource("status", "Pod", ("get", "patch", "update")),
        ),
    ),
    Resource("events", "event", "Event", CORE, "v1", True, _RW, ("ev",)),
    # The same objects, in events.k8s.io's names (apiserver/events_v1.py).
    Resource("events", "event", "Event", EVENTS, "v1", True, _RW, ("ev",)),
    Resource(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        CORE,
        "v1",
        True,
        _RW,
        ("sa",),
        subresources=(Subresource("token", "TokenRequest", ("create",)),),
    ),
    Resource(
        "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", RBAC, "v1", False, _RW
    ),
    Resource("clusterroles", "clusterrole", "ClusterRole", RBAC, "v1", False, _RW),
    Resource("rolebindings", "rolebinding", "RoleBinding", RBAC, "v1", True, _RW),
    Resource("roles", "role", "Role", RBAC, "v1", True, _RW),
    Resource(
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        AUTHZ,
        "v1",
        False,
        ("create",),
    ),
    Resource(
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        AUTHZ,
        "v1",
        False,
        ("create",),
    ),
    Resource(
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        AUTHN,
        "v1",
        False,
        ("create",),
    ),
    Resource(
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        AUTHZ,
        "v1",
        False,
        ("create",),
    ),
    # Leader election, API server identity and node heartbeats (apiserver/leader.py).
    Resource("leases", "lease", "Lease", COORDINATION, "v1", True, _RW),
)

_BY_KEY = {(r.group, r.name): r for r in RESOURCES}


def lookup(name: str, group: str = CORE) -> Resource | None:
    """The resource served as ``name`` in ``group``, or None."""
    return _BY_KEY.get((group, name))


def by_name(name: str) -> Resource | None:
    """The resource named ``name`` in any group (names are unique in what we serve)."""
    for res in RESOURCES:
        if res.name == name:
            return res
    return None


def resolve(token: str) -> Resource | None:
    """What kubectl-style argument ``token`` names: plural, singular, kind or short name,
    optionally qualified by group (``roles.rbac.authorization.k8s.io``)."""
    low = token.lower()
    name, _, group = low.partition(".")
    for res in RESOURCES:
        if group and res.group != group:
            continue
        names = {res.name, res.singular_name, res.kind.lower(), *res.short_names}
        if name in names:
            return res
    return None


#: The order a Kubernetes server lists them in.
_GROUP_ORDER = (CORE, EVENTS, AUTHN, AUTHZ, RBAC, COORDINATION)


def group_versions() -> list[tuple[str, str]]:
    """Every (group, version) served, core first, then groups in Kubernetes' order."""
    seen = {(res.group, res.version) for res in RESOURCES}
    return sorted(seen, key=lambda gv: (_GROUP_ORDER.index(gv[0]), gv[1]))


def api_versions(server_address: str | None = None) -> dict[str, Any]:
    """``GET /api``."""
    doc: dict[str, Any] = {"kind": "APIVersions", "versions": ["v1"]}
    if server_address:
        doc["serverAddressByClientCIDRs"] = [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ]
    return doc


def api_group(group: str) -> dict[str, Any]:
    """``GET /apis/<group>``: one APIGroup."""
    versions = [
        {"groupVersion": f"{g}/{v}", "version": v} for g, v in group_versions() if g == group
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0] if versions else {},
    }


def api_group_list() -> dict[str, Any]:
    """``GET /apis``."""
    groups = []
    for group in dict.fromkeys(g for g, _ in group_versions() if g != CORE):
        entry = api_group(group)
        del entry["kind"], entry["apiVersion"]
        groups.append(entry)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_entry(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": res.name,
        "singularName": res.singular_name,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    return entry


def _subresource_entry(res: Resource, sub: Subresource) -> dict[str, Any]:
    return {
        "name": f"{res.name}/{sub.name}",
        "singularName": "",
        "namespaced": res.namespaced,
        "kind": sub.kind,
        "verbs": list(sub.verbs),
    }


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` (group ``""``) or ``GET /apis/<group>/<version>``; None if unserved."""
    if (group, version) not in group_versions():
        return None
    entries: list[dict[str, Any]] = []
    members = [r for r in RESOURCES if r.group == group and r.version == version]
    for res in sorted(members, key=lambda r: r.name):
        entries.append(_resource_entry(res))
        entries.extend(_subresource_entry(res, sub) for sub in res.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


GIT_VERSION = "v1.32.4-hatchway"


def version_info(
    *,
    platform: str = "linux/amd64",
    git_commit: str = "0000000000000000000000000000000000000000",
    build_date: str = "2025-01-01T00:00:00Z",
    runtime: str = "python",
) -> dict[str, str]:
    """``GET /version``. Minor ``32`` matters: kubectl's dispatcher build picks its
    client from it (protocol.md 2.8)."""
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": git_commit,
        "gitTreeState": "clean",
        "buildDate": build_date,
        "goVersion": runtime,
        "compiler": "gc",
        "platform": platform,
    }
