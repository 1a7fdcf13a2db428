"""``coordination.k8s.io/v1`` Lease: MicroTime, validation, and leader election's
decisions, without I/O or a clock (callers pass ``now``; protocol.md 11).

A Lease's ``spec`` is client-go's LeaderElectionRecord: ``holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` (MicroTime,
``2006-01-02T15:04:05.000000Z07:00``) and ``leaseTransitions``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hatchway.api.status import FieldError, invalid_value

API_VERSION = "coordination.k8s.io/v1"
#: Go's RFC3339Micro, which metav1.MicroTime writes and parses: exactly six fraction
#: digits, then ``Z`` or a numeric offset.
_MICRO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)\Z")


def format_micro(moment: datetime) -> str:
    """MicroTime as ``metav1.MicroTime`` marshals it, in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro(text: Any) -> datetime | None:
    """The instant a MicroTime names, or None if it is not one."""
    if not isinstance(text, str) or not _MICRO.match(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def validate_spec(spec: Any) -> list[FieldError]:
    """ValidateLeaseSpec, with the MicroTime format checked here rather than by a decoder."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        return [invalid_value("spec", spec, "must be an object")]
    errs: list[FieldError] = []
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        errs.append(invalid_value("spec.holderIdentity", holder, "must be a string"))
    for key, floor, words in (
        ("leaseDurationSeconds", 1, "must be greater than 0"),
        ("leaseTransitions", 0, "must be greater than or equal to 0"),
    ):
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value > 2**31 - 1:
            errs.append(invalid_value(f"spec.{key}", value, "must be a 32-bit integer"))
        elif value < floor:
            errs.append(invalid_value(f"spec.{key}", value, words))
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and parse_micro(value) is None:
            errs.append(
                invalid_value(
                    f"spec.{key}", value, "must be a MicroTime (2006-01-02T15:04:05.000000Z07:00)"
                )
            )
    return errs


def expired(lease: dict[str, Any], now: datetime) -> bool:
    """Whether ``renewTime + leaseDurationSeconds`` is past (by the wall clock: what
    garbage collection of identity leases uses, never leader election)."""
    spec = lease.get("spec") or {}
    renewed = parse_micro(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return True
    return renewed + timedelta(seconds=duration) < now


def holder(lease: dict[str, Any] | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


@dataclass(frozen=True)
class Election:
    """One candidate's view: who it is and how long a lease it takes."""

    identity: str
    lease_duration: float

    def acquire_spec(self, current: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        """The spec to write to take or renew ``current`` (None: the lease is new), as
        client-go's tryAcquireOrRenew: a renewal keeps acquireTime and the transition
        count, a change of holder counts one more transition."""
        spec = (current or {}).get("spec") or {}
        stamp = format_micro(now)
        mine = current is not None and holder(current) == self.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": spec.get("acquireTime") if mine else stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions if mine or current is None else transitions + 1,
        }

    def release_spec(self, current: dict[str, Any], now: datetime) -> dict[str, Any]:
        """ReleaseOnCancel: holder cleared, duration 1 s, the transitions kept."""
        stamp = format_micro(now)
        return {
            "leaseDurationSeconds": 1,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": int(((current.get("spec") or {}).get("leaseTransitions")) or 0),
        }


def lease_object(
    namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": meta, "spec": spec}
