"""What every API server start makes sure exists, and the RBAC policy cache.

Seeded when missing (so a fresh data directory works and a restart keeps what users
changed): the namespaces ``default``, ``kube-system``, ``kube-public``; Kubernetes'
default ClusterRoles and ClusterRoleBindings (``cluster-admin`` bound to
``system:masters``, ``admin``, ``edit``, ``view``, discovery and basic-user for every
authenticated user); and ``system:node``, bound to the group ``system:nodes``, which
lets node agents register and heartbeat their Node, read pods and write pod status.
"""

from __future__ import annotations

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
from hatchway.store.base import Store

NAMESPACES = ("default", "kube-system", "kube-public")
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


async def seed(store: Store) -> None:
    """Create whatever of the defaults is missing."""
    for name in NAMESPACES:
        await _ensure(store, "namespaces", {"metadata": {"name": name}})
    for role in [*default_cluster_roles(), node_cluster_role()]:
        await _ensure(store, "clusterroles", role)
    for binding in [*default_cluster_role_bindings(), node_cluster_role_binding()]:
        await _ensure(store, "clusterrolebindings", binding)


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
