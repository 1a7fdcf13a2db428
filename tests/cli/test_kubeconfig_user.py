"""``hatchway kubeconfig user``: a minted user is authenticated but may do nothing until
an administrator binds a role; with ``edit`` bound she can exec, and groups count."""

from __future__ import annotations

import pathlib
import uuid

import yaml

from cluster import Cluster


def _mint(cluster: Cluster, tmp_path: pathlib.Path, user: str, *groups: str) -> str:
    flags = [f"--group={g}" for g in groups]
    result = cluster.hatchway(
        "kubeconfig", "user", user, *flags, "--data-dir", str(cluster.data_dir)
    )
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["current-context"] == f"{user}@hatchway"
    assert doc["clusters"][0]["cluster"]["server"] == cluster.server
    path = tmp_path / f"{user}.kubeconfig"
    path.write_bytes(result.stdout)
    return str(path)


def _binding(name: str, role: str, kind: str, subject: str) -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "default"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
        }
    ).encode()


def test_user_forbidden_until_edit_is_bound(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    pod = cluster.pod()
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    config = _mint(cluster, tmp_path, alice)
    denied = cluster.hatchway("exec", "--kubeconfig", config, pod, "--", "true")
    assert denied.returncode == 1
    assert denied.stderr.decode().startswith("Error from server (Forbidden): ")
    assert f'User "{alice}" cannot get resource "pods"' in denied.stderr.decode()
    can_i = cluster.hatchway("auth", "can-i", "create", "pods/exec", "--kubeconfig", config)
    assert (can_i.returncode, can_i.stdout) == (1, b"no\n")
    bound = cluster.hatchway(
        "create", "-f", "-", input=_binding(f"{alice}-edit", "edit", "User", alice)
    )
    assert bound.stdout == f"rolebinding.rbac.authorization.k8s.io/{alice}-edit created\n".encode()
    result = cluster.hatchway(
        "exec", "--kubeconfig", config, pod, "--", "sh", "-c", "echo in; exit 4"
    )
    assert (result.returncode, result.stdout) == (4, b"in\n"), result.stderr
    can_i = cluster.hatchway("auth", "can-i", "create", "pods/exec", "--kubeconfig", config)
    assert (can_i.returncode, can_i.stdout) == (0, b"yes\n")
    other_ns = cluster.hatchway(
        "auth", "can-i", "create", "pods/exec", "-n", "kube-system", "--kubeconfig", config
    )
    assert other_ns.returncode == 1


def test_group_with_view_cannot_exec(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    pod = cluster.pod()
    group = f"viewers-{uuid.uuid4().hex[:6]}"
    config = _mint(cluster, tmp_path, "bob", group)
    result = cluster.hatchway("create", "-f", "-", input=_binding(group, "view", "Group", group))
    assert result.returncode == 0, result.stderr
    listed = cluster.hatchway("get", "pods", "-o", "name", "--kubeconfig", config)
    assert f"pod/{pod}".encode() in listed.stdout
    denied = cluster.hatchway("exec", "--kubeconfig", config, pod, "--", "true")
    assert denied.returncode == 1
    assert b'cannot create resource "pods/exec"' in denied.stderr


def test_kubeconfig_user_errors(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    result = cluster.hatchway("kubeconfig", "user", "x", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and b"no cluster CA" in result.stderr
    result = cluster.hatchway(
        "kubeconfig",
        "user",
        "x",
        "--data-dir",
        str(cluster.data_dir),
        "--server",
        "https://example.test:6443",
    )
    assert yaml.safe_load(result.stdout)["clusters"][0]["cluster"]["server"] == (
        "https://example.test:6443"
    )
