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
#: The API server's exec admission, reporting a refused exec or attach.
APISERVER = "hatchway-apiserver"
EXEC_DENIED = "ExecDenied"


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


def exec_denied_message(action: str, user: str, reason: str) -> str:
    """What an ``ExecDenied`` event says: ``exec by user "bob" refused: <reason>``."""
    return f'{action} by user "{user}" refused: {reason}'


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


def repeat(stored: dict[str, Any], now: float, times: int = 1) -> dict[str, Any]:
    """The patch that records ``times`` more occurrences of ``stored``, the last at ``now``."""
    return {
        "count": int(stored.get("count") or 1) + times,
        "lastTimestamp": format_time(datetime.fromtimestamp(now, UTC)),
    }


class TokenBucket:
    """client-go's ``EventSourceObjectSpamFilter`` bucket: ``burst`` events at once, then
    one every ``1 / rate`` seconds. Time is passed in (this module has no clock)."""

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


#: The spam filter's defaults: 25 events about one object at once, then one per 5 minutes.
SPAM_BURST = 25
SPAM_RATE = 1 / 300


def source_object(event: dict[str, Any]) -> tuple[str, ...]:
    """What the spam filter counts against: the reporter and the object (not the message)."""
    full = key(event)
    return (*full[:5], *full[8:])


def last_seen(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or "")


# -- events.k8s.io/v1 ----------------------------------------------------------------------
# Kubernetes stores one Event and serves it in both groups; events.k8s.io/v1 renames
# (k8s.io/kubernetes pkg/apis/events/v1 conversion): what the two forms call each field.
EVENTS_GROUP = "events.k8s.io"
EVENTS_API_VERSION = "events.k8s.io/v1"
_V1_NAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
_CORE_NAMES = {v1: core for core, v1 in _V1_NAMES.items()}
#: Field selectors of events.k8s.io/v1 in the stored (core) spelling.
_V1_SELECTORS = {"regarding": "involvedObject", "reportingController": "reportingComponent"}
#: What an events.k8s.io/v1 create must carry (ValidateEventCreate for that group).
V1_REQUIRED = ("eventTime", "reportingController", "reportingInstance", "action", "reason")


def to_v1(event: dict[str, Any]) -> dict[str, Any]:
    """A stored (core/v1) Event as events.k8s.io/v1 shows it."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": EVENTS_API_VERSION}
    for key, value in event.items():
        if key in ("kind", "apiVersion") or (key in _V1_NAMES and value in (None, "", {})):
            continue
        out[_V1_NAMES.get(key, key)] = value
    return out


def to_core(event: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event in the stored (core/v1) form."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "v1"}
    for key, value in event.items():
        if key not in ("kind", "apiVersion"):
            out[_CORE_NAMES.get(key, key)] = value
    return out


def core_field_selector(selector: str) -> str:
    """An events.k8s.io/v1 field selector in core/v1 field names
    (``regarding.name=x`` is ``involvedObject.name=x``)."""
    terms = []
    for term in selector.split(","):
        for v1, core in _V1_SELECTORS.items():
            if term == v1 or term.startswith((v1 + ".", v1 + "=", v1 + "!")):
                term = core + term[len(v1) :]
                break
        terms.append(term)
    return ",".join(terms)
