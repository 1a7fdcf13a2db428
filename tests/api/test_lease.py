"""coordination.k8s.io/v1 Lease: MicroTime, validation, the table, and leader election's
record arithmetic (client-go's tryAcquireOrRenew and ReleaseOnCancel)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hatchway.api import lease, resources, table, validation
from hatchway.api.status import StatusError

NOW = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _lease(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "namespace": "kube-system"},
        "spec": spec,
    }


def test_micro_time_is_go_rfc3339_micro() -> None:
    assert lease.format_micro(NOW) == "2025-03-04T05:06:07.890123Z"
    assert lease.format_micro(NOW.replace(microsecond=0)) == "2025-03-04T05:06:07.000000Z"
    assert lease.parse_micro("2025-03-04T05:06:07.890123Z") == NOW
    assert lease.parse_micro("2025-03-04T07:06:07.890123+02:00") == NOW
    for bad in (
        "2025-03-04T05:06:07Z",  # metav1.Time, not MicroTime
        "2025-03-04T05:06:07.89Z",  # Go's layout wants all six digits
        "2025-03-04T05:06:07.8901234Z",
        "2025-03-04 05:06:07.890123Z",
        "2025-03-04T05:06:07.890123",  # no zone
        "2025-13-04T05:06:07.890123Z",
        5,
        None,
    ):
        assert lease.parse_micro(bad) is None, bad


def test_a_valid_lease_passes() -> None:
    stamp = lease.format_micro(NOW)
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    validation.check("leases", _lease(**spec, acquireTime=stamp, renewTime=stamp))
    validation.check("leases", _lease())  # every spec field is optional


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"leaseDurationSeconds": 0}, "spec.leaseDurationSeconds", "must be greater than 0"),
        ({"leaseDurationSeconds": -5}, "spec.leaseDurationSeconds", "must be greater than 0"),
        ({"leaseDurationSeconds": "15"}, "spec.leaseDurationSeconds", "32-bit integer"),
        ({"leaseDurationSeconds": True}, "spec.leaseDurationSeconds", "32-bit integer"),
        ({"leaseDurationSeconds": 2**31}, "spec.leaseDurationSeconds", "32-bit integer"),
        ({"leaseTransitions": -1}, "spec.leaseTransitions", "greater than or equal to 0"),
        ({"holderIdentity": 7}, "spec.holderIdentity", "must be a string"),
        ({"renewTime": "2025-03-04T05:06:07Z"}, "spec.renewTime", "MicroTime"),
        ({"acquireTime": "yesterday"}, "spec.acquireTime", "MicroTime"),
    ],
)
def test_invalid_specs_are_422_on_the_field(spec: dict, field: str, words: str) -> None:
    with pytest.raises(StatusError) as caught:
        validation.check("leases", _lease(**spec))
    assert caught.value.code == 422
    causes = caught.value.status["details"]["causes"]
    assert [c["field"] for c in causes] == [field]
    assert words in causes[0]["message"]
    assert caught.value.status["details"]["group"] == "coordination.k8s.io"


def test_a_lease_needs_a_namespace_and_a_subdomain_name() -> None:
    obj = _lease()
    obj["metadata"] = {"name": "Not_A_Name"}
    fields = {e.field for e in validation.validate("leases", obj)}
    assert fields == {"metadata.name", "metadata.namespace"}


def test_the_resource_is_served_in_its_group() -> None:
    res = resources.resolve("leases")
    assert res is not None and res.group_version == "coordination.k8s.io/v1"
    assert res.namespaced and "watch" in res.verbs
    assert resources.resolve("lease.coordination.k8s.io") is res
    assert resources.api_group("coordination.k8s.io")["preferredVersion"] == {
        "groupVersion": "coordination.k8s.io/v1",
        "version": "v1",
    }


def test_kubectl_get_leases_columns() -> None:
    held = _lease(holderIdentity="node-a")
    held["metadata"]["creationTimestamp"] = "2025-03-04T05:00:00Z"  # type: ignore[index]
    released = _lease()
    released["metadata"] = {"name": "free", "creationTimestamp": "2025-03-04T04:06:07Z"}
    doc = table.table("leases", [held, released], now=NOW)
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Name", "Holder", "Age"]
    assert [r["cells"] for r in doc["rows"]] == [["l", "node-a", "6m7s"], ["free", "", "60m"]]


def test_acquire_renew_take_over_and_release() -> None:
    me = lease.Election("me", 15.0)
    first = me.acquire_spec(None, NOW)
    assert first == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-03-04T05:06:07.890123Z",
        "renewTime": "2025-03-04T05:06:07.890123Z",
        "leaseTransitions": 0,
    }
    later = NOW + timedelta(seconds=2)
    renewed = me.acquire_spec({"spec": first}, later)  # renewal: acquireTime kept
    assert renewed["acquireTime"] == first["acquireTime"]
    assert renewed["renewTime"] == lease.format_micro(later)
    assert renewed["leaseTransitions"] == 0
    other = lease.Election("other", 15.0).acquire_spec({"spec": renewed}, later)
    assert other["holderIdentity"] == "other" and other["leaseTransitions"] == 1
    assert other["acquireTime"] == lease.format_micro(later)
    released = lease.Election("other", 15.0).release_spec({"spec": other}, later)
    assert lease.holder({"spec": released}) == ""
    assert released["leaseDurationSeconds"] == 1 and released["leaseTransitions"] == 1
    again = me.acquire_spec({"spec": released}, later)  # after a release: one more
    assert again["leaseTransitions"] == 2


def test_expiry_by_renew_time_and_duration() -> None:
    obj = _lease(renewTime=lease.format_micro(NOW), leaseDurationSeconds=10)
    assert not lease.expired(obj, NOW + timedelta(seconds=10))
    assert lease.expired(obj, NOW + timedelta(seconds=10, microseconds=1))
    assert lease.expired(_lease(leaseDurationSeconds=10), NOW)  # never renewed
