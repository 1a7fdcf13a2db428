"""Kubernetes ``Status`` objects, built exactly as the Kubernetes API server builds them.

Field order matters to anyone comparing bytes with a real server: ``kind, apiVersion,
metadata, status, message, reason, details, code``; inside ``details``: ``name, group,
kind, uid, causes, retryAfterSeconds``; inside a cause: ``reason, message, field``.
Empty fields are left out, as Go's ``omitempty`` does. Messages follow
k8s.io/apimachinery/pkg/api/errors and apiserver's ``forbiddenMessage``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hatchway.errors import ApiError

RBAC_GROUP = "rbac.authorization.k8s.io"


class StatusError(ApiError):
    """An :class:`ApiError` raised by Hatchway itself, carrying the Status to answer with."""


class AdmissionDeniedError(StatusError):
    """A request refused by an admission check (exec admission, Pod Security admission).

    Answered like any StatusError, but audited as decision ``deny`` with the Status
    message as its reason, not as an allowed request that happened to fail."""


@dataclass(frozen=True)
class FieldError:
    """One validation failure, as k8s.io/apimachinery/pkg/util/validation/field.Error.

    ``type`` is the cause type: ``FieldValueRequired``, ``FieldValueInvalid``,
    ``FieldValueDuplicate``, ``FieldValueNotSupported``, ``FieldValueForbidden``,
    ``FieldValueTooLong``. ``value`` is the bad value (ignored for Required/Forbidden).
    """

    type: str
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        """``ErrorBody()``: the message without the field path."""
        label = _CAUSE_LABELS.get(self.type, self.type)
        if self.type in ("FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"):
            text = label
        else:
            text = f"{label}: {_go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


_CAUSE_LABELS = {
    "FieldValueRequired": "Required value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueNotFound": "Not found",
}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", field, None, detail)


def invalid_value(field: str, value: Any, detail: str = "") -> FieldError:
    return FieldError("FieldValueInvalid", field, value, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", field, value)


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(_go_quote(s) for s in supported)
    return FieldError("FieldValueNotSupported", field, value, detail)


def forbidden_field(field: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", field, None, detail)


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the strings we meet (JSON escaping is the same for printable text)."""
    return json.dumps(text, ensure_ascii=False)


def _go_value(value: Any) -> str:
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # Go's %#v of a []string, as field.Error prints a list value
        return "[]string{" + ", ".join(_go_quote(v) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"))


def status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A failure Status with the Kubernetes field order."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
    }
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Success Status (what DELETE of some collections answers)."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    out["status"] = "Success"
    if details is not None:
        out["details"] = details
    return out


def _details(
    name: str = "",
    group: str = "",
    kind: str = "",
    uid: str = "",
    causes: list[dict[str, str]] | None = None,
    retry_after: int = 0,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (("name", name), ("group", group), ("kind", kind), ("uid", uid)):
        if value:
            out[key] = value
    if causes:
        out["causes"] = causes
    if retry_after:
        out["retryAfterSeconds"] = retry_after
    return out


def qualified(resource: str, group: str = "") -> str:
    """``schema.GroupResource.String()``: ``pods``, ``roles.rbac.authorization.k8s.io``."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> dict[str, Any]:
    message = f"{qualified(resource, group)} {_go_quote(name)} not found"
    return status(404, "NotFound", message, _details(name=name, group=group, kind=resource))


def already_exists(resource: str, name: str, group: str = "") -> dict[str, Any]:
    message = f"{qualified(resource, group)} {_go_quote(name)} already exists"
    return status(409, "AlreadyExists", message, _details(name=name, group=group, kind=resource))


CONFLICT_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(
    resource: str, name: str, group: str = "", detail: str = CONFLICT_MODIFIED
) -> dict[str, Any]:
    message = f"Operation cannot be fulfilled on {qualified(resource, group)} {_go_quote(name)}: "
    return status(
        409, "Conflict", message + detail, _details(name=name, group=group, kind=resource)
    )


def invalid(kind: str, name: str, causes: list[FieldError], group: str = "") -> dict[str, Any]:
    """422 Invalid, as ``errors.NewInvalid(GroupKind, name, field.ErrorList)``."""
    what = f"{qualified(kind, group)} {_go_quote(name)} is invalid"
    texts = list(dict.fromkeys(str(c) for c in causes))  # Aggregate drops duplicates
    if len(texts) == 1:
        what += f": {texts[0]}"
    elif texts:
        what += f": [{', '.join(texts)}]"
    wire = [{"reason": c.type, "message": c.body(), "field": c.field} for c in causes]
    return status(422, "Invalid", what, _details(name=name, group=group, kind=kind, causes=wire))


def forbidden(
    user: str,
    verb: str,
    resource: str = "",
    subresource: str = "",
    group: str = "",
    namespace: str = "",
    name: str = "",
    reason: str = "",
    *,
    path: str = "",
) -> dict[str, Any]:
    """403 as the authorizing filter writes it; ``path`` for non-resource requests."""
    if not resource:
        text = f"User {_go_quote(user)} cannot {verb} path {_go_quote(path)}"
    else:
        full = f"{resource}/{subresource}" if subresource else resource
        text = f"User {_go_quote(user)} cannot {verb} resource {_go_quote(full)}"
        text += f" in API group {_go_quote(group)}"
        if namespace:
            text += f" in the namespace {_go_quote(namespace)}"
        else:
            text += " at the cluster scope"
    if reason:
        text += f": {reason}"
    return forbidden_message(resource, name, text, group)


def forbidden_message(resource: str, name: str, text: str, group: str = "") -> dict[str, Any]:
    """403 as ``errors.NewForbidden(GroupResource, name, err)`` (also used by admission)."""
    if not resource:
        message = f"forbidden: {text}"
    elif not name:
        message = f"{qualified(resource, group)} is forbidden: {text}"
    else:
        message = f"{qualified(resource, group)} {_go_quote(name)} is forbidden: {text}"
    return status(403, "Forbidden", message, _details(name=name, group=group, kind=resource))


def unauthorized(message: str = "Unauthorized") -> dict[str, Any]:
    return status(401, "Unauthorized", message)


def bad_request(message: str) -> dict[str, Any]:
    return status(400, "BadRequest", message)


def method_not_allowed(resource: str, action: str, group: str = "") -> dict[str, Any]:
    what = _go_quote(qualified(resource, group))
    message = f"{action} is not supported on resources of kind {what}"
    return status(405, "MethodNotAllowed", message, _details(group=group, kind=resource))


def too_many_requests(
    retry_after: int, message: str = "Too many requests, please try again later."
) -> dict[str, Any]:
    return status(429, "TooManyRequests", message, _details(retry_after=retry_after))


def internal_error(message: str) -> dict[str, Any]:
    return status(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        _details(causes=[{"message": message}]),
    )


def expired(message: str) -> dict[str, Any]:
    """410 Expired: what a watch or list from a compacted resourceVersion gets."""
    return status(410, "Expired", message)


def gone(message: str) -> dict[str, Any]:
    return status(410, "Gone", message)


def unsupported_media_type(message: str) -> dict[str, Any]:
    return status(415, "UnsupportedMediaType", message)


def not_found_path() -> dict[str, Any]:
    """The answer to a URL no handler serves."""
    return status(404, "NotFound", "the server could not find the requested resource", {})
