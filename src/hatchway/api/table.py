"""Server-side printing: ``meta.k8s.io/v1`` Table, as ``kubectl get`` asks for it with
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``.

Columns and cells follow the Kubernetes printers (pkg/printers/internalversion) for the
types we serve. Ages are computed from a ``now`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from hatchway.api.meta import parse_time

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although"
    " some resources may allow a client to request the generation of an appropriate name"
    " automatically. Name is primarily intended for creation idempotence and configuration"
    " definition. Cannot be updated. More info:"
    " https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was"
    " created. It is not guaranteed to be set in happens-before order across separate"
    " operations. Clients may not set this value. It is represented in RFC3339 form and is"
    " in UTC."
)

Column = tuple[str, str, str, str, int]  # name, type, format, description, priority


def _col(name: str, type_: str = "string", fmt: str = "", desc: str = "", prio: int = 0) -> Column:
    return (name, type_, fmt, desc, prio)


NAME = _col("Name", fmt="name", desc=_NAME_DESC)
AGE = _col("Age", desc=_AGE_DESC)


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration`` from k8s.io/apimachinery, as kubectl prints ages."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime) -> str:
    """``translateTimestampSince``: ``<unknown>`` when there is no timestamp."""
    moment = parse_time(timestamp or "")
    if moment is None:
        return "<unknown>"
    return human_duration((now - moment).total_seconds())


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


# -- pods -------------------------------------------------------------------------------


def _pod_status_text(pod: dict[str, Any]) -> tuple[str, int, int, int]:
    """(STATUS, ready, total, restarts) as printPod computes them (init containers too)."""
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    reason = st.get("reason") or st.get("phase") or ""
    total = len(spec.get("containers") or [])
    restarts = ready = 0
    init_specs = spec.get("initContainers") or []
    for i, cs in enumerate(st.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode") == 0:
            continue
        if term is not None:
            reason = "Init:" + (term.get("reason") or _exit_text(term))
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        break
    else:
        running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            state = cs.get("state") or {}
            wait, term = state.get("waiting"), state.get("terminated")
            if wait and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None:
                reason = term.get("reason") or _exit_text(term)
            elif "running" in state and cs.get("ready"):
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _pod_ready(st) else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, total, restarts


def _exit_text(term: dict[str, Any]) -> str:
    if term.get("signal"):
        return f"Signal:{term['signal']}"
    return f"ExitCode:{term.get('exitCode', 0)}"


def _pod_ready(st: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


POD_COLUMNS = [
    NAME,
    _col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", desc="The aggregate status of the containers in this pod."),
    _col(
        "Restarts",
        desc="The number of times the containers in this pod have been restarted and when"
        " the last container in this pod has restarted.",
    ),
    AGE,
    _col("IP", desc="The IP address of the pod", prio=1),
    _col("Node", desc="The name of the node to which this pod is scheduled", prio=1),
    _col("Nominated Node", desc="The name of the node where this pod is nominated to run", prio=1),
    _col("Readiness Gates", desc="The readiness gates of the pod", prio=1),
]


def _pod_cells(pod: dict[str, Any], now: datetime) -> list[Any]:
    reason, ready, total, restarts = _pod_status_text(pod)
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        done = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gates_text = f"{done}/{len(gates)}"
    return [
        _meta(pod).get("name", ""),
        f"{ready}/{total}",
        reason,
        str(restarts),
        age(_meta(pod).get("creationTimestamp"), now),
        st.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        st.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


# -- nodes, namespaces ------------------------------------------------------------------

NODE_COLUMNS = [
    NAME,
    _col("Status", desc="The status of the node"),
    _col("Roles", desc="The roles of the node"),
    AGE,
    _col("Version", desc="Kubelet Version reported by the node."),
    _col(
        "Internal-IP",
        desc="List of addresses reachable to the node. Queried from cloud provider, if available.",
        prio=1,
    ),
    _col(
        "External-IP",
        desc="List of addresses reachable to the node. Queried from cloud provider, if available.",
        prio=1,
    ),
    _col(
        "OS-Image",
        desc="OS Image reported by the node from /etc/os-release"
        " (e.g. Debian GNU/Linux 7 (wheezy)).",
        prio=1,
    ),
    _col(
        "Kernel-Version",
        desc="Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        prio=1,
    ),
    _col(
        "Container-Runtime",
        desc="ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        prio=1,
    ),
]


def _node_cells(node: dict[str, Any], now: datetime) -> list[Any]:
    st, spec = node.get("status") or {}, node.get("spec") or {}
    ready = [c for c in st.get("conditions") or [] if c.get("type") == "Ready"]
    text = "Unknown"
    if ready:
        text = "Ready" if ready[0].get("status") == "True" else "NotReady"
    if spec.get("unschedulable"):
        text += ",SchedulingDisabled"
    labels = _meta(node).get("labels") or {}
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    roles.discard("")
    addrs = st.get("addresses") or []
    info = st.get("nodeInfo") or {}

    def addr(kind: str) -> str:
        return next((a.get("address") for a in addrs if a.get("type") == kind), None) or "<none>"

    return [
        _meta(node).get("name", ""),
        text,
        ",".join(sorted(roles)) or "<none>",
        age(_meta(node).get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        addr("InternalIP"),
        addr("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NAMESPACE_COLUMNS = [
    NAME,
    _col("Status", desc="The status of the namespace"),
    AGE,
]


def _namespace_cells(ns: dict[str, Any], now: datetime) -> list[Any]:
    return [
        _meta(ns).get("name", ""),
        (ns.get("status") or {}).get("phase", ""),
        age(_meta(ns).get("creationTimestamp"), now),
    ]


# -- RBAC and the default ---------------------------------------------------------------

ROLE_COLUMNS = [NAME, _col("Created At", "date", desc=_AGE_DESC)]
BINDING_COLUMNS = [
    NAME,
    _col("Role", desc="Role to which this binding refers"),
    AGE,
    _col("Users", desc="Users to whom this binding refers", prio=1),
    _col("Groups", desc="Groups to whom this binding refers", prio=1),
    _col("ServiceAccounts", desc="ServiceAccounts to whom this binding refers", prio=1),
]
DEFAULT_COLUMNS = [NAME, _col("Created At", "date", desc=_AGE_DESC)]


EVENT_COLUMNS = [
    _col("Last Seen", desc="The time at which the most recent occurrence was recorded."),
    _col("Type", desc="Type of this event (Normal, Warning)."),
    _col("Reason", desc="A short, machine understandable reason for the transition."),
    _col("Object", desc="The object this event is about."),
    _col("Subobject", desc="The part of the object, such as a container.", prio=1),
    _col("Source", desc="The component reporting this event.", prio=1),
    _col("Message", desc="A human-readable description of the status of this operation."),
    _col("First Seen", desc="The time at which the event was first recorded.", prio=1),
    _col("Count", "integer", desc="The number of times this event has occurred.", prio=1),
    _col("Name", desc=_NAME_DESC, prio=1),
]


def _event_cells(event: dict[str, Any], now: datetime) -> list[Any]:
    """printEvent, wide (the server always answers every column)."""
    first = age(event.get("firstTimestamp") or event.get("eventTime"), now)
    last = age(event.get("lastTimestamp"), now) if event.get("lastTimestamp") else first
    ref = event.get("involvedObject") or {}
    kind = str(ref.get("kind") or "").lower()
    target = f"{kind}/{ref['name']}" if ref.get("name") else kind
    source = event.get("source") or {}
    origin = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return [
        last,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        ref.get("fieldPath", ""),
        f"{origin}, {host}" if host else origin,
        str(event.get("message") or "").strip(),
        first,
        int(event.get("count") or 1),
        _meta(event).get("name", ""),
    ]


SERVICE_ACCOUNT_COLUMNS = [
    NAME,
    _col("Secrets", "integer", desc="The number of secrets of the service account"),
    AGE,
]


def _service_account_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    secrets = obj.get("secrets") if isinstance(obj.get("secrets"), list) else []
    return [_meta(obj).get("name", ""), len(secrets), age(_meta(obj).get("creationTimestamp"), now)]


LEASE_COLUMNS = [
    NAME,
    _col("Holder", desc="holderIdentity contains the identity of the holder of a current lease."),
    AGE,
]


def _lease_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    """printLease: the holder is empty for a released lease."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    holder = spec.get("holderIdentity") or ""
    return [_meta(obj).get("name", ""), holder, age(_meta(obj).get("creationTimestamp"), now)]


