"""Exec admission: no exec, attach or port-forward into privileged pods except for
cluster admins.

    enforce = await pod_security.enforce_level(store, namespace)   # the namespace's level
    reason = exec_admission(pod, user, await authz.is_cluster_admin(user), enforce)
    if reason is not None:
        body = exec_forbidden_status(pod, reason)          # 403 Forbidden Status dict

``exec_admission(pod, user, is_admin) -> None | str`` returns ``None`` to admit, or why
not. The rule is the seed's (OpenShift's SCC exec plugin, upstream's
DenyEscalatingExec): a pod using the host network, host PID or host IPC namespace, or
with any privileged container (``securityContext.privileged: true`` in containers,
initContainers or ephemeralContainers) may be exec'd into or attached to only by a
cluster administrator. The reasons, checked in this order, are upstream's texts:

* ``cannot exec into or attach to a container using host network``
* ``cannot exec into or attach to a container using host pid``
* ``cannot exec into or attach to a container using host ipc``
* ``cannot exec into or attach to a privileged container``

Beyond the seed's rule, a non-administrator never reaches a pod they could not have
created: a pod that violates the Pod Security enforce level they are held to in its
namespace (``enforce``, baseline where the namespace says nothing; what create checks,
see :mod:`.pod_security`) is refused with

* ``cannot exec into or attach to a pod that violates PodSecurity "baseline:latest":
  hostPath volumes (volume "p")``

(Kubernetes has no such rule; the text joins the seed's prefix to PSA's own wording.)
Such pods exist when an administrator created them, or when the namespace's level was
raised after they were. The same applies to port-forward (:mod:`.portforward`).

``exec_forbidden_status(pod, reason)`` wraps one as Kubernetes' NewForbidden does:
``pods "p" is forbidden: cannot exec into or attach to a privileged container``
(reason Forbidden, code 403, details name/kind). The pod is a plain core/v1 dict;
``pod_escalation_reason(pod)`` is the check without the admin exemption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hatchway.api import pod_security as pss
from hatchway.api import status as api_status
from hatchway.apiserver.authn import UserInfo

__all__ = [
    "HOST_IPC",
    "HOST_NETWORK",
    "HOST_PID",
    "POD_SECURITY",
    "PRIVILEGED",
    "exec_admission",
    "exec_forbidden_status",
    "pod_escalation_reason",
]

HOST_NETWORK = "cannot exec into or attach to a container using host network"
HOST_PID = "cannot exec into or attach to a container using host pid"
HOST_IPC = "cannot exec into or attach to a container using host ipc"
PRIVILEGED = "cannot exec into or attach to a privileged container"
#: Followed by PSA's ``violates PodSecurity "level:version": ...``.
POD_SECURITY = "cannot exec into or attach to a pod that"

_HOST_CHECKS = (("hostNetwork", HOST_NETWORK), ("hostPID", HOST_PID), ("hostIPC", HOST_IPC))
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _is_privileged(spec: Mapping[str, Any]) -> bool:
    for key in _CONTAINER_LISTS:
        for container in spec.get(key) or ():
            context = container.get("securityContext") or {}
            if context.get("privileged") is True:
                return True
    return False


def pod_escalation_reason(pod: Mapping[str, Any]) -> str | None:
    """Why exec into this pod escalates privilege, or None if it does not."""
    spec = pod.get("spec") or {}
    for field, reason in _HOST_CHECKS:
        if spec.get(field) is True:
            return reason
    if _is_privileged(spec):
        return PRIVILEGED
    return None


def exec_admission(
    pod: Mapping[str, Any],
    user: UserInfo,
    is_admin: bool,
    enforce: pss.LevelVersion = pss.DEFAULT_POLICY.enforce,
) -> str | None:
    """None to admit the exec/attach; else the reason it is forbidden.

    ``user`` is accepted for the audit trail and future per-user policy; the decision
    depends on ``is_admin`` (see :meth:`RbacAuthorizer.is_cluster_admin`) and on
    ``enforce``, the Pod Security level that user is held to in the pod's namespace.
    """
    del user
    if is_admin:
        return None
    reason = pod_escalation_reason(pod)
    if reason is not None:
        return reason
    found = pss.evaluate(enforce, pod)
    return f"{POD_SECURITY} {pss.violates(enforce, found)}" if found else None


def exec_forbidden_status(pod: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The 403 Status for a refused exec/attach: ``pods "p" is forbidden: <reason>``."""
    name = str((pod.get("metadata") or {}).get("name") or "")
    return api_status.forbidden_message("pods", name, reason)
