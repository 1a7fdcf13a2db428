"""``hatchway kubeconfig user``: a minted user is authenticated but may do nothing until
an administrator binds a role; with ``edit`` bound she can exec, and groups count; system
identities are refused (system:masters only with --admin)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import uuid

import pytest
import yaml

from cluster import Cluster


def _mint(cluster: Cluster, tmp_path: pathlib.Path, user: str, *groups: str) -> str:
    flags = [g if g.startswith("--") else f"--group={g}" for g in groups]
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


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI without a cluster: refusals come before the CA is even read."""
    return subprocess.run(
        [sys.executable, "-m", "hatchway", "kubeconfig", "user", *args],
        capture_output=True,
        timeout=60,
    )


HINT = "See 'hatchway kubeconfig user -h' for help and examples\n"
SYSTEM_NAME = (
    'names starting with "system:" or "hatchway:" belong to the system '
    "(nodes get theirs from hatchway up)"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["hatchway-apiserver"],
            'the user name "hatchway-apiserver" is reserved for Hatchway\'s own components',
        ),
        (
            ["hatchway-apiserver", "--group", "hatchway:apiservers"],
            'the user name "hatchway-apiserver" is reserved for Hatchway\'s own components',
        ),
        (["admin", "--admin"], 'the user name "admin" is reserved for Hatchway\'s own components'),
        (
            ["system:node:n1", "--group", "system:nodes"],
            f'the user name "system:node:n1" is reserved: {SYSTEM_NAME}',
        ),
        (["system:anonymous"], f'the user name "system:anonymous" is reserved: {SYSTEM_NAME}'),
        (
            ["eve", "--group", "system:masters"],
            'the group "system:masters" makes the user a cluster administrator: '
            "it is given only to an explicit administrator (--admin)",
        ),
        (
            ["eve", "--group", "system:nodes", "--admin"],
            'the group "system:nodes" is reserved for the system',
        ),
        (
            ["eve", "--group", "hatchway:apiservers"],
            'the group "hatchway:apiservers" is reserved for the system',
        ),
        (["  "], "the user name may not be empty"),
    ],
)
def test_system_identities_are_refused(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == f"error: {message}\n{HINT}"


def test_help_says_what_is_refused() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "--admin" in text and "system:masters unless --admin is given" in text
    assert "(hatchway-apiserver, admin)" in text


def test_admin_mints_a_cluster_administrator(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    name = f"root-{uuid.uuid4().hex[:6]}"
    config = _mint(cluster, tmp_path, name, "system:masters", "--admin")
    can_i = cluster.hatchway("auth", "can-i", "*", "*", "--kubeconfig", config)
    assert (can_i.returncode, can_i.stdout) == (0, b"yes\n"), can_i.stderr
