"""The schemas of the served kinds, as OpenAPI v2 definitions, and unknown-field checks.

One description serves four readers: ``kubectl explain`` (``/openapi/v3`` and, for
``--output plaintext-openapiv2``, ``/openapi/v2``), kubectl <= 1.28's manifest validator
and strategic-merge patch keys (``/openapi/v2``), the server's own ``fieldValidation``
(Strict rejects, Warn warns about fields no schema names) and :mod:`.apply` (merge keys
of lists).

The definitions are Kubernetes 1.32's own (descriptions, required fields, formats,
``x-kubernetes-*`` extensions), generated into :mod:`.openapi_defs` by
``scripts/gen_openapi_docs.py`` and limited to what the served kinds reach.
"""

from __future__ import annotations

import functools
from typing import Any

from hatchway.api import resources
from hatchway.apiserver.openapi_defs import DEFINITIONS


def gvk_of(res: resources.Resource) -> dict[str, str]:
    """The ``x-kubernetes-group-version-kind`` value of one operation on ``res``."""
    return {"group": res.group, "version": res.version, "kind": res.kind}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def definitions() -> dict[str, dict[str, Any]]:
    """Every definition, by its Kubernetes name (``io.k8s.api.core.v1.Pod``)."""
    return DEFINITIONS


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            out[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return out


def definition_for(group: str, version: str, kind_name: str) -> str | None:
    """The definition name of a kind, or None."""
    return _by_gvk().get((group, version, kind_name))


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def subschema(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of field ``key`` of an object schema (None: not modelled or unknown)."""
    props = _resolve(schema).get("properties")
    return props.get(key) if props is not None else None


def unknown_fields(obj: Any, definition: str, *, prune: bool = False) -> list[str]:
    """Paths of the fields of ``obj`` that ``definition`` does not name, in Kubernetes'
    spelling (``spec.containers[0].foo``); with ``prune`` they are removed from ``obj``
    (as Kubernetes drops what it cannot decode)."""
    out: list[str] = []
    _walk(obj, ref(definition), "", out, prune)
    return out


def _walk(value: Any, schema: dict[str, Any], path: str, out: list[str], prune: bool) -> None:
    schema = _resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None:
            for key in list(value):
                here = f"{path}.{key}" if path else str(key)
                if key in props:
                    _walk(value[key], props[key], here, out, prune)
                else:
                    out.append(here)
                    if prune:
                        del value[key]
        elif isinstance(extra, dict):
            for key, item in value.items():
                _walk(item, extra, f"{path}.{key}" if path else str(key), out, prune)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{i}]", out, prune)
