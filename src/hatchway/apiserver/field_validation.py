"""``?fieldValidation=Ignore|Warn|Strict`` on create, update and patch.

As a Kubernetes API server does: fields the kind's schema (:mod:`.openapi_schema`) does
not name are dropped; with ``Warn`` (the default) each is reported in a ``Warning``
header, which kubectl prints; with ``Strict`` the request fails with 400
``strict decoding error: unknown field "spec.foo"``. kubectl >= 1.27 sends ``Strict``
when the server's OpenAPI advertises the parameter, which ours does. Duplicate fields
are not detected (the JSON is decoded before this runs).
"""

from __future__ import annotations

from typing import Any

from hatchway.api import resources, status
from hatchway.api.status import StatusError
from hatchway.apiserver import openapi_schema

DIRECTIVES = ("Ignore", "Warn", "Strict")


def directive(query: dict[str, list[str]], default: str = "Warn") -> str:
    values = query.get("fieldValidation")
    if not values or not values[0]:
        return default
    value = values[0]
    for known in DIRECTIVES:
        if value.lower() == known.lower():
            return known
    raise StatusError(
        status.bad_request(f"fieldValidation must be one of Ignore, Warn or Strict, not {value!r}")
    )


def _warning(text: str) -> tuple[str, str]:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return ("Warning", f'299 - "{escaped}"')


def check(
    query: dict[str, list[str]], res: resources.Resource, obj: Any, default: str = "Warn"
) -> list[tuple[str, str]]:
    """Drop the unknown fields of ``obj`` (in place); the ``Warning`` headers to send.
    Raises a 400 StatusError under Strict."""
    mode = directive(query, default)
    definition = openapi_schema.definition_for(res.group, res.version, res.kind)
    if definition is None or not isinstance(obj, dict):
        return []
    unknown = openapi_schema.unknown_fields(obj, definition, prune=True)
    messages = [f'unknown field "{path}"' for path in unknown]
    if not messages or mode == "Ignore":
        return []
    if mode == "Strict":
        raise StatusError(
            status.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}:'
                f" strict decoding error: {', '.join(messages)}"
            )
        )
    return [_warning(m) for m in messages]
