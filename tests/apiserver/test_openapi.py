"""The OpenAPI v2 document (JSON and the gnostic protobuf kubectl <= 1.28 reads), the
schemas behind it, and ``fieldValidation`` over real TLS."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from hatchway.api import defaults, resources
from hatchway.api.protobuf import fields
from hatchway.api.status import StatusError
from hatchway.apiserver import field_validation, openapi_schema, openapi_v2
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

POD = resources.lookup("pods")
assert POD is not None


def _msgs(data: bytes, number: int) -> list[bytes]:
    return [v for n, v in fields(data) if n == number and isinstance(v, bytes)]


def _one(data: bytes, number: int) -> bytes:
    found = _msgs(data, number)
    assert len(found) <= 1, number
    return found[0] if found else b""


def _named(data: bytes, number: int) -> dict[str, bytes]:
    """A repeated Named* message {name=1, value=2} as a dict."""
    return {_one(m, 1).decode(): _one(m, 2) for m in _msgs(data, number)}


def decode_schema(data: bytes) -> dict[str, Any]:
    """openapi.v2.Schema back to JSON shape (the fields the encoder writes)."""
    out: dict[str, Any] = {}
    for key, number in (("$ref", 1), ("format", 2), ("description", 4)):
        if _one(data, number):
            out[key] = _one(data, number).decode()
    if _msgs(data, 19):
        out["required"] = [m.decode() for m in _msgs(data, 19)]
    if _msgs(data, 21):
        out["additionalProperties"] = decode_schema(_one(_one(data, 21), 1))
    if _msgs(data, 22):
        (out["type"],) = (m.decode() for m in _msgs(_one(data, 22), 1))
    if _msgs(data, 23):
        (items,) = _msgs(_one(data, 23), 1)
        out["items"] = decode_schema(items)
    if _msgs(data, 25):
        props = _named(_one(data, 25), 1)
        out["properties"] = {k: decode_schema(v) for k, v in props.items()}
    for name, value in _named(data, 31).items():
        out[name] = yaml.safe_load(_one(value, 2))
    return out


def test_protobuf_round_trips_every_definition() -> None:
    data = openapi_v2.document_protobuf()
    assert _one(data, 1) == b"2.0"
    assert _one(_one(data, 2), 2).decode() == resources.GIT_VERSION
    definitions = _named(_one(data, 9), 1)
    assert list(definitions) == list(openapi_schema.definitions())
    for name, schema in openapi_schema.definitions().items():
        assert decode_schema(definitions[name]) == schema, name
    pod = decode_schema(definitions["io.k8s.api.core.v1.Pod"])
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    spec = openapi_schema.definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert spec["containers"]["x-kubernetes-patch-merge-key"] == "name"


def test_protobuf_patch_operation_names_field_validation() -> None:
    """What cli-runtime's v2 QueryParamVerifier reads: the PATCH operation of the kind's
    path, its gvk extension and a query parameter named fieldValidation."""
    paths = _named(_one(openapi_v2.document_protobuf(), 8), 2)
    item = paths["/api/v1/namespaces/{namespace}/pods/{name}"]
    patch = _one(item, 8)
    extensions = {k: yaml.safe_load(_one(v, 2)) for k, v in _named(patch, 13).items()}
    gvk = extensions["x-kubernetes-group-version-kind"]
    assert gvk == {"group": "", "version": "v1", "kind": "Pod"}
    (param,) = _msgs(patch, 8)
    query = _one(_one(_one(param, 1), 2), 3)
    assert (_one(query, 4), _one(query, 2)) == (b"fieldValidation", b"query")
    assert "/api/v1/nodes/{name}" in paths
    assert "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles" in paths


def test_every_served_kind_has_a_definition() -> None:
    for res in resources.RESOURCES:
        assert openapi_schema.definition_for(res.group, res.version, res.kind), res.name
    assert openapi_schema.definition_for("apps", "v1", "Deployment") is None


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "y"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}},
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                }
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "affinity": {"nodeAffinity": {}},
        },
    }


def test_unknown_fields_paths_and_prune() -> None:
    pod = _pod()
    assert openapi_schema.unknown_fields(pod, "io.k8s.api.core.v1.Pod") == []
    pod["spec"]["containers"][0]["foo"] = 1
    pod["spec"]["bar"] = {"x": 1}
    pod["metadata"]["labels"]["ok"] = "yes"
    pod["metadata"]["nope"] = True
    found = openapi_schema.unknown_fields(pod, "io.k8s.api.core.v1.Pod", prune=True)
    assert sorted(found) == ["metadata.nope", "spec.bar", "spec.containers[0].foo"]
    assert pod == {**_pod(), "metadata": {**_pod()["metadata"], "labels": {"a": "b", "ok": "yes"}}}


def test_unknown_fields_deep_inside_the_pod() -> None:
    """Kubernetes' own schemas: probes, affinity, security contexts and volume sources
    are modelled field by field, as the real server decodes them."""
    pod = _pod()
    container = pod["spec"]["containers"][0]
    container["livenessProbe"]["anyThing"] = 1
    container["securityContext"] = {"runAsUser": 1, "capabilities": {"add": [], "drop": []}}
    container["securityContext"]["privilegd"] = True
    pod["spec"]["volumes"][0]["emptyDir"]["medium"] = "Memory"
    pod["spec"]["volumes"].append({"name": "h", "hostPth": {"path": "/"}})
    pod["spec"]["affinity"]["nodeAffinity"]["required"] = {}
    found = openapi_schema.unknown_fields(pod, "io.k8s.api.core.v1.Pod")
    assert sorted(found) == [
        "spec.affinity.nodeAffinity.required",
        "spec.containers[0].livenessProbe.anyThing",
        "spec.containers[0].securityContext.privilegd",
        "spec.volumes[1].hostPth",
    ]


def test_defaulted_objects_have_no_unknown_fields() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    for name, obj in [
        ("pods", _pod()),
        ("namespaces", {"metadata": {"name": "n"}}),
        ("nodes", {"metadata": {"name": "n"}}),
    ]:
        res = resources.lookup(name)
        assert res is not None
        full = defaults.apply_defaults(name, obj, namespace="default", uid="u", now=now)
        definition = openapi_schema.definition_for(res.group, res.version, res.kind)
        assert definition and openapi_schema.unknown_fields(full, definition) == [], name


def test_field_validation_directives() -> None:
    bad = _pod()
    bad["spec"]["containers"][0]["foo"] = 1
    assert POD is not None
    obj = copy.deepcopy(bad)
    assert field_validation.check({"fieldValidation": ["Ignore"]}, POD, obj) == []
    assert "foo" not in obj["spec"]["containers"][0]
    (warning,) = field_validation.check({}, POD, copy.deepcopy(bad))
    assert warning == ("Warning", '299 - "unknown field \\"spec.containers[0].foo\\""')
    with pytest.raises(StatusError) as caught:
        field_validation.check({"fieldValidation": ["Strict"]}, POD, copy.deepcopy(bad))
    assert caught.value.code == 400
    assert caught.value.status["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error:'
        ' unknown field "spec.containers[0].foo"'
    )
    assert field_validation.check({"fieldValidation": ["Strict"]}, POD, _pod()) == []
    with pytest.raises(StatusError):
        field_validation.check({"fieldValidation": ["Loose"]}, POD, _pod())


# -- over HTTP ---------------------------------------------------------------------------
@pytest.fixture
async def server(tmp_path):
    srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0))
    await srv.start()
    yield srv
    await srv.close()


async def _call(server: ApiServer, method: str, path: str, **kw: Any) -> http.ClientResponse:
    assert server.paths is not None
    pki = server.paths.client_ca.parent
    ctx = tls.client_context(
        ca_file=server.paths.client_ca, cert_file=pki / "admin.crt", key_file=pki / "admin.key"
    )
    return await http.request(method, f"https://127.0.0.1:{server.port}{path}", ssl=ctx, **kw)


async def test_v2_served_as_protobuf_and_json(server: ApiServer) -> None:
    accept = [("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")]
    resp = await _call(server, "GET", "/openapi/v2", headers=accept)
    assert resp.status == 200
    assert resp.header("content-type") == openapi_v2.PROTOBUF_MEDIA_TYPE
    assert resp.body == openapi_v2.document_protobuf()
    legacy = await _call(server, "GET", "/swagger-2.0.0.pb-v1")
    assert (legacy.status, legacy.body) == (200, openapi_v2.document_protobuf())
    plain = await _call(server, "GET", "/openapi/v2")
    assert json.loads(plain.body)["definitions"]["io.k8s.api.core.v1.Pod"]


async def test_create_strict_warn_and_ignore(server: ApiServer) -> None:
    path = "/api/v1/namespaces/default/pods"
    headers = [("Content-Type", "application/json")]
    bad = _pod()
    bad["spec"]["containers"][0]["foo"] = 1
    body = json.dumps(bad).encode()
    strict = await _call(
        server, "POST", path + "?fieldValidation=Strict", headers=headers, body=body
    )
    assert strict.status == 400
    assert 'unknown field "spec.containers[0].foo"' in json.loads(strict.body)["message"]
    warn = await _call(server, "POST", path, headers=headers, body=body)
    assert warn.status == 201
    assert warn.header("warning") == '299 - "unknown field \\"spec.containers[0].foo\\""'
    assert "foo" not in json.loads(warn.body)["spec"]["containers"][0]
    patch = json.dumps({"metadata": {"labels": {"x": "y"}}, "spec": {"bogus": 1}}).encode()
    patched = await _call(
        server,
        "PATCH",
        path + "/p?fieldValidation=Ignore",
        headers=[("Content-Type", "application/merge-patch+json")],
        body=patch,
    )
    assert patched.status == 200 and patched.header("warning") is None
    stored = json.loads(patched.body)
    assert stored["metadata"]["labels"]["x"] == "y" and "bogus" not in stored["spec"]


# -- OpenAPI v3 and conditional answers (protocol.md 2.9) -------------------------------
async def test_v3_documents_have_schemas_etags_and_hash_urls(server: ApiServer) -> None:
    index = await _call(server, "GET", "/openapi/v3")
    assert index.status == 200 and index.header("etag")
    paths = json.loads(index.body)["paths"]
    assert set(paths) == {
        "api/v1",
        "apis/events.k8s.io/v1",
        "apis/authentication.k8s.io/v1",
        "apis/authorization.k8s.io/v1",
        "apis/rbac.authorization.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
    }
    url = paths["api/v1"]["serverRelativeURL"]
    digest = url.split("?hash=")[1]
    doc = await _call(server, "GET", url)
    assert doc.status == 200
    assert doc.header("etag") == f'"{digest}"'
    assert doc.header("cache-control") == "public, immutable" and doc.header("expires")
    assert hashlib.sha512(doc.body).hexdigest().upper() == digest
    schemas = json.loads(doc.body)["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}],
        "description": pod["properties"]["spec"]["description"],
    }
    assert "io.k8s.api.core.v1.SecurityContext" in schemas
    assert "io.k8s.api.rbac.v1.Role" not in schemas  # each document holds its own kinds
    assert "#/definitions/" not in doc.body.decode()
    again = await _call(server, "GET", url, headers=[("If-None-Match", f'"{digest}"')])
    assert (again.status, again.body) == (304, b"")
    assert again.header("etag") == f'"{digest}"'
    other = await _call(server, "GET", url, headers=[("If-None-Match", '"0"')])
    assert other.status == 200 and other.body == doc.body
    stale = await _call(server, "GET", "/openapi/v3/api/v1?hash=0123")
    assert (stale.status, stale.header("location")) == (301, url)
    plain = await _call(server, "GET", "/openapi/v3/api/v1")
    assert plain.status == 200 and plain.header("cache-control") is None
    assert (await _call(server, "GET", "/openapi/v3/apis/apps/v1")).status == 404


async def test_v2_answers_if_none_match_with_304(server: ApiServer) -> None:
    accept = ("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    first = await _call(server, "GET", "/openapi/v2", headers=[accept])
    tag = first.header("etag")
    assert tag and tag.strip('"') == hashlib.sha512(first.body).hexdigest().upper()
    again = await _call(server, "GET", "/openapi/v2", headers=[accept, ("If-None-Match", tag)])
    assert (again.status, again.body) == (304, b"")
