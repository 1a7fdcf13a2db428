"""core/v1 and events.k8s.io/v1 forms of one Event (protocol.md 2.10)."""

from __future__ import annotations

from hatchway.api import events

CORE = {
    "kind": "Event",
    "apiVersion": "v1",
    "metadata": {"name": "p.1", "namespace": "default"},
    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
    "reason": "Started",
    "message": "Started container main",
    "source": {"component": "kubelet", "host": "n1"},
    "firstTimestamp": "2025-01-01T00:00:00Z",
    "lastTimestamp": "2025-01-01T00:00:05Z",
    "count": 2,
    "type": "Normal",
    "eventTime": None,
    "reportingComponent": "kubelet",
    "reportingInstance": "n1",
    "action": "Starting",
}


def test_core_to_v1_renames_as_kubernetes_converts() -> None:
    v1 = events.to_v1(CORE)
    assert v1 == {
        "kind": "Event",
        "apiVersion": "events.k8s.io/v1",
        "metadata": CORE["metadata"],
        "regarding": CORE["involvedObject"],
        "reason": "Started",
        "note": "Started container main",
        "deprecatedSource": {"component": "kubelet", "host": "n1"},
        "deprecatedFirstTimestamp": "2025-01-01T00:00:00Z",
        "deprecatedLastTimestamp": "2025-01-01T00:00:05Z",
        "deprecatedCount": 2,
        "type": "Normal",
        "eventTime": None,
        "reportingController": "kubelet",
        "reportingInstance": "n1",
        "action": "Starting",
    }
    assert events.to_core(v1) == CORE


def test_empty_renamed_fields_are_left_out() -> None:
    v1 = events.to_v1({**CORE, "source": {}, "lastTimestamp": None, "message": ""})
    assert not {"deprecatedSource", "deprecatedLastTimestamp", "note"} & set(v1)


def test_field_selectors_in_core_names() -> None:
    assert events.core_field_selector("regarding.name=p,reason=Started") == (
        "involvedObject.name=p,reason=Started"
    )
    assert events.core_field_selector("reportingController!=kubelet,type=Warning") == (
        "reportingComponent!=kubelet,type=Warning"
    )
    assert events.core_field_selector("regardingX=1") == "regardingX=1"
