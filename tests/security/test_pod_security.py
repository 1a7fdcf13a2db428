"""Pod Security admission against the real cluster, driven by the real kubectl as an
``edit`` user (issue 9, findings 1 and 5): no pod that reaches the node is admitted,
the namespace labels choose the level and only an administrator can set them, and a
pod the user could not have created cannot be exec'd or attached into either."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

import pytest
import yaml

from cluster import Cluster
from interop.support import kubectl_binary
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc

REFUSED = 'Error from server (Forbidden): error when creating "STDIN": pods "{}" is forbidden: '
RESTRICTED_DETAIL = (
    'allowPrivilegeEscalation != false (container "main" must set'
    " securityContext.allowPrivilegeEscalation=false),"
    ' unrestricted capabilities (container "main" must set'
    ' securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container'
    ' "main" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container'
    ' "main" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
)
RESTRICTED_ROOT = f'violates PodSecurity "restricted:latest": {RESTRICTED_DETAIL}'


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _refused(result: Any, name: str, text: str) -> None:
    assert result.returncode != 0, result.stdout
    assert result.stderr.decode().strip() == REFUSED.format(name) + text


def _create_in(attacker: Attacker, namespace: str, manifest: dict[str, Any]) -> Any:
    body = yaml.safe_dump(manifest).encode()
    return attacker.kubectl("create", "-f", "-", "--namespace", namespace, input=body)


def _absent(attacker: Attacker, name: str, namespace: str | None = None) -> None:
    ns = ("-n", namespace) if namespace else ()
    found = attacker.kubectl("get", "pod", name, *ns)
    assert found.returncode != 0 and b"NotFound" in found.stderr, found.stdout


def _replace(attacker: Attacker, pod: dict[str, Any]) -> Any:
    """``kubectl replace`` as a user runs it: again on a 409 Conflict.

    kubectl fills in an absent resourceVersion from a GET of its own, so the node's status
    writes can still race it; Kubernetes checks that conflict before validation too."""
    for _ in range(20):
        result = attacker.kubectl("replace", "-f", "-", input=json.dumps(pod).encode())
        if b"(Conflict)" not in result.stderr:
            return result
    return result


def labelled_namespace(cluster: Cluster, attacker: Attacker, labels: dict[str, str]) -> str:
    """A namespace the administrator labels, where the attacker is ``edit`` too."""
    name = _name("psa")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    namespace["metadata"]["labels"] = labels  # type: ignore[index]
    cluster.apply_pod(namespace)
    cluster.apply_pod(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{attacker.name}-edit", "namespace": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": attacker.name}
            ],
        }
    )
    return name


def test_finding_1_host_path_to_the_pki_is_refused(cluster: Cluster, attacker: Attacker) -> None:
    """The issue's path to cluster-admin: mount the data directory's pki/, read ca.key."""
    name = _name("steal")
    manifest = pod_manifest(
        name,
        attacker.namespace,
        spec={"volumes": [{"name": "p", "hostPath": {"path": str(cluster.data_dir / "pki")}}]},
        volumeMounts=[{"name": "p", "mountPath": "/pki"}],
    )
    result = attacker.create(manifest)
    _refused(result, name, 'violates PodSecurity "baseline:latest": hostPath volumes (volume "p")')
    _absent(attacker, name)
    lines = [json.loads(x) for x in (cluster.data_dir / "audit.log").read_text().splitlines()]
    denied = [x for x in lines if x["user"] == attacker.name and x["verb"] == "create"]
    denied = [x for x in denied if x.get("decision") == "deny"]
    denied = [x for x in denied if "hostPath volumes" in x["reason"]]
    assert denied and denied[-1]["code"] == 403 and denied[-1]["namespace"] == attacker.namespace


@pytest.mark.parametrize(
    ("container", "spec", "text"),
    [
        (
            {"securityContext": {"capabilities": {"add": ["SYS_ADMIN", "SYS_PTRACE"]}}},
            {},
            'non-default capabilities (container "main" must not include "SYS_ADMIN",'
            ' "SYS_PTRACE" in securityContext.capabilities.add)',
        ),
        (
            {"securityContext": {"privileged": True}},
            {},
            'privileged (container "main" must not set securityContext.privileged=true)',
        ),
        ({}, {"hostPID": True}, "host namespaces (hostPID=true)"),
        (
            {"ports": [{"containerPort": 80, "hostPort": 8080}]},
            {"hostNetwork": True},
            'host namespaces (hostNetwork=true), hostPort (container "main" uses hostPort 8080)',
        ),
        (
            {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
            {},
            'seccompProfile (container "main" must not set securityContext.seccompProfile.type'
            ' to "Unconfined")',
        ),
    ],
    ids=["capabilities", "privileged", "hostPID", "hostNetwork+hostPort", "seccomp"],
)
def test_baseline_refuses_what_reaches_the_node(
    attacker: Attacker, container: dict[str, Any], spec: dict[str, Any], text: str
) -> None:
    name = _name("bad")
    result = attacker.create(pod_manifest(name, attacker.namespace, spec=spec, **container))
    _refused(result, name, f'violates PodSecurity "baseline:latest": {text}')
    _absent(attacker, name)


def test_plain_pod_is_admitted_without_warnings(attacker: Attacker) -> None:
    name = _name("plain")
    result = attacker.create(pod_manifest(name, attacker.namespace))
    assert result.returncode == 0, result.stderr
    assert b"Warning" not in result.stderr
    attacker.kubectl("delete", "pod", name, "--wait=false")


def test_restricted_namespace_refuses_a_root_pod(cluster: Cluster, attacker: Attacker) -> None:
    ns = labelled_namespace(cluster, attacker, {"pod-security.kubernetes.io/enforce": "restricted"})
    name = _name("root")
    result = _create_in(attacker, ns, pod_manifest(name, ns))
    _refused(result, name, RESTRICTED_ROOT)
    hardened = pod_manifest(
        name,
        ns,
        spec={"securityContext": {"runAsNonRoot": True, "runAsUser": 1000}},
        securityContext={
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    )
    created = _create_in(attacker, ns, hardened)
    assert created.returncode == 0 and not created.stderr, created.stderr
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_warn_label_gives_kubectl_a_warning(cluster: Cluster, attacker: Attacker) -> None:
    ns = labelled_namespace(cluster, attacker, {"pod-security.kubernetes.io/warn": "restricted"})
    result = _create_in(attacker, ns, pod_manifest(_name("warned"), ns))
    assert result.returncode == 0, result.stderr
    expected = f'Warning: would violate PodSecurity "restricted:latest": {RESTRICTED_DETAIL}'
    assert result.stderr.decode().strip() == expected
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_the_attacker_cannot_relabel_the_namespace(attacker: Attacker) -> None:
    for args in (
        ("label", "namespace", attacker.namespace, "pod-security.kubernetes.io/enforce=privileged"),
        ("annotate", "namespace", attacker.namespace, "x=y"),
    ):
        result = attacker.kubectl(*args)
        assert result.returncode != 0
        assert (
            f'namespaces "{attacker.namespace}" is forbidden: User "{attacker.name}" cannot'
            ' patch resource "namespaces"'
        ) in result.stderr.decode()
    labels = attacker.get("namespace", attacker.namespace)["metadata"].get("labels") or {}
    assert "pod-security.kubernetes.io/enforce" not in labels


def test_invalid_label_values_are_refused_even_for_the_admin(cluster: Cluster) -> None:
    name = _name("badlabel")
    labels = {"pod-security.kubernetes.io/enforce": "bogus"}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    manifest["metadata"]["labels"] = labels  # type: ignore[index]
    created = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest).encode())
    assert created.returncode != 0
    assert (
        f'Namespace "{name}" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]:'
        ' Invalid value: "bogus": must be one of privileged, baseline, restricted'
    ) in created.stderr.decode()


@pytest.fixture(scope="module")
def admin_host_path_pod(
    cluster: Cluster, attacker: Attacker, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A running pod with a hostPath volume, created by the (exempt) administrator in the
    attacker's namespace."""
    shared: pathlib.Path = tmp_path_factory.mktemp("hostdir")
    name = _name("admins")
    manifest = pod_manifest(
        name,
        attacker.namespace,
        spec={"volumes": [{"name": "p", "hostPath": {"path": str(shared)}}]},
        volumeMounts=[{"name": "p", "mountPath": "/host"}],
    )
    cluster.apply_pod(manifest)
    cluster.wait_phase(name, namespace=attacker.namespace)
    return name


