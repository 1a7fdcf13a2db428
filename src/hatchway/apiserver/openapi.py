"""A minimal OpenAPI v3 description: just what kubectl reads before ``create -f``.

kubectl 1.32 validates manifests (``--validate=strict`` by default). It first asks the
server's OpenAPI v3 whether the PATCH operation of the object's kind accepts the
``fieldValidation`` query parameter (k8s.io/cli-runtime ``queryParamVerifierV3``); if it
does, kubectl sends ``?fieldValidation=Strict`` and leaves validation to the server;
if the OpenAPI cannot be fetched at all, ``create -f`` fails with ``failed to download
openapi``. So the server publishes ``/openapi/v3`` (the index of group-versions) and
``/openapi/v3/<api|apis/group>/<version>`` with one path per resource carrying its
operations, ``x-kubernetes-group-version-kind`` and the ``fieldValidation``
parameter -- no schemas. Hatchway validates every object itself, so Strict holds.
``/openapi/v2`` stays 404; ``kubectl apply``, which needs schemas for its strategic
merge, is not supported by this description.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hatchway.api import resources
from hatchway.apiserver import openapi_schema

_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Ignore, Warn or Strict: how to treat unknown or duplicate fields.",
    "schema": {"type": "string", "uniqueItems": True},
}


def _gv_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operation(res: resources.Resource, action: str) -> dict[str, Any]:
    return {
        "operationId": f"{action}{res.kind}",
        "parameters": [_FIELD_VALIDATION] if action in ("create", "patch", "replace") else [],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": openapi_schema.gvk_of(res),
    }


def group_version_document(group: str, version: str) -> dict[str, Any] | None:
    """``GET /openapi/v3/<gv>``: paths and operations of the group-version, or None."""
    members = [r for r in resources.RESOURCES if (r.group, r.version) == (group, version)]
    if not members:
        return None
    paths: dict[str, Any] = {}
    for res in members:
        base = "/" + _gv_key(group, version)
        collection = (
            f"{base}/namespaces/{{namespace}}/{res.name}"
            if res.namespaced
            else (f"{base}/{res.name}")
        )
        paths[collection] = {"post": _operation(res, "create")}
        if "get" in res.verbs:
            paths[collection]["get"] = _operation(res, "list")
            paths[f"{collection}/{{name}}"] = {
                "get": _operation(res, "get"),
                "put": _operation(res, "replace"),
                "patch": _operation(res, "patch"),
                "delete": _operation(res, "delete"),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": resources.GIT_VERSION},
        "paths": paths,
        "components": {},
    }


def _hash(doc: dict[str, Any]) -> str:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(data).hexdigest().upper()[:128]


def index_document() -> dict[str, Any]:
    """``GET /openapi/v3``: where each group-version's document lives."""
    paths: dict[str, Any] = {}
    for group, version in resources.group_versions():
        doc = group_version_document(group, version)
        assert doc is not None
        key = _gv_key(group, version)
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={_hash(doc)}"}
    return {"paths": paths}


def document(path: str) -> dict[str, Any] | None:
    """The document for a request path under ``/openapi/v3``, or None (404)."""
    rest = path.removeprefix("/openapi/v3").strip("/")
    if not rest:
        return index_document()
    parts = rest.split("/")
    if len(parts) == 2 and parts[0] == "api":
        return group_version_document("", parts[1])
    if len(parts) == 3 and parts[0] == "apis":
        return group_version_document(parts[1], parts[2])
    return None
