"""What every API server start makes sure exists, and the RBAC policy cache.

Seeded when missing (so a fresh data directory works and a restart keeps what users
changed): the namespaces ``default``, ``kube-system``, ``kube-public`` and
``kube-node-lease`` (where node agents keep their heartbeat Leases); Kubernetes'
default ClusterRoles and ClusterRoleBindings (``cluster-admin`` bound to
``system:masters``, ``admin``, ``edit``, ``view``, discovery and basic-user for every
authenticated user); and ``system:node``, bound to the group ``system:nodes``, which
lets node agents register and heartbeat their Node and its Lease, read pods and write pod
status; the
``default`` service account of every namespace. A default ClusterRole that exists but
lacks rules of this version gets them added, as Kubernetes reconciles its bootstrap roles
(unless an administrator set its ``rbac.authorization.kubernetes.io/autoupdate`` to
``"false"``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from hatchway.api import defaults
from hatchway.api.status import StatusError
from hatchway.apiserver.rbac import (
    RBAC_API_VERSION,
    RBAC_GROUP,
    RbacPolicy,
    default_cluster_role_bindings,
    default_cluster_roles,
)
from hatchway.apiserver.serviceaccounts import ensure_default
from hatchway.store.base import Store

log = logging.getLogger(__name__)

NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_GROUP = "system:nodes"
RBAC_RESOURCES = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})


def node_cluster_role() -> dict[str, Any]:
    """What a node agent may do (Kubernetes' ``system:node``, trimmed to our resources)."""
    read = ["get", "list", "watch"]
    return {
        "kind": "ClusterRole",
        "apiVersion": RBAC_API_VERSION,
        "metadata": {"name": "system:node"},
        "rules": [
            {"verbs": read, "apiGroups": [""], "resources": ["pods", "namespaces"]},
            {
                "verbs": [*read, "create", "update", "patch"],
                "apiGroups": [""],
                "resources": ["nodes"],
            },
            {
                "verbs": ["update", "patch"],
                "apiGroups": [""],
                "resources": ["nodes/status", "pods/status"],
            },
            {"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["create", "update", "patch"], "apiGroups": [""], "resources": ["events"]},
            # As Kubernetes' system:node; node_restriction.py narrows it to the node's own
            # Lease in kube-node-lease.
            {
                "verbs": ["get", "create", "update", "patch", "delete"],
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
            },
        ],
    }


def node_cluster_role_binding() -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "apiVersion": RBAC_API_VERSION,
        "metadata": {"name": "hatchway:nodes"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": NODE_GROUP}],
    }


async def _ensure(store: Store, resource: str, obj: dict[str, Any]) -> None:
    obj = defaults.apply_defaults(resource, obj, uid=str(uuid.uuid4()), now=datetime.now(UTC))
    try:
        await store.create(resource, obj)
    except StatusError as exc:
        if exc.code != 409:
            raise


AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"


async def _reconcile_role(store: Store, role: dict[str, Any]) -> None:
    """Create a default ClusterRole, or add the rules a stored one lacks while it keeps
    ``autoupdate: "true"`` (Kubernetes' reconciliation at start: permissions added by a
    newer version reach an older data directory; rules an administrator added stay, and
    a role they set ``autoupdate: "false"`` on is left alone)."""
    name = role["metadata"]["name"]
    try:
        stored = await store.get("clusterroles", "", name)
    except StatusError as exc:
        if exc.code != 404:
            raise
        await _ensure(store, "clusterroles", role)
        return
    annotations = (stored.get("metadata") or {}).get("annotations") or {}
    if annotations.get(AUTOUPDATE, "true") != "true":
        return
    rules = list(stored.get("rules") or [])
    missing = [rule for rule in role.get("rules") or [] if rule not in rules]
    if missing:
        stored["rules"] = rules + missing
        with contextlib.suppress(StatusError):  # changed meanwhile: the next start
            await store.update(
                "clusterroles", stored, expect_rv=stored["metadata"].get("resourceVersion")
            )
        log.info("cluster role %s: %d rules added by reconciliation", name, len(missing))


async def seed(store: Store) -> None:
    """Create whatever of the defaults is missing (default roles reconciled), and the
    ``default`` service account of every namespace."""
    for name in NAMESPACES:
        await _ensure(store, "namespaces", {"metadata": {"name": name}})
    for role in [*default_cluster_roles(), node_cluster_role()]:
        await _reconcile_role(store, role)
    for binding in [*default_cluster_role_bindings(), node_cluster_role_binding()]:
        await _ensure(store, "clusterrolebindings", binding)
    namespaces, _ = await store.list("namespaces")
    for namespace in namespaces:
        if not (namespace.get("metadata") or {}).get("deletionTimestamp"):
            await ensure_default(store, namespace["metadata"]["name"])


class PolicyCache:
    """The RBAC objects of the store, re-read after a local RBAC write or ``ttl``
    seconds (another API server on the same store may have written)."""

    def __init__(self, store: Store, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._policy: RbacPolicy | None = None
        self._loaded = 0.0
        self._generation = 0

    def invalidate(self) -> None:
        self._policy = None
        self._generation += 1

    async def __call__(self) -> RbacPolicy:
        if self._policy is not None and time.monotonic() - self._loaded < self.ttl:
            return self._policy
        generation = self._generation
        lists = {}
        for resource in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
            lists[resource], _ = await self.store.list(resource)
        policy = RbacPolicy(
            roles=lists["roles"],
            cluster_roles=lists["clusterroles"],
            role_bindings=lists["rolebindings"],
            cluster_role_bindings=lists["clusterrolebindings"],
        )
        if generation == self._generation:  # no RBAC write while we were reading
            self._policy, self._loaded = policy, time.monotonic()
        return policy
