"""Automation's credential, with every bundled kubectl (issue 12): ``kubectl create
serviceaccount``, ``kubectl create token``, the token used to exec once bound to ``edit``,
and the same token refused (401) once the account is deleted."""

from __future__ import annotations

import pathlib
import uuid

import pytest
import yaml

from cluster import Cluster
from interop.support import Kubectl, Pods

pytestmark = pytest.mark.runc


def _token_kubeconfig(cluster: Cluster, token: str, path: pathlib.Path) -> pathlib.Path:
    """The admin kubeconfig's server and CA, with the bearer token as the only credential."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "bot", "user": {"token": token}}]
    cluster_name = config["clusters"][0]["name"]
    config["contexts"] = [{"name": "bot", "context": {"cluster": cluster_name, "user": "bot"}}]
    config["current-context"] = "bot"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_service_account_token_runs_exec_until_the_account_goes(
    cluster: Cluster, kubectl: Kubectl, pods: Pods, tmp_path: pathlib.Path
) -> None:
    name = f"bot-{uuid.uuid4().hex[:6]}"
    made = kubectl("create", "serviceaccount", name)
    assert made.returncode == 0, made.stderr
    assert made.stdout.decode().strip() == f"serviceaccount/{name} created"
    minted = kubectl("create", "token", name, "--duration=20m")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.decode().strip()
    assert token.count(".") == 2
    config = _token_kubeconfig(cluster, token, tmp_path / "bot.kubeconfig")

    who = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=config)
    if kubectl.version != "1.27":  # 1.27 has whoami only behind an alpha gate
        assert who.stdout.decode() == f"system:serviceaccount:default:{name}", who.stderr
    denied = kubectl("exec", pods.simple, "--", "echo", "hi", kubeconfig=config)
    assert denied.returncode != 0 and b"forbidden" in denied.stderr, denied.stderr
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{name}-edit", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
    }
    cluster.apply_pod(binding)
    ran = kubectl("exec", pods.simple, "--", "echo", "hi", kubeconfig=config)
    assert (ran.returncode, ran.stdout) == (0, b"hi\n"), ran.stderr

    assert kubectl("delete", "serviceaccount", name).returncode == 0
    after = kubectl("get", "pods", kubeconfig=config)
    assert after.returncode != 0
    assert b"Unauthorized" in after.stderr, after.stderr
    cluster.kubectl("delete", "rolebinding", f"{name}-edit")
