"""What an HTTP request asks for, in authorisation terms (Kubernetes' RequestInfoFactory).

``parse_request_info(method, path, query)`` turns a request line into a
:class:`RequestInfo`: whether it is a resource request, and if so its API prefix, group,
version, namespace, resource, subresource, name and verb; otherwise the path and the
lower-cased HTTP method as verb (``/version``, ``/healthz``, ``/api``, ``/apis``).

    >>> info = parse_request_info("GET", "/api/v1/namespaces/default/pods/web/exec", "")
    >>> (info.verb, info.resource, info.subresource, info.namespace, info.name)
    ('create', 'pods', 'exec', 'default', 'web')

Rules, as Kubernetes applies them:

* A path is a resource request only under ``/api/{version}/...`` or
  ``/apis/{group}/{version}/...`` with at least one more segment; shorter paths
  (``/api``, ``/api/v1``, ``/apis/rbac.authorization.k8s.io/v1``) are non-resource.
* Verbs: POST→create, GET/HEAD→get, PUT→update, PATCH→patch, DELETE→delete; a GET
  without a name is ``list``, or ``watch`` with ``?watch=`` true (any value but ``0``
  and ``false``, as the API server parses booleans) or under the ``/watch/`` prefix; a
  DELETE without a name is ``deletecollection``. ``fieldSelector=metadata.name=X`` on a
  list or watch names the object, as in Kubernetes.
* ``namespaces/{ns}/{resource}/...`` sets the namespace; ``namespaces/{ns}`` alone and
  ``namespaces/{ns}/status|finalize`` are the namespace object itself.

Hatchway's one deliberate difference: **connect subresources** (``exec``, ``attach``,
``portforward``, ``proxy``) always get the verb ``create``, whatever the HTTP method, so
a user with only ``get`` on ``pods/exec`` cannot exec over a WebSocket GET (Kubernetes
1.32 maps GET→get there; 1.35 adds a second ``create`` check to close the same hole).

The seed's legacy exec path ``/proxy/minions/{node}/exec/{ns}/{pod}/{container}`` (also
with ``nodes`` for ``minions``, ``attach`` for ``exec``, and under an ``/api/{version}``
root) is mapped to what it does: ``create`` on ``pods/exec`` (or ``pods/attach``) of
``{pod}`` in ``{ns}``; ``legacy_node`` and ``container`` carry the rest.

``path`` is the request target's path as sent on the wire (percent-encoded); it is
decoded once here. ``query`` is the raw query string, or a mapping of name to values.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hatchway.protocol.exec_options import apiserver_bool as query_bool

__all__ = [
    "CONNECT_SUBRESOURCES",
    "RequestInfo",
    "parse_query",
    "parse_request_info",
    "query_bool",
]

API_PREFIXES = frozenset({"api", "apis"})
GROUPLESS_PREFIXES = frozenset({"api"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
SPECIAL_VERBS = frozenset({"proxy", "watch"})
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
LEGACY_PROXY_KINDS = frozenset({"minions", "nodes"})
LEGACY_ACTIONS = frozenset({"exec", "attach"})

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

Query = str | Mapping[str, Sequence[str]] | None


@dataclass(frozen=True)
class RequestInfo:
    """The authorisation view of one request; field names follow Kubernetes'."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = field(default_factory=tuple)
    legacy_node: str = ""
    container: str = ""

    @property
    def resource_path(self) -> str:
        """``resource`` or ``resource/subresource``, as RBAC rules spell it."""
        if self.subresource:
            return f"{self.resource}/{self.subresource}"
        return self.resource

    @property
    def is_connect(self) -> bool:
        """True for exec, attach, portforward and proxy subresource requests."""
        return self.is_resource_request and self.subresource in CONNECT_SUBRESOURCES


def parse_query(query: Query) -> dict[str, list[str]]:
    """A raw query string or a mapping, as ``{name: [values...]}`` in order."""
    if query is None:
        return {}
    if isinstance(query, str):
        return urllib.parse.parse_qs(query.lstrip("?"), keep_blank_values=True)
    return {k: list(v) for k, v in query.items()}


def _split(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


def parse_request_info(method: str, path: str, query: Query = None) -> RequestInfo:
    """Classify one request; never raises (unparseable paths are non-resource)."""
    if "?" in path:
        path, _, raw = path.partition("?")
        if query is None:
            query = raw
    path = urllib.parse.unquote(path)
    method = method.upper()
    parts = _split(path)
    legacy = _parse_legacy(path, parts)
    if legacy is not None:
        return legacy
    non_resource = RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix not in GROUPLESS_PREFIXES:
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    return _parse_resource(method, path, prefix, group, version, rest, parse_query(query))


def _parse_resource(
    method: str,
    path: str,
    prefix: str,
    group: str,
    version: str,
    rest: list[str],
    query: dict[str, list[str]],
) -> RequestInfo:
    if rest[0] in SPECIAL_VERBS:
        if len(rest) < 2:
            # Kubernetes answers this with an error; as nothing can match it, treat it
            # as a non-resource request that no rule but "*" grants.
            return RequestInfo(is_resource_request=False, path=path, verb=method.lower())
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb != "proxy" else ""
    if subresource in CONNECT_SUBRESOURCES:
        verb = "create"
    if not name and verb == "get":
        verb = "watch" if query_bool(query.get("watch")) else "list"
        name = _field_selector_name(query)
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(rest),
    )


def _field_selector_name(query: dict[str, list[str]]) -> str:
    """The name a ``fieldSelector`` of exactly ``metadata.name=X`` pins, else ''."""
    selectors = query.get("fieldSelector")
    if not selectors:
        return ""
    selector = selectors[0].strip()
    if "," in selector:
        return ""
    for op in ("==", "="):
        key, sep, value = selector.partition(op)
        if sep:
            if key.strip() == "metadata.name" and _valid_segment(value.strip()):
                return value.strip()
            return ""
    return ""


def _valid_segment(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "/" not in name and "%" not in name


def _parse_legacy(path: str, parts: list[str]) -> RequestInfo | None:
    """``[/api/{version}]/proxy/{minions|nodes}/{node}/{exec|attach}/{ns}/{pod}/{ctr}``."""
    offset = 2 if len(parts) >= 2 and parts[0] == "api" else 0
    tail = parts[offset:]
    if len(tail) != 7 or tail[0] != "proxy" or tail[1] not in LEGACY_PROXY_KINDS:
        return None
    node, action, namespace, pod, container = tail[2:]
    if action not in LEGACY_ACTIONS or not all((node, namespace, pod, container)):
        return None
    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb="create",
        api_prefix="api",
        api_group="",
        api_version="v1",
        namespace=namespace,
        resource="pods",
        subresource=action,
        name=pod,
        parts=("pods", pod, action),
        legacy_node=node,
        container=container,
    )
