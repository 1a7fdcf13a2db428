"""``--dry-run=server`` with every bundled kubectl: validation, defaulting and admission
run, nothing is stored (issue 12). Each write is followed by a read of what is stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from cluster import Cluster
from interop.support import SLEEP, Kubectl, Users, container, pod_manifest

pytestmark = pytest.mark.runc


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _manifest(name: str) -> dict[str, Any]:
    return pod_manifest(name, {"containers": [container("main", SLEEP)]})


def _stored(cluster: Cluster, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "pod", name, "-o", "json")
    if found.returncode != 0:
        assert b"NotFound" in found.stderr, found.stderr
        return None
    return json.loads(found.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def live_pod(cluster: Cluster) -> Any:
    name = _name("live")
    cluster.apply_pod(_manifest(name))
    yield name
    cluster.kubectl("delete", "pod", name, "--wait=false", "--grace-period=0")


def test_create_and_run_store_nothing(cluster: Cluster, kubectl: Kubectl) -> None:
    name = _name("dry")
    body = yaml.safe_dump(_manifest(name)).encode()
    made = kubectl("create", "-f", "-", "--dry-run=server", "-o", "json", input=body)
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    # What would have been stored: defaulted and given server fields, but no version.
    assert answer["metadata"]["name"] == name and answer["metadata"]["uid"]
    assert answer["spec"]["containers"][0]["imagePullPolicy"]
    assert "resourceVersion" not in answer["metadata"]
    assert _stored(cluster, name) is None
    ran = kubectl("run", name, "--image=busybox", "--dry-run=server", "--", "sleep", "9")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().strip() == f"pod/{name} created (server dry run)"
    assert _stored(cluster, name) is None


def test_delete_keeps_the_pod(cluster: Cluster, kubectl: Kubectl, live_pod: str) -> None:
    gone = kubectl("delete", "pod", live_pod, "--dry-run=server")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.decode().strip() == f'pod "{live_pod}" deleted (server dry run)'
    kept = _stored(cluster, live_pod)
    assert kept is not None and "deletionTimestamp" not in kept["metadata"]


def test_label_apply_and_diff_change_nothing(
    cluster: Cluster, kubectl: Kubectl, live_pod: str
) -> None:
    before = _stored(cluster, live_pod)
    assert before is not None
    labelled = kubectl("label", "pod", live_pod, "dry=yes", "--dry-run=server", "-o", "json")
    assert labelled.returncode == 0, labelled.stderr
    assert json.loads(labelled.stdout)["metadata"]["labels"]["dry"] == "yes"  # the answer
    changed = _manifest(live_pod)
    changed["metadata"]["labels"] = {"dry": "applied"}
    body = yaml.safe_dump(changed).encode()
    applied = kubectl("apply", "-f", "-", "--dry-run=server", input=body)
    assert applied.returncode == 0, applied.stderr
    assert b"(server dry run)" in applied.stdout
    # kubectl diff is a dry-run PATCH: exit 1 means "differences found".
    diffed = kubectl("diff", "-f", "-", input=body)
    assert diffed.returncode == 1, diffed.stderr
    assert b"+    dry: applied" in diffed.stdout, diffed.stdout
    after = _stored(cluster, live_pod)
    assert after is not None
    assert after["metadata"].get("labels") == before["metadata"].get("labels")


def test_admission_runs_on_a_dry_run(cluster: Cluster, kubectl: Kubectl, users: Users) -> None:
    """A privileged pod from an ``edit`` user: the dry run is refused in the very words
    of the real create, and the same pod without privilege is answered, not stored."""
    name = _name("dry-priv")
    manifest = _manifest(name)
    manifest["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    body = yaml.safe_dump(manifest).encode()
    dry = kubectl("create", "-f", "-", "--dry-run=server", kubeconfig=users.editor, input=body)
    real = kubectl("create", "-f", "-", kubeconfig=users.editor, input=body)
    assert dry.returncode != 0 and real.returncode != 0
    assert b"is forbidden" in real.stderr, real.stderr
    assert dry.stderr == real.stderr
    manifest["spec"]["containers"][0].pop("securityContext")
    body = yaml.safe_dump(manifest).encode()
    allowed = kubectl("create", "-f", "-", "--dry-run=server", kubeconfig=users.editor, input=body)
    assert allowed.returncode == 0, allowed.stderr
    assert _stored(cluster, name) is None


def test_an_unknown_dry_run_value_writes_nothing(cluster: Cluster) -> None:
    name = _name("dry-bad")
    body = json.dumps(_manifest(name)).encode()
    made = cluster.kubectl(
        "create", "--raw", "/api/v1/namespaces/default/pods?dryRun=Yes", "-f", "-", input=body
    )
    assert made.returncode != 0
    wording = b'is invalid: dryRun: Unsupported value: []string{"Yes"}: supported values: "All"'
    assert wording in made.stderr
    assert _stored(cluster, name) is None


def test_collection_and_namespace_deletes_keep_everything(cluster: Cluster) -> None:
    namespace = _name("dry-ns")
    cluster.apply_pod({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    name = _name("kept")
    manifest = _manifest(name)
    manifest["metadata"].update(namespace=namespace, labels={"dry": "kept"})
    cluster.apply_pod(manifest)
    try:
        path = f"/api/v1/namespaces/{namespace}/pods?labelSelector=dry%3Dkept&dryRun=All"
        listed = cluster.kubectl("delete", "--raw", path)
        assert listed.returncode == 0, listed.stderr
        assert [p["metadata"]["name"] for p in json.loads(listed.stdout)["items"]] == [name]
        gone = cluster.kubectl("delete", "namespace", namespace, "--dry-run=server")
        assert gone.returncode == 0, gone.stderr
        assert b"(server dry run)" in gone.stdout
        kept = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "name")
        assert kept.returncode == 0 and kept.stdout.strip() == f"pod/{name}".encode()
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
