"""OpenAPI v3: the index of group versions and one document per group version.

kubectl reads it twice. ``kubectl explain`` (1.27+) takes a kind's schema from
``components.schemas`` of its group version's document (found by
``x-kubernetes-group-version-kind``) and prints field names, types and descriptions;
manifest validation (``--validate=strict``, cli-runtime ``queryParamVerifierV3``)
looks for the ``fieldValidation`` parameter on the kind's PATCH operation, then sends
``?fieldValidation=Strict`` and leaves validation to the server (protocol.md 2.9).

The schemas are Kubernetes' own (:mod:`.openapi_schema`), each document holding the
definitions its kinds reach. As kube-openapi's ``handler3`` does, the index names every
document by the SHA-512 of its bytes (``?hash=``), a document carries that hash as its
``ETag`` (``If-None-Match`` gets a 304), a request with the current hash may be cached
for ever (``Cache-Control: public, immutable``) and one with a stale hash is redirected
(301) to the current one; kubectl keeps the documents in its HTTP cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from hatchway.api import resources
from hatchway.apiserver import openapi_schema
from hatchway.transport.httpmessage import Request, Response

_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Ignore, Warn or Strict: how to treat unknown or duplicate fields.",
    "schema": {"type": "string", "uniqueItems": True},
}
_SCHEMA_PREFIX = "#/components/schemas/"
#: Definitions every group version answers with (errors, delete bodies).
_COMMON = (
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
)


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


def _v3_schema(schema: Any) -> Any:
    """A v2 definition in v3 form: refs into ``components.schemas``; a ref with a
    description beside it wrapped in ``allOf``, as Kubernetes' v3 documents write it."""
    if isinstance(schema, list):
        return [_v3_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _v3_schema(value) for key, value in schema.items() if key != "$ref"}
    if "$ref" in schema:
        target = _SCHEMA_PREFIX + schema["$ref"].rsplit("/", 1)[1]
        if out:
            out["allOf"] = [{"$ref": target}]
        else:
            out["$ref"] = target
    return out


def _reachable(roots: list[str]) -> list[str]:
    defs = openapi_schema.definitions()
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        text = json.dumps(defs[name])
        todo.extend(part.split('"', 1)[0] for part in text.split('"$ref": "#/definitions/')[1:])
    return sorted(seen)


def _schemas(members: list[resources.Resource]) -> dict[str, Any]:
    roots = list(_COMMON)
    for res in members:
        name = openapi_schema.definition_for(res.group, res.version, res.kind)
        if name is not None:
            roots += [name, name + "List"]
    defs = openapi_schema.definitions()
    return {name: _v3_schema(defs[name]) for name in _reachable(roots)}


def group_version_document(group: str, version: str) -> dict[str, Any] | None:
    """``GET /openapi/v3/<gv>``: paths, operations and schemas of the group-version."""
    members = [r for r in resources.RESOURCES if (r.group, r.version) == (group, version)]
    if not members:
        return None
    paths: dict[str, Any] = {}
    for res in members:
        base = "/" + _gv_key(group, version)
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        collection = f"{base}{scope}/{res.name}"
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
        "components": {"schemas": _schemas(members)},
    }


def etag(data: bytes) -> str:
    """kube-openapi's ``computeETag``: the SHA-512 of the bytes, in upper-case hex."""
    return hashlib.sha512(data).hexdigest().upper()


@functools.cache
def _encoded(key: str) -> tuple[bytes, str] | None:
    """The JSON bytes of the document at ``key`` (``api/v1``…) and their hash."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == "api":
        doc = group_version_document("", parts[1])
    elif len(parts) == 3 and parts[0] == "apis":
        doc = group_version_document(parts[1], parts[2])
    else:
        return None
    if doc is None:
        return None
    data = json.dumps(doc, separators=(",", ":")).encode()
    return data, etag(data)


def index_document() -> dict[str, Any]:
    """``GET /openapi/v3``: where each group-version's document lives."""
    paths: dict[str, Any] = {}
    for group, version in resources.group_versions():
        key = _gv_key(group, version)
        encoded = _encoded(key)
        assert encoded is not None
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={encoded[1]}"}
    return {"paths": paths}


def document(path: str) -> dict[str, Any] | None:
    """The document for a request path under ``/openapi/v3``, or None (404)."""
    rest = path.removeprefix("/openapi/v3").strip("/")
    if not rest:
        return index_document()
    encoded = _encoded(rest)
    return json.loads(encoded[0]) if encoded is not None else None


def conditional(request: Request, data: bytes, tag: str, media: str) -> Response:
    """200 with ``data`` and its ``ETag``, or 304 when ``If-None-Match`` names it (Go's
    ``http.ServeContent``, which kube-openapi answers through)."""
    quoted = f'"{tag}"'
    headers = [("ETag", quoted), ("Vary", "Accept")]
    wanted = request.header("if-none-match") or ""
    if wanted.strip() == "*" or quoted in (t.strip().removeprefix("W/") for t in wanted.split(",")):
        return Response(304, headers, b"")
    return Response(200, [("Content-Type", media), *headers], data)


def serve(request: Request, path: str) -> Response | None:
    """``GET /openapi/v3[/<gv>]`` as kube-openapi answers it, or None (404)."""
    rest = path.removeprefix("/openapi/v3").strip("/")
    if not rest:
        data = json.dumps(index_document(), separators=(",", ":")).encode()
        return conditional(request, data, etag(data), "application/json")
    encoded = _encoded(rest)
    if encoded is None:
        return None
    data, tag = encoded
    given = (request.query.get("hash") or [""])[0]
    if given and given != tag:
        location = f"/openapi/v3/{rest}?hash={tag}"
        return Response(301, [("Location", location)], b"")
    response = conditional(request, data, tag, "application/json")
    if given:
        expires = datetime.now(UTC) + timedelta(days=365)
        response.headers += [
            ("Cache-Control", "public, immutable"),
            ("Expires", format_datetime(expires, usegmt=True)),
        ]
    return response
