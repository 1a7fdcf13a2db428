from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hatchway.api.defaults import apply_defaults, image_pull_policy, qos_class

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_pod_defaults():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    out = apply_defaults("pods", pod, namespace="default", uid="u1", now=NOW)
    assert pod == {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }  # the input is left alone
    assert out["apiVersion"] == "v1" and out["kind"] == "Pod"
    assert out["metadata"] == {
        "name": "p",
        "namespace": "default",
        "uid": "u1",
        "creationTimestamp": "2025-03-04T05:06:07Z",
    }
    spec = out["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["resources"] == {}
    assert out["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_pod_defaults_keep_given_values():
    pod = {
        "metadata": {"name": "p", "namespace": "x", "uid": "keep"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "c",
                    "image": "b:1",
                    "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 80}],
                }
            ],
        },
    }
    out = apply_defaults("pods", pod, namespace="default", uid="u", now=NOW)
    assert out["metadata"]["namespace"] == "x"
    assert out["metadata"]["uid"] == "u"  # the server's, never the client's (issue 9)
    assert out["spec"]["restartPolicy"] == "Never"
    assert out["spec"]["terminationGracePeriodSeconds"] == 0
    assert out["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("localhost:5000/busybox", "Always"),
        ("localhost:5000/busybox:1", "IfNotPresent"),
        ("busybox@sha256:abc", "IfNotPresent"),
    ],
)
def test_image_pull_policy(image, policy):
    assert image_pull_policy(image) == policy


def test_qos_class():
    def spec(res):
        return {"containers": [{"name": "c", "resources": res}]}

    assert qos_class(spec({})) == "BestEffort"
    assert qos_class(spec({"requests": {"cpu": "1"}})) == "Burstable"
    both = {"cpu": "1", "memory": "1Gi"}
    assert qos_class(spec({"limits": both})) == "Guaranteed"
    assert qos_class(spec({"limits": both, "requests": {"cpu": "500m"}})) == "Burstable"


def test_namespace_defaults():
    out = apply_defaults("namespaces", {"metadata": {"name": "dev"}}, namespace="ignored", now=NOW)
    assert "namespace" not in out["metadata"]
    assert out["metadata"]["labels"] == {"kubernetes.io/metadata.name": "dev"}
    assert out["spec"] == {"finalizers": ["kubernetes"]}
    assert out["status"] == {"phase": "Active"}
    assert out["kind"] == "Namespace"


def test_binding_subject_api_group():
    rb = {
        "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "default"},
        ],
    }
    out = apply_defaults("rolebindings", rb, namespace="default")
    assert out["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert out["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in out["subjects"][1]
    assert out["metadata"]["namespace"] == "default"
    assert "uid" not in out["metadata"] and "creationTimestamp" not in out["metadata"]