EXEC_REFUSED = (
    'Error from server (Forbidden): pods "{}" is forbidden: cannot exec into or attach to a'
    ' pod that violates PodSecurity "baseline:latest": hostPath volumes (volume "p")'
)


SPDY_KUBECTL = kubectl_binary("1.27")  # kubectl < 1.30 speaks SPDY only


@pytest.mark.parametrize(
    "binary",
    [
        "kubectl",
        pytest.param(
            str(SPDY_KUBECTL),
            marks=pytest.mark.skipif(SPDY_KUBECTL is None, reason="no kubectl.1.27"),
        ),
    ],
    ids=["websocket", "spdy"],
)
def test_no_exec_or_attach_into_a_pod_the_attacker_could_not_create(
    attacker: Attacker, admin_host_path_pod: str, binary: str
) -> None:
    name = admin_host_path_pod
    for args in (("exec", name, "--", "cat", "/etc/hostname"), ("attach", name)):
        result = attacker.kubectl(*args, binary=binary, timeout=30)
        assert result.returncode != 0, result.stdout
        assert result.stderr.decode().strip().endswith(EXEC_REFUSED.format(name)), result.stderr


def test_admin_is_exempt(cluster: Cluster, attacker: Attacker, admin_host_path_pod: str) -> None:
    result = cluster.kubectl(
        "exec", "-n", attacker.namespace, admin_host_path_pod, "--", "ls", "-d", "/host"
    )
    assert result.returncode == 0 and result.stdout == b"/host\n", result.stderr


