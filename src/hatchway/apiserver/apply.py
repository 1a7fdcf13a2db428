"""Server-side apply (``PATCH`` with ``application/apply-patch+yaml``), minimal.

What is done, as Kubernetes does it:

* a missing object is created from the applied configuration;
* an existing one gets the configuration as a strategic merge of the fields it sets
  (lists merged by their keys from :mod:`.openapi_schema`);
* ``fieldManager`` is required; ``metadata.managedFields`` holds one ``Apply`` entry per
  manager with the set of fields it applied (``fieldsV1``: ``f:`` fields, ``k:`` list
  items by merge key; other lists are atomic), replaced on each apply.

What is not done (honest limits): no conflict detection between managers (``force`` is
accepted and ignored, two managers may overwrite each other's fields silently); fields a
manager applied before and leaves out now are not removed; non-Apply writes (create,
update, patch) record no managedFields entries of their own.
"""

from __future__ import annotations

import json
from typing import Any

from hatchway.api import resources, status
from hatchway.api.patch import strategic_merge_patch
from hatchway.api.status import StatusError
from hatchway.apiserver import openapi_schema

APPLY_PATCH = "application/apply-patch+yaml"


def is_apply(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == APPLY_PATCH


def field_manager(query: dict[str, list[str]]) -> str:
    manager = (query.get("fieldManager") or [""])[0]
    if not manager:
        raise StatusError(
            status.status(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        )
    return manager


def check_config(res: resources.Resource, config: Any, name: str) -> dict[str, Any]:
    """The applied configuration, checked against the URL."""
    if not isinstance(config, dict):
        raise StatusError(status.bad_request("the applied configuration is not an object"))
    meta = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    if meta.get("name") != name:
        raise StatusError(
            status.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on"
                f" the URL ({name})"
            )
        )
    if config.get("kind") != res.kind or config.get("apiVersion") != res.api_version:
        raise StatusError(
            status.bad_request(
                f"the applied configuration must be {res.api_version}, Kind={res.kind}"
            )
        )
    return config


def managed_fields(res: resources.Resource, config: dict[str, Any]) -> dict[str, Any]:
    """``fieldsV1`` of what ``config`` sets (apiVersion and kind excluded)."""
    definition = openapi_schema.definition_for(res.group, res.version, res.kind) or ""
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind")}
    return _fields(body, openapi_schema.ref(definition) if definition else {})


def _fields(value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = openapi_schema.subschema(schema, key) if schema else None
        out[f"f:{key}"] = _field_set(item, sub or {})
    return out


def _field_set(item: Any, schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(item, dict):
        return _fields(item, schema) if item else {}
    if isinstance(item, list):
        merge_key = schema.get("x-kubernetes-patch-merge-key")
        items_schema = schema.get("items") or {}
        out: dict[str, Any] = {}
        for element in item:
            if merge_key and isinstance(element, dict) and merge_key in element:
                ident = json.dumps({merge_key: element[merge_key]}, separators=(",", ":"))
                out[f"k:{ident}"] = {".": {}, **_fields(element, items_schema)}
        return out
    return {}


def record(
    obj: dict[str, Any], res: resources.Resource, config: dict[str, Any], manager: str, now: str
) -> dict[str, Any]:
    """``obj`` with the manager's Apply entry in ``metadata.managedFields`` replaced."""
    meta = obj.setdefault("metadata", {})
    entries = [
        e
        for e in meta.get("managedFields") or []
        if not (
            isinstance(e, dict) and e.get("manager") == manager and e.get("operation") == "Apply"
        )
    ]
    entries.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": res.api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": managed_fields(res, config),
        }
    )
    meta["managedFields"] = entries
    return obj


def merge(old: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The stored object with the applied fields merged in (no ``resourceVersion``
    precondition unless the configuration carries one)."""
    return strategic_merge_patch(old, config)
