"""``GET /openapi/v2``: the Swagger 2.0 document kubectl <= 1.28 reads before ``create -f``.

Those kubectl versions build their manifest validator from it (client-go
``DiscoveryClient.OpenAPISchema``), and ``kubectl apply`` takes strategic-merge keys from
it. client-go asks for ``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and
decodes the body as protobuf whatever the answer's Content-Type says, so JSON is not an
option for them: the document is served as the gnostic ``openapi.v2.Document`` message
(google/gnostic ``openapiv2/OpenAPIv2.proto``), encoded here by hand. Vendor extensions
are ``NamedAny`` whose ``Any.yaml`` holds the value as JSON text (JSON is YAML), which
is what kube-openapi parses. Clients that ask for JSON get JSON.

Paths carry each resource's operations with ``x-kubernetes-group-version-kind`` and
the ``fieldValidation`` query parameter (cli-runtime's v2 ``QueryParamVerifier`` looks
for it on the PATCH operation); definitions come from :mod:`.openapi_schema`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from hatchway.api import resources
from hatchway.apiserver import openapi_schema

PROTOBUF_MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

_ACTIONS = {"post": "create", "get": "get", "put": "replace", "patch": "patch", "delete": "delete"}
_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "type": "string",
    "uniqueItems": True,
    "description": "Ignore, Warn or Strict: how to treat unknown or duplicate fields.",
}


def _operation(res: resources.Resource, method: str, collection: bool) -> dict[str, Any]:
    action = "list" if method == "get" and collection else _ACTIONS[method]
    op: dict[str, Any] = {
        "operationId": f"{action}{res.kind}",
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": openapi_schema.gvk_of(res),
    }
    if method in ("post", "put", "patch"):
        op["parameters"] = [_FIELD_VALIDATION]
    return op


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for res in resources.RESOURCES:
        base = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        collection = f"{base}{scope}/{res.name}"
        paths[collection] = {"post": _operation(res, "post", True)}
        if "get" in res.verbs:
            paths[collection]["get"] = _operation(res, "get", True)
            paths[f"{collection}/{{name}}"] = {
                m: _operation(res, m, False) for m in ("get", "put", "patch", "delete")
            }
    return paths


@functools.cache
def document() -> dict[str, Any]:
    """The document as JSON-shaped data."""
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": resources.GIT_VERSION},
        "paths": _paths(),
        "definitions": openapi_schema.definitions(),
    }


@functools.cache
def document_json() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


@functools.cache
def document_protobuf() -> bytes:
    return encode_document(document())


# -- gnostic protobuf ---------------------------------------------------------------------
# Field numbers are those of google/gnostic openapiv2/OpenAPIv2.proto.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _str(number: int, text: str) -> bytes:
    return _bytes(number, text.encode()) if text else b""


def _bool(number: int, value: bool) -> bytes:
    return _varint(number << 3) + b"\x01" if value else b""


def _extensions(number: int, obj: dict[str, Any]) -> bytes:
    """``repeated NamedAny`` {name=1, value=2 Any{yaml=2}} for every ``x-`` key."""
    out = b""
    for key, value in obj.items():
        if key.startswith("x-"):
            any_msg = _str(2, json.dumps(value, separators=(",", ":")))
            out += _bytes(number, _str(1, key) + _bytes(2, any_msg))
    return out


def encode_schema(schema: dict[str, Any]) -> bytes:
    """``openapi.v2.Schema``."""
    out = _str(1, schema.get("$ref", "")) + _str(2, schema.get("format", ""))
    out += _str(4, schema.get("description", ""))
    for name in schema.get("required", []):
        out += _str(19, name)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, encode_schema(extra)))
    if "type" in schema:
        out += _bytes(22, _str(1, schema["type"]))
    if "items" in schema:
        out += _bytes(23, _bytes(1, encode_schema(schema["items"])))
    if "properties" in schema:
        named = b"".join(
            _bytes(1, _str(1, key) + _bytes(2, encode_schema(value)))
            for key, value in schema["properties"].items()
        )
        out += _bytes(25, named)
    return out + _extensions(31, schema)


def _parameter(param: dict[str, Any]) -> bytes:
    """``ParametersItem{parameter=1 Parameter{non_body_parameter=2
    NonBodyParameter{query_parameter_sub_schema=3 ...}}}``."""
    query = (
        _str(2, param["in"])
        + _str(3, param.get("description", ""))
        + _str(4, param["name"])
        + _str(6, param.get("type", ""))
        + _bool(20, bool(param.get("uniqueItems")))
    )
    return _bytes(1, _bytes(2, _bytes(3, query)))


def _operation_pb(op: dict[str, Any]) -> bytes:
    out = _str(5, op.get("operationId", ""))
    for param in op.get("parameters", []):
        out += _bytes(8, _parameter(param))
    codes = b""
    for code, response in op.get("responses", {}).items():
        value = _bytes(1, _str(1, response.get("description", "")))
        codes += _bytes(1, _str(1, code) + _bytes(2, value))
    out += _bytes(9, codes)
    return out + _extensions(13, op)


_METHOD_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def encode_document(doc: dict[str, Any]) -> bytes:
    """``openapi.v2.Document``: swagger=1, info=2, paths=8, definitions=9."""
    info = doc.get("info", {})
    out = _str(1, doc.get("swagger", "2.0"))
    out += _bytes(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))
    paths = b""
    for path, item in doc.get("paths", {}).items():
        body = b"".join(
            _bytes(_METHOD_FIELDS[method], _operation_pb(op)) for method, op in item.items()
        )
        paths += _bytes(2, _str(1, path) + _bytes(2, body))
    out += _bytes(8, paths)
    definitions = b"".join(
        _bytes(1, _str(1, name) + _bytes(2, encode_schema(schema)))
        for name, schema in doc.get("definitions", {}).items()
    )
    return out + _bytes(9, definitions)