def test_updates_of_a_violating_pod(attacker: Attacker, admin_host_path_pod: str) -> None:
    """A label is not a significant update (admitted, as PSA does); a new image is, and
    is refused; a spec change is refused by validation before admission."""
    name = admin_host_path_pod
    labelled = attacker.kubectl("label", "pod", name, "touched=yes")
    assert labelled.returncode == 0, labelled.stderr
    image = attacker.kubectl("set", "image", f"pod/{name}", "main=busybox:other")
    assert image.returncode != 0
    assert (
        f'pods "{name}" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes'
        ' (volume "p")'
    ) in image.stderr.decode()
    patch = [{"op": "add", "path": "/spec/hostNetwork", "value": True}]
    patched = attacker.kubectl("patch", "pod", name, "--type=json", "-p", json.dumps(patch))
    assert patched.returncode != 0 and b"is invalid" in patched.stderr, patched.stderr
    pod = attacker.get("pod", name)
    assert pod["spec"]["containers"][0]["image"] == "busybox"
    assert not pod["spec"].get("hostNetwork")


def test_replace_with_a_privileged_container_is_refused(attacker: Attacker) -> None:
    name = _name("replace")
    assert attacker.create(pod_manifest(name, attacker.namespace)).returncode == 0
    pod = attacker.get("pod", name)
    pod["metadata"].pop("resourceVersion")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    result = _replace(attacker, pod)
    assert result.returncode != 0
    assert f'Pod "{name}" is invalid: spec: Forbidden' in result.stderr.decode()
    pod["spec"]["containers"][0].pop("securityContext")
    pod["spec"]["containers"][0]["image"] = "busybox:other"
    changed = _replace(attacker, pod)
    assert changed.returncode == 0, changed.stderr  # a plain pod's new image is fine
    after = attacker.get("pod", name)["spec"]["containers"][0]
    assert after["image"] == "busybox:other" and not after.get("securityContext", {}).get(
        "privileged"
    )
    attacker.kubectl("delete", "pod", name, "--wait=false")
