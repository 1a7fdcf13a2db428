"""A node agent may write only its own Node, the pods bound to it, events about them, and
its own Lease in ``kube-node-lease``.

RBAC (``system:node``, bound to ``system:nodes``) says *what* a node agent may do; this
says *to which objects*, as Kubernetes' Node authorizer and NodeRestriction admission
do. The identity is the certificate's ``system:node:<name>`` in group ``system:nodes``.
Refusals are 403 Forbidden with Kubernetes' wording.
"""

from __future__ import annotations

from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.apiserver.authn import UserInfo
from hatchway.store.base import Store

NODE_PREFIX = "system:node:"
NODE_GROUP = "system:nodes"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NODE_LEASE_NAMESPACE = "kube-node-lease"


def node_identity(user: UserInfo) -> str | None:
    """The node a user speaks for, or None for any other user."""
    if NODE_GROUP in user.groups and user.name.startswith(NODE_PREFIX):
        return user.name[len(NODE_PREFIX) :] or None
    return None


def _forbid(user: UserInfo, resource: str, name: str, why: str) -> StatusError:
    return StatusError(
        status.forbidden_message(resource, name, f'node "{user.name[len(NODE_PREFIX) :]}" {why}')
    )


async def check(
    store: Store,
    user: UserInfo,
    method: str,
    resource: str,
    namespace: str,
    name: str,
    body: dict[str, Any] | None = None,
) -> None:
    """Raise 403 if a node agent writes an object that is not its own."""
    node = node_identity(user)
    if node is None:
        return
    if resource == "leases":  # reads too, as the Node authorizer's authorizeLease
        _check_lease(user, node, namespace, name, body)
        return
    if method not in WRITES:
        return
    if resource == "nodes":
        target = name or str(((body or {}).get("metadata") or {}).get("name") or "")
        if target != node:
            raise _forbid(user, "nodes", target, "is not allowed to modify node " + repr(target))
        return
    if resource == "pods" and name:
        pod = await store.get("pods", namespace, name)
        bound = (pod.get("spec") or {}).get("nodeName")
        if bound != node:
            raise _forbid(
                user, "pods", name, "can only modify pods bound to it, not one on " + repr(bound)
            )
        return
    if resource == "events" and method in ("POST", "PATCH", "PUT"):
        event = body if method == "POST" else await store.get("events", namespace, name)
        ref = (event or {}).get("involvedObject") or {}
        if ref.get("kind") == "Node" and ref.get("name") == node:
            return
        if ref.get("kind") == "Pod":
            pod = await store.get(
                "pods", str(ref.get("namespace") or namespace), ref.get("name", "")
            )
            if (pod.get("spec") or {}).get("nodeName") == node:
                return
        raise _forbid(user, "events", name, "may only report events about itself and its pods")
    raise _forbid(user, resource, name, f"may not {method.lower()} {resource}")


def _check_lease(
    user: UserInfo, node: str, namespace: str, name: str, body: dict[str, Any] | None
) -> None:
    """The Node authorizer's and NodeRestriction's rule for leases: only
    ``kube-node-lease/<node>``, by name (a list or watch of leases names none)."""
    target = name or str(((body or {}).get("metadata") or {}).get("name") or "")
    if namespace != NODE_LEASE_NAMESPACE:
        raise _forbid(user, "leases", target, f"can only access leases in {NODE_LEASE_NAMESPACE}")
    if target != node:
        raise _forbid(
            user, "leases", target, "can only access node lease with the same name as the node"
        )
