"""Server-owned metadata over the real API server (TLS): uid, creationTimestamp,
resourceVersion, generation, deletionTimestamp and managedFields sent by a client are
ignored on create, update, merge / strategic / JSON patch and server-side apply."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apiserver.test_rest import PODS, Api, pod
from hatchway.apiserver import apply
from hatchway.apiserver.server import ApiServer, ApiServerConfig

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
FORGED = {
    "uid": "/tmp/forged",
    "creationTimestamp": "2001-02-03T04:05:06Z",
    "resourceVersion": "987654",
    "generation": 42,
    "deletionTimestamp": "2001-02-03T04:05:06Z",
    "deletionGracePeriodSeconds": 5,
    "managedFields": [
        {"manager": "forger", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1"}
    ],
}
#: FORGED without resourceVersion, which on a write is the client's precondition.
WRITABLE = {k: v for k, v in FORGED.items() if k != "resourceVersion"}
MERGE = "application/merge-patch+json"


@pytest.fixture
async def server(tmp_path):
    srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0))
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
def admin(server: ApiServer) -> Api:
    pki = server.paths.client_ca.parent  # type: ignore[union-attr]
    return Api(server, cert_file=pki / "admin.crt", key_file=pki / "admin.key")


def forged_pod(name: str) -> dict[str, Any]:
    obj = pod(name)
    obj["metadata"].update(FORGED)
    return obj


def server_owned(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: obj["metadata"].get(k) for k in (*FORGED, "resourceVersion")}


async def test_create_ignores_every_server_owned_field(admin: Api) -> None:
    created = await admin.ok("POST", PODS, forged_pod("web"))
    meta = created["metadata"]
    assert UUID4.fullmatch(meta["uid"]), meta["uid"]
    assert meta["creationTimestamp"] != FORGED["creationTimestamp"]
    assert meta["resourceVersion"] != FORGED["resourceVersion"]
    assert meta["generation"] == 1
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
        assert key not in meta, key
    assert server_owned(await admin.ok("GET", f"{PODS}/web")) == server_owned(created)


async def test_two_creates_never_share_a_uid(admin: Api) -> None:
    first = await admin.ok("POST", PODS, pod("a"))
    copy = pod("b")
    copy["metadata"]["uid"] = first["metadata"]["uid"]
    second = await admin.ok("POST", PODS, copy)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


async def test_non_pod_resources_get_a_fresh_uid_and_no_generation(admin: Api) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", **FORGED}}
    meta = (await admin.ok("POST", "/api/v1/namespaces", ns))["metadata"]
    assert UUID4.fullmatch(meta["uid"])
    assert "generation" not in meta and "managedFields" not in meta


async def test_put_keeps_the_stored_server_fields(admin: Api) -> None:
    created = await admin.ok("POST", PODS, pod("web"))
    body = forged_pod("web")
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    body["spec"] = created["spec"]
    updated = await admin.ok("PUT", f"{PODS}/web", body)
    before, after = server_owned(created), server_owned(updated)
    assert {k: v for k, v in after.items() if k != "resourceVersion"} == {
        k: v for k, v in before.items() if k != "resourceVersion"
    }


@pytest.mark.parametrize(
    ("ctype", "patch"),
    [
        (MERGE, {"metadata": WRITABLE}),
        ("application/strategic-merge-patch+json", {"metadata": WRITABLE}),
        (
            "application/json-patch+json",
            [
                {"op": "replace", "path": "/metadata/uid", "value": FORGED["uid"]},
                {"op": "add", "path": "/metadata/generation", "value": 42},
                {"op": "add", "path": "/metadata/managedFields", "value": FORGED["managedFields"]},
                {
                    "op": "add",
                    "path": "/metadata/deletionTimestamp",
                    "value": "2001-02-03T04:05:06Z",
                },
                {
                    "op": "replace",
                    "path": "/metadata/creationTimestamp",
                    "value": "2001-02-03T04:05:06Z",
                },
            ],
        ),
    ],
)
async def test_patch_keeps_the_stored_server_fields(admin: Api, ctype: str, patch: Any) -> None:
    created = await admin.ok("POST", PODS, pod("web"))
    patched = await admin.ok("PATCH", f"{PODS}/web", patch, ctype=ctype)
    for key in ("uid", "creationTimestamp", "generation"):
        assert patched["metadata"][key] == created["metadata"][key], key
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
        assert key not in patched["metadata"], key


async def test_generation_counts_spec_changes_only(admin: Api) -> None:
    await admin.ok("POST", PODS, pod("web"))
    labelled = await admin.ok(
        "PATCH", f"{PODS}/web", {"metadata": {"labels": {"x": "y"}}}, ctype=MERGE
    )
    assert labelled["metadata"]["generation"] == 1
    image = {"spec": {"containers": [{"name": "main", "image": "busybox:1"}]}}
    changed = await admin.ok(
        "PATCH", f"{PODS}/web", image, ctype="application/strategic-merge-patch+json"
    )
    assert changed["metadata"]["generation"] == 2
    status = {"status": {"phase": "Running"}}
    after_status = await admin.ok("PATCH", f"{PODS}/web/status", status, ctype=MERGE)
    assert after_status["metadata"]["generation"] == 2


async def test_apply_records_only_its_own_managed_fields(admin: Api) -> None:
    config = pod("web")
    config["metadata"].update(WRITABLE)
    path = f"{PODS}/web?fieldManager=kubectl"
    created = await admin.ok("PATCH", path, config, ctype=apply.APPLY_PATCH)
    meta = created["metadata"]
    assert UUID4.fullmatch(meta["uid"]) and meta["generation"] == 1
    assert [e["manager"] for e in meta["managedFields"]] == ["kubectl"]
    again = await admin.ok("PATCH", path, config, ctype=apply.APPLY_PATCH)
    assert again["metadata"]["uid"] == meta["uid"]
    assert again["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert [e["manager"] for e in again["metadata"]["managedFields"]] == ["kubectl"]
    assert "deletionTimestamp" not in again["metadata"]
    # a plain write afterwards keeps apply's entries and adds none of the client's
    plain = await admin.ok("PATCH", f"{PODS}/web", {"metadata": WRITABLE}, ctype=MERGE)
    assert plain["metadata"]["managedFields"] == again["metadata"]["managedFields"]
