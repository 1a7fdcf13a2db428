"""Small helpers over Kubernetes object metadata and timestamps (no clock: callers pass
``now``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, whole seconds, as ``metav1.Time`` marshals: ``2025-01-02T03:04:05Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    """The instant an RFC 3339 timestamp names, or None if it is empty or malformed."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj["metadata"]``, created empty if absent or not a mapping."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""