def _created_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_meta(obj).get("name", ""), _meta(obj).get("creationTimestamp")]


def _binding_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    ref = obj.get("roleRef") or {}
    users, groups, sas = [], [], []
    for s in obj.get("subjects") or []:
        kind = s.get("kind")
        if kind == "User":
            users.append(s.get("name", ""))
        elif kind == "Group":
            groups.append(s.get("name", ""))
        elif kind == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}:{s.get('name', '')}")
    return [
        _meta(obj).get("name", ""),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        age(_meta(obj).get("creationTimestamp"), now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(sas),
    ]


Cells = Callable[[dict[str, Any], datetime], list[Any]]
PRINTERS: dict[str, tuple[list[Column], Cells]] = {
    "pods": (POD_COLUMNS, _pod_cells),
    "nodes": (NODE_COLUMNS, _node_cells),
    "namespaces": (NAMESPACE_COLUMNS, _namespace_cells),
    "serviceaccounts": (SERVICE_ACCOUNT_COLUMNS, _service_account_cells),
    "events": (EVENT_COLUMNS, _event_cells),
    "roles": (ROLE_COLUMNS, _created_cells),
    "clusterroles": (ROLE_COLUMNS, _created_cells),
    "rolebindings": (BINDING_COLUMNS, _binding_cells),
    "clusterrolebindings": (BINDING_COLUMNS, _binding_cells),
    "leases": (LEASE_COLUMNS, _lease_cells),
}


def _column_definition(col: Column) -> dict[str, Any]:
    name, type_, fmt, desc, prio = col
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": prio}


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _meta(obj),
    }


def table(
    resource: str,
    objects: list[dict[str, Any]],
    *,
    now: datetime,
    resource_version: str = "",
    include_object: str = "Metadata",
    continue_token: str = "",
) -> dict[str, Any]:
    """A Table of ``objects`` (a list, or one object in a list for a GET by name).

    ``include_object`` is the ``?includeObject=`` value: ``None``, ``Metadata``
    (PartialObjectMetadata, the default) or ``Object``.
    """
    columns, cells = PRINTERS.get(resource, (DEFAULT_COLUMNS, _created_cells))
    meta: dict[str, Any] = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj, now)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [_column_definition(c) for c in columns],
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for a meta.k8s.io/v1 Table first."""
    for part in accept.split(","):
        params = {
            k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])
        }
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            if params.get("v") == "v1":
                return True
            continue  # v1beta1 or another version: look further
        if part.split(";")[0].strip():
            return False  # a plain media type is preferred over any later Table
    return False
