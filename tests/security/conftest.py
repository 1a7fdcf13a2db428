"""Fixtures of the security suite: the attacker is a real user with the ``edit``
ClusterRole bound in a namespace of its own, driving the real ``kubectl`` against the
real local cluster (API server, node agent, runc).

``attacker.kubectl(...)`` runs kubectl with the attacker's kubeconfig and namespace;
``attacker.create(manifest)`` creates an object and returns the CompletedProcess (a
refusal is a non-zero return code with the server's text on stderr);
``admin`` is the cluster's own administrator (``cluster.kubectl``).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from cluster import Cluster
from interop.support import write_user_kubeconfig


@dataclass
class Attacker:
    cluster: Cluster
    name: str
    namespace: str
    kubeconfig: pathlib.Path

    def kubectl(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 60,
        binary: str = "kubectl",
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            env={**self.cluster.env, **(env or {})},
            timeout=timeout,
        )

    def create(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        return self.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest).encode())

    def get(self, *path: str) -> dict[str, Any]:
        result = self.kubectl("get", *path, "-o", "json")
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)  # type: ignore[no-any-return]


def pod_manifest(
    name: str, namespace: str, spec: dict[str, Any] | None = None, **container: Any
) -> dict[str, Any]:
    """A busybox pod sleeping forever; ``container`` adds fields to its one container."""
    main = {"name": "main", "image": "busybox", "command": ["sleep", "86400"], **container}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [main], "terminationGracePeriodSeconds": 1, **(spec or {})},
    }


def make_attacker(cluster: Cluster, directory: pathlib.Path, role: str = "edit") -> Attacker:
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"mallory-{suffix}", f"sec-{suffix}"
    cluster.apply_pod({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{name}-{role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
    }
    cluster.apply_pod(binding)
    path = write_user_kubeconfig(cluster, name, directory / f"{name}.kubeconfig")
    return Attacker(cluster, name, namespace, path)


@pytest.fixture(scope="session")
def attacker(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacker]:
    """A user bound to ``edit`` in a fresh namespace (shared by the whole run)."""
    found = make_attacker(cluster, tmp_path_factory.mktemp("attacker"))
    yield found
    cluster.kubectl("delete", "namespace", found.namespace, "--wait=false")
