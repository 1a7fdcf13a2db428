"""``kubectl explain`` with every bundled kubectl (issue 12): the fields it lists are the
served schema's (OpenAPI v3, and v2 with ``--output plaintext-openapiv2``), with their
types, descriptions and ``-required-`` marks, for every served kind and nested paths
(protocol.md 2.9)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cluster import Cluster
from interop.support import Kubectl

#: explain's argument -> (group version document, definition name).
KINDS = {
    "pods": ("api/v1", "io.k8s.api.core.v1.Pod"),
    "namespaces": ("api/v1", "io.k8s.api.core.v1.Namespace"),
    "nodes": ("api/v1", "io.k8s.api.core.v1.Node"),
    "events": ("api/v1", "io.k8s.api.core.v1.Event"),
    "serviceaccounts": ("api/v1", "io.k8s.api.core.v1.ServiceAccount"),
    "roles": ("apis/rbac.authorization.k8s.io/v1", "io.k8s.api.rbac.v1.Role"),
    "clusterrolebindings": (
        "apis/rbac.authorization.k8s.io/v1",
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
    ),
    "selfsubjectaccessreviews": (
        "apis/authorization.k8s.io/v1",
        "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    ),
    "leases": ("apis/coordination.k8s.io/v1", "io.k8s.api.coordination.v1.Lease"),
}


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The components.schemas of each group version's served document."""
    index = json.loads(cluster.kubectl("get", "--raw", "/openapi/v3").stdout)["paths"]
    out: dict[str, dict[str, Any]] = {}
    for key, entry in index.items():
        raw = cluster.kubectl("get", "--raw", entry["serverRelativeURL"])
        assert raw.returncode == 0, raw.stderr
        out[key] = json.loads(raw.stdout)["components"]["schemas"]
    return out


def _fields(text: str, indent: int) -> list[str]:
    """The field names under ``FIELDS:`` at one indentation (v3 prints two spaces,
    v2 three), in order."""
    body = text[text.index("FIELDS:") :]
    return re.findall(rf"^ {{{indent}}}([A-Za-z0-9]+)\t<", body, re.MULTILINE)


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while True:
        target = schema.get("$ref") or (schema.get("allOf") or [{}])[0].get("$ref")
        if not target:
            return schema
        schema = schemas[target.rsplit("/", 1)[1]]


def _at(schemas: dict[str, Any], name: str, path: list[str]) -> dict[str, Any]:
    schema = schemas[name]
    for part in path:
        schema = _resolve(schemas, schema)
        schema = schema["properties"][part]
        schema = schema.get("items", schema)
    return _resolve(schemas, schema)


def _tree(schemas: dict[str, Any], schema: dict[str, Any], indent: int) -> list[tuple[int, str]]:
    """What ``--recursive`` lists: every field, sorted, each followed by its own."""
    out: list[tuple[int, str]] = []
    for name, prop in sorted((schema.get("properties") or {}).items()):
        out.append((indent, name))
        out += _tree(schemas, _resolve(schemas, prop.get("items", prop)), indent + 2)
    return out


def _explain(kubectl: Kubectl, *args: str) -> str:
    done = kubectl("explain", *args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@pytest.mark.parametrize("resource", sorted(KINDS))
def test_explain_lists_the_served_fields(
    kubectl: Kubectl, served: dict[str, dict[str, Any]], resource: str
) -> None:
    key, name = KINDS[resource]
    schema = served[key][name]
    text = _explain(kubectl, resource)
    assert f"KIND:       {name.rsplit('.', 1)[1]}" in text
    assert _fields(text, 2) == sorted(schema["properties"])
    first = schema["description"].split(". ")[0].split()
    assert " ".join(text[text.index("DESCRIPTION:") : text.index("FIELDS:")].split()).startswith(
        "DESCRIPTION: " + " ".join(first)
    )


def test_explain_nested_paths_and_required(
    kubectl: Kubectl, served: dict[str, dict[str, Any]]
) -> None:
    core = served["api/v1"]
    text = _explain(kubectl, "pod.spec.containers")
    container = _at(core, "io.k8s.api.core.v1.Pod", ["spec", "containers"])
    assert _fields(text, 2) == sorted(container["properties"])
    assert re.search(r"^  name\t<string> -required-$", text, re.MULTILINE)
    assert "FIELD: containers <[]Container>" in text
    text = _explain(kubectl, "pod.spec.containers.securityContext", "--recursive")
    context = _at(core, "io.k8s.api.core.v1.Pod", ["spec", "containers", "securityContext"])
    listed = re.findall(r"^( +)([A-Za-z0-9]+)\t<", text[text.index("FIELDS:") :], re.MULTILINE)
    assert [(len(indent), name) for indent, name in listed] == _tree(core, context, 2)
    assert "  capabilities\t<Capabilities>\n    add\t<[]string>\n    drop\t<[]string>" in text
    binding = _explain(kubectl, "rolebinding.subjects")
    subject = _at(
        served["apis/rbac.authorization.k8s.io/v1"],
        "io.k8s.api.rbac.v1.RoleBinding",
        ["subjects"],
    )
    assert _fields(binding, 2) == sorted(subject["properties"])
    assert "GROUP:      rbac.authorization.k8s.io" in binding


def test_explain_events_k8s_io(kubectl: Kubectl, served: dict[str, dict[str, Any]]) -> None:
    text = _explain(kubectl, "events", "--api-version=events.k8s.io/v1")
    event = served["apis/events.k8s.io/v1"]["io.k8s.api.events.v1.Event"]
    assert "GROUP:      events.k8s.io" in text
    assert _fields(text, 2) == sorted(event["properties"])
    assert {"regarding", "note", "reportingController", "deprecatedCount"} <= set(_fields(text, 2))


def test_explain_from_openapi_v2(kubectl: Kubectl) -> None:
    """``--output plaintext-openapiv2`` reads /openapi/v2 (gnostic protobuf)."""
    text = _explain(kubectl, "pod.spec", "--output", "plaintext-openapiv2")
    definitions = json.loads(kubectl("get", "--raw", "/openapi/v2").stdout)["definitions"]
    spec = definitions["io.k8s.api.core.v1.PodSpec"]
    assert _fields(text, 3) == sorted(spec["properties"])
    assert "RESOURCE: spec <Object>" in text
    assert "containers\t<[]Object> -required-" in text


def test_kubectl_revalidates_its_cached_documents_with_304(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    """kubectl keeps the documents in its HTTP cache (its HOME): the second explain asks
    with If-None-Match and gets 304s, no document again."""
    _explain(kubectl, "pod")
    log = cluster.data_dir / "audit.log"
    before = len(log.read_text().splitlines())
    _explain(kubectl, "pod")
    lines = [json.loads(line) for line in log.read_text().splitlines()[before:] if line]
    mine = [
        (line["path"], line["code"])
        for line in lines
        if line.get("path", "").startswith("/openapi/")
    ]
    assert ("/openapi/v3/api/v1", 304) in mine, mine
    assert all(code == 304 for _, code in mine), mine
