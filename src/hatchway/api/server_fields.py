"""The metadata fields that belong to the server, whatever a client sends there.

Kubernetes' ``rest.BeforeCreate``/``BeforeUpdate`` and the pod strategy, in one place:

* on create: ``uid`` is a fresh one, ``creationTimestamp`` is now, ``generation`` is 1
  for the resources whose generation is tracked (pods, as since Kubernetes 1.34 where
  ``PodObservedGenerationTracking`` is on by default), and ``resourceVersion`` (the
  store's), ``deletionTimestamp``, ``deletionGracePeriodSeconds`` and ``managedFields``
  sent by the client are dropped;
* on update and patch: the stored values of all of them win; a tracked resource's
  generation goes up by one when its ``spec`` changes.

``managedFields`` are written only by server-side apply, which hands its own entries in
as ``managed``. Unlike Kubernetes, which lets a client reset managedFields on update,
Hatchway ignores what a client sends there: the entries only ever say what apply did.
``resourceVersion`` on update stays in the body: it is the client's precondition, and
the store replaces it.

Pure: the uid and the time are passed in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hatchway.api.meta import format_time, metadata

#: Kept from the stored object on every update (resourceVersion is the store's).
KEPT_ON_UPDATE = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
)
DROPPED_ON_CREATE = (*KEPT_ON_UPDATE, "resourceVersion")
#: Resources whose ``metadata.generation`` counts spec changes.
GENERATION_TRACKED = frozenset({"pods"})


def for_create(
    resource: str,
    obj: dict[str, Any],
    *,
    uid: str,
    now: datetime,
    managed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``obj`` (changed in place and returned) with the server's fields of a new object."""
    meta = metadata(obj)
    for key in DROPPED_ON_CREATE:
        meta.pop(key, None)
    meta["uid"] = uid
    meta["creationTimestamp"] = format_time(now)
    if resource in GENERATION_TRACKED:
        meta["generation"] = 1
    if managed:
        meta["managedFields"] = managed
    return obj


def for_update(
    resource: str,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    managed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``new`` (changed in place and returned) with the server's fields taken from
    ``old``, or ``managed`` as its managedFields (server-side apply)."""
    meta = metadata(new)
    old_meta = old.get("metadata") if isinstance(old.get("metadata"), dict) else {}
    for key in KEPT_ON_UPDATE:
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    if managed is not None:
        meta["managedFields"] = managed
        if not managed:
            del meta["managedFields"]
    if resource in GENERATION_TRACKED and new.get("spec") != old.get("spec"):
        meta["generation"] = _generation(old_meta) + 1
    return new


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``obj`` without ``metadata.managedFields`` (an applied
    configuration: its entries must not be merged into the stored ones)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _generation(meta: dict[str, Any]) -> int:
    value = meta.get("generation")
    # A pod stored before generations were tracked counts as generation 1.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
