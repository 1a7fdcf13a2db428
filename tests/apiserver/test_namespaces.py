"""Namespace deletion as on Kubernetes, over real TLS: Terminating until its pods are
gone, no new content meanwhile, and the namespace removed once the node has removed
its pods -- also when the API server restarted in between."""

from __future__ import annotations

import asyncio
from typing import Any

from apiserver import test_rest
from apiserver.test_rest import SCALE, Api, pod
from hatchway.apiserver.server import ApiServer, ApiServerConfig

NS = "/api/v1/namespaces"
#: The REST tests' fixtures: an API server over real TLS and its administrator.
server = test_rest.server
admin = test_rest.admin


async def _gone(admin: Api, path: str) -> None:
    async with asyncio.timeout(10 * SCALE):
        while (await admin.call("GET", path)).status != 404:
            await asyncio.sleep(0.05)


async def _team_with_a_running_pod(admin: Api) -> dict[str, Any]:
    await admin.ok("POST", NS, {"metadata": {"name": "team"}})
    await admin.ok("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
    return await admin.ok("POST", f"{NS}/team/pods", pod("web", nodeName="n1"))


async def test_a_namespace_with_a_running_pod_terminates_until_the_pod_is_gone(
    admin: Api,
) -> None:
    web = await _team_with_a_running_pod(admin)
    role = {"metadata": {"name": "r"}, "rules": []}
    await admin.ok("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles", role)
    marked = await admin.ok("DELETE", f"{NS}/team")
    assert marked["status"]["phase"] == "Terminating" and marked["metadata"]["deletionTimestamp"]
    # The pod is deleted as kubectl delete pod does it: marked, for the node to stop.
    dying = await admin.ok("GET", f"{NS}/team/pods/web")
    assert dying["metadata"]["deletionTimestamp"]
    assert (await admin.ok("GET", f"{NS}/team"))["status"]["phase"] == "Terminating"
    roles = await admin.fail("GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles/r")
    assert roles["code"] == 404  # nothing runs for a role: gone at once
    refused = await admin.fail("POST", f"{NS}/team/pods", pod("late"))
    assert (refused["code"], refused["message"]) == (
        403,
        'pods "late" is forbidden: unable to create new content in namespace team because'
        " it is being terminated",
    )
    again = await admin.ok("DELETE", f"{NS}/team")  # deleting again: the same answer
    assert again["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    # The node has stopped the containers and removes the pod: then the namespace goes.
    final = {"gracePeriodSeconds": 0, "preconditions": {"uid": web["metadata"]["uid"]}}
    await admin.ok("DELETE", f"{NS}/team/pods/web", final)
    await _gone(admin, f"{NS}/team")


async def test_an_empty_namespace_goes_at_once(admin: Api) -> None:
    await admin.ok("POST", NS, {"metadata": {"name": "empty"}})
    answer = await admin.ok("DELETE", f"{NS}/empty")
    assert answer["status"]["phase"] == "Terminating"
    assert (await admin.fail("GET", f"{NS}/empty"))["code"] == 404


async def test_a_restarted_api_server_finishes_the_termination(tmp_path) -> None:
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0, scheduler_interval=0.2)
    first = ApiServer(config)
    await first.start()
    try:
        pki = first.paths.client_ca.parent  # type: ignore[union-attr]
        creds = {"cert_file": pki / "admin.crt", "key_file": pki / "admin.key"}
        await _team_with_a_running_pod(Api(first, **creds))
        await Api(first, **creds).ok("DELETE", f"{NS}/team")
    finally:
        await first.close()
    second = ApiServer(config)
    await second.start()
    try:
        admin = Api(second, **creds)
        assert (await admin.ok("GET", f"{NS}/team"))["status"]["phase"] == "Terminating"
        await admin.ok("DELETE", f"{NS}/team/pods/web", {"gracePeriodSeconds": 0})
        await _gone(admin, f"{NS}/team")
    finally:
        await second.close()
