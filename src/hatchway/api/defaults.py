"""Defaulting on create, as the Kubernetes API server fills in what a client left out.

Pure: the uid and the creation time are passed in. The input is not modified; a
defaulted deep copy is returned.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from hatchway.api import resources
from hatchway.api.meta import format_time, metadata

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def apply_defaults(
    resource: str,
    obj: dict[str, Any],
    *,
    namespace: str | None = None,
    uid: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A copy of ``obj`` (to be created as ``resource``) with every default filled in.

    ``namespace`` fills ``metadata.namespace`` of a namespaced object that has none;
    ``uid`` and ``now``, when given, are ``metadata.uid`` and ``metadata.creationTimestamp``
    whatever ``obj`` carries there (they are the server's: see :mod:`.server_fields`,
    which the API server applies to every create).
    """
    out = copy.deepcopy(obj)
    res = resources.by_name(resource)
    if res is not None:
        out.setdefault("apiVersion", res.api_version)
        out.setdefault("kind", res.kind)
    meta = metadata(out)
    if res is not None and res.namespaced and namespace and not meta.get("namespace"):
        meta["namespace"] = namespace
    if uid:
        meta["uid"] = uid
    if now is not None:
        meta["creationTimestamp"] = format_time(now)
    fill = _BY_RESOURCE.get(resource)
    if fill is not None:
        fill(out)
    return out


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or untagged images, else ``IfNotPresent`` (digests too)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(container: dict[str, Any]) -> None:
    if not isinstance(container, dict):
        return
    image = container.get("image")
    if isinstance(image, str) and image and not container.get("imagePullPolicy"):
        container["imagePullPolicy"] = image_pull_policy(image)
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                probe.setdefault(key, value)


def qos_class(spec: dict[str, Any]) -> str:
    """``Guaranteed``, ``Burstable`` or ``BestEffort`` from the containers' resources."""
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    any_set = False
    guaranteed = bool(containers)
    for container in containers:
        res = container.get("resources") or {}
        requests = res.get("requests") or {}
        limits = res.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    if spec.get("serviceAccountName") and not spec.get("serviceAccount"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            _container(container)
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", qos_class(spec))


def _namespace(obj: dict[str, Any]) -> None:
    meta = metadata(obj)
    name = meta.get("name")
    if isinstance(name, str) and name:
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels[NAMESPACE_NAME_LABEL] = name
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Active")


def _node(obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {})
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 10250}})


def _binding(obj: dict[str, Any]) -> None:
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and subject.get("kind") in ("User", "Group"):
            subject.setdefault("apiGroup", resources.RBAC)


_BY_RESOURCE = {
    "pods": _pod,
    "namespaces": _namespace,
    "nodes": _node,
    "rolebindings": _binding,
    "clusterrolebindings": _binding,
}
