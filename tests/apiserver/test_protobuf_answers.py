"""Answers in protobuf when the client accepts only protobuf, over real TLS; JSON when it
accepts JSON too (what client-go's typed clients send); protobuf request bodies of every
generator kind stored as their JSON would be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hatchway.api import protobuf
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

PB = "application/vnd.kubernetes.protobuf"
TYPED_CLIENT = f"{PB}, application/json"


@pytest.fixture
async def server(tmp_path: Path):
    srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0))
    await srv.start()
    yield srv
    await srv.close()


async def call(
    server: ApiServer, method: str, path: str, *, accept: str, body: bytes = b"", ctype: str = PB
) -> tuple[int, str, bytes]:
    assert server.paths is not None
    pki = server.paths.client_ca.parent
    ctx = tls.client_context(
        ca_file=server.paths.client_ca, cert_file=pki / "admin.crt", key_file=pki / "admin.key"
    )
    headers = [("Accept", accept)]
    if body:
        headers.append(("Content-Type", ctype))
    url = f"https://127.0.0.1:{server.port}{path}"
    resp = await http.request(method, url, headers=headers, body=body, ssl=ctx)
    return resp.status, resp.header("content-type") or "", resp.body


def _strip_type_meta(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in ("apiVersion", "kind")} for item in items]


async def test_only_protobuf_accepted_gets_protobuf(server: ApiServer) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pb", "labels": {"a": "b"}}}
    code, ctype, body = await call(
        server, "POST", "/api/v1/namespaces", accept=PB, body=protobuf.encode(ns)
    )
    assert (code, ctype) == (201, PB) and body.startswith(protobuf.MAGIC)
    made = protobuf.decode(body)
    assert made["metadata"]["name"] == "pb" and made["metadata"]["labels"]["a"] == "b"

    code, ctype, body = await call(server, "GET", "/api/v1/namespaces/pb", accept=PB)
    assert (code, ctype) == (200, PB)
    code, jtype, as_json = await call(
        server, "GET", "/api/v1/namespaces/pb", accept="application/json"
    )
    assert jtype == "application/json"
    assert protobuf.decode(body) == json.loads(as_json)

    code, ctype, body = await call(server, "GET", "/api/v1/namespaces", accept=PB)
    assert (code, ctype) == (200, PB)
    listed = protobuf.decode(body)
    expected = json.loads((await call(server, "GET", "/api/v1/namespaces", accept="*/*"))[2])
    assert listed["kind"] == "NamespaceList"
    assert _strip_type_meta(listed["items"]) == _strip_type_meta(expected["items"])


async def test_errors_are_a_protobuf_status(server: ApiServer) -> None:
    code, ctype, body = await call(server, "GET", "/api/v1/namespaces/nope", accept=PB)
    assert (code, ctype) == (404, PB)
    answer = protobuf.decode(body)
    assert (answer["kind"], answer["code"], answer["reason"]) == ("Status", 404, "NotFound")
    assert answer["details"]["name"] == "nope"
    # A malformed body is refused in the client's encoding too.
    code, ctype, body = await call(
        server, "POST", "/api/v1/namespaces", accept=PB, body=b"k8s\x00\x0a\x05ab"
    )
    assert (code, ctype) == (400, PB)
    assert protobuf.decode(body)["message"].startswith("malformed protobuf body: ")


@pytest.mark.parametrize("accept", [TYPED_CLIENT, "application/json", "*/*", ""])
async def test_json_whenever_json_is_acceptable(server: ApiServer, accept: str) -> None:
    code, ctype, body = await call(server, "GET", "/api/v1/namespaces/default", accept=accept)
    assert (code, ctype) == (200, "application/json")
    assert json.loads(body)["metadata"]["name"] == "default"


async def test_what_has_no_protobuf_form_stays_json(server: ApiServer) -> None:
    """Discovery has no table of ours: JSON, as before, rather than a made-up encoding."""
    code, ctype, body = await call(server, "GET", "/api/v1", accept=PB)
    assert (code, ctype) == (200, "application/json")
    assert json.loads(body)["kind"] == "APIResourceList"


async def test_a_protobuf_delete_options_body(server: ApiServer) -> None:
    """client-go's typed DELETE sends DeleteOptions in the resource's group version: a
    dry run in it keeps the object, then a real one removes it."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
    }
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles"
    code, _, _ = await call(server, "POST", path, accept=TYPED_CLIENT, body=protobuf.encode(role))
    assert code == 201
    options = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "DeleteOptions"}
    dry = protobuf.encode({**options, "dryRun": ["All"]})
    code, _, _ = await call(server, "DELETE", f"{path}/r", accept=TYPED_CLIENT, body=dry)
    assert code == 200
    code, _, body = await call(server, "GET", f"{path}/r", accept="application/json")
    assert code == 200 and json.loads(body)["rules"][0]["verbs"] == ["get"]
    real = protobuf.encode({**options, "propagationPolicy": "Background"})
    code, _, _ = await call(server, "DELETE", f"{path}/r", accept=TYPED_CLIENT, body=real)
    assert code == 200
    code, _, _ = await call(server, "GET", f"{path}/r", accept="application/json")
    assert code == 404
