"""Server-side apply (PATCH application/apply-patch+yaml) over real TLS: create when
missing, merge of the applied fields, managedFields per manager, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hatchway.api import resources
from hatchway.apiserver import apply
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls

PATH = "/api/v1/namespaces/default/pods/web"


def config(labels: dict[str, str], image: str = "busybox") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "containers": [{"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]}]
        },
    }


def test_managed_fields_shape() -> None:
    pods = resources.lookup("pods")
    assert pods is not None
    assert apply.managed_fields(pods, config({"app": "x"})) == {
        "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
        "f:spec": {
            "f:containers": {
                'k:{"name":"main"}': {
                    ".": {},
                    "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
                    "f:image": {},
                    "f:name": {},
                }
            }
        },
    }


@pytest.fixture
async def server(tmp_path: Path):
    srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0))
    await srv.start()
    yield srv
    await srv.close()


async def send(
    server: ApiServer, body: Any, query: str = "?fieldManager=kubectl", method: str = "PATCH"
) -> tuple[int, dict[str, Any]]:
    assert server.paths is not None
    pki = server.paths.client_ca.parent
    ctx = tls.client_context(
        ca_file=server.paths.client_ca, cert_file=pki / "admin.crt", key_file=pki / "admin.key"
    )
    resp = await http.request(
        method,
        f"https://127.0.0.1:{server.port}{PATH}{query}",
        headers=[("Content-Type", apply.APPLY_PATCH)],
        body=json.dumps(body).encode(),
        ssl=ctx,
    )
    return resp.status, json.loads(resp.body)


async def test_create_then_update(server: ApiServer) -> None:
    code, created = await send(server, config({"app": "a"}))
    assert code == 201
    assert created["metadata"]["labels"] == {"app": "a"}
    assert created["spec"]["restartPolicy"] == "Always"  # created through defaulting
    (entry,) = created["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")

    code, updated = await send(server, config({"app": "b", "tier": "t"}, "busybox:1"))
    assert code == 200
    assert updated["metadata"]["labels"] == {"app": "b", "tier": "t"}
    assert updated["spec"]["containers"][0]["image"] == "busybox:1"
    assert updated["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    (entry,) = updated["metadata"]["managedFields"]
    assert "f:tier" in entry["fieldsV1"]["f:metadata"]["f:labels"]

    other = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"o": "1"}}}
    code, both = await send(server, other, "?fieldManager=other&force=true")
    assert code == 200 and both["metadata"]["labels"] == {"app": "b", "tier": "t", "o": "1"}
    managers = [e["manager"] for e in both["metadata"]["managedFields"]]
    assert managers == ["kubectl", "other"]


async def test_errors(server: ApiServer) -> None:
    code, status = await send(server, config({}), query="")
    assert (code, status["reason"]) == (422, "Invalid")
    assert "fieldManager: Required value" in status["message"]
    wrong = config({})
    wrong["metadata"]["name"] = "other"
    code, status = await send(server, wrong)
    assert code == 400 and "does not match the name on the URL" in status["message"]
    unknown = config({})
    unknown["spec"]["bogus"] = 1
    code, status = await send(server, unknown)
    assert code == 400 and 'unknown field "spec.bogus"' in status["message"]
