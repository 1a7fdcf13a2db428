"""core/v1 Events, sans-I/O: what an event about an object says, and when two are one.

An event is what ``kubectl describe`` shows under ``Events:`` and ``kubectl get events``
/ ``kubectl events`` list: a ``reason`` (``Scheduled``, ``Pulled``, ``Created``,
``Started``, ``Killing``, ``BackOff``, ``Failed``, ``FailedScheduling``), a ``message``,
a ``type`` (``Normal`` or ``Warning``), the ``involvedObject`` (kind, namespace, name,
uid, apiVersion, and ``fieldPath`` such as ``spec.containers{main}``) and who reported it
(``source``/``reportingComponent``: ``kubelet`` on a node, ``default-scheduler``).

As Kubernetes' event recorder does, a repeat of the same event (same object, reason,
message, type and reporter) is not a new object: the first one's ``count`` grows and its
``lastTimestamp`` moves (:func:`repeat`). Events expire an hour after they were last
seen (:data:`TTL`), as the API server's ``--event-ttl`` default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hatchway.api.meta import format_time

NORMAL = "Normal"
WARNING = "Warning"
TTL = 3600.0
KUBELET = "kubelet"
SCHEDULER = "default-scheduler"


def involved(obj: dict[str, Any], field_path: str = "") -> dict[str, Any]:
    """The ``involvedObject`` reference to ``obj`` (a Pod or Node as stored)."""
    meta = obj.get("metadata") or {}
    ref = {
        "kind": obj.get("kind", ""),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": obj.get("apiVersion", "v1"),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return {k: v for k, v in ref.items() if v}


def container_path(name: str, init: bool = False) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def new_event(
    ref: dict[str, Any],
    reason: str,
    message: str,
    *,
    type_: str = NORMAL,
    component: str = KUBELET,
    host: str = "",
    now: float,
) -> dict[str, Any]:
    """A new Event object about ``ref``, named as Kubernetes names them
    (``<object name>.<hex nanoseconds>``), in the object's namespace (``default`` for a
    cluster-scoped one, as Kubernetes records Node events)."""
    moment = now
    stamp = format_time(datetime.fromtimestamp(moment, UTC))
    source: dict[str, str] = {"component": component}
    if host:
        source["host"] = host
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": f"{ref.get('name', 'event')}.{int(moment * 1e9):x}",
            "namespace": ref.get("namespace") or "default",
        },
        "involvedObject": ref,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host,
    }


def key(event: dict[str, Any]) -> tuple[str, ...]:
    """What makes two events the same one (object, reason, message, type, reporter)."""
    ref = event.get("involvedObject") or {}
    source = event.get("source") or {}
    return (
        str(ref.get("uid") or ""),
        str(ref.get("kind") or ""),
        str(ref.get("namespace") or ""),
        str(ref.get("name") or ""),
        str(ref.get("fieldPath") or ""),
        str(event.get("reason") or ""),
        str(event.get("message") or ""),
        str(event.get("type") or ""),
        str(source.get("component") or ""),
        str(source.get("host") or ""),
    )


def repeat(stored: dict[str, Any], now: float) -> dict[str, Any]:
    """The patch that records one more occurrence of ``stored`` at ``now``."""
    return {
        "count": int(stored.get("count") or 1) + 1,
        "lastTimestamp": format_time(datetime.fromtimestamp(now, UTC)),
    }


def last_seen(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or "")
