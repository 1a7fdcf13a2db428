"""Paged lists through the API server (protocol.md 10.5): ``?limit=`` and ``?continue=``
on SQLite and on a real etcd, the real kubectl's ``--chunk-size`` (every bundled
version) and the Python ``kubernetes`` client's ``_continue``."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from etcd_process import ETCD, SCALE, EtcdProcess
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from interop.support import VERSIONS, core_api, kubectl_binary

from .test_app import _kubeconfig
from .test_rest import TABLE, Api, pod

PODS = "/api/v1/namespaces/default/pods"
NAMES = [f"p{i}" for i in range(7)]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    if ETCD is None:
        pytest.skip("etcd is not installed (etcd-server)")
    server = EtcdProcess(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "etcd"])
async def server(request, tmp_path):
    etcd_servers: tuple[str, ...] = ()
    prefix = "/registry"
    if request.param == "etcd":
        etcd_servers = (request.getfixturevalue("etcd").url,)
        prefix = f"/t-{uuid.uuid4().hex[:8]}/registry"
    config = ApiServerConfig(
        data_dir=tmp_path / "data", port=0, etcd_servers=etcd_servers, etcd_prefix=prefix,
        etcd_compaction_interval=0, scheduler_interval=0,
    )  # fmt: skip
    srv = ApiServer(config)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def admin(server: ApiServer) -> Api:
    pki = server.paths.client_ca.parent  # type: ignore[union-attr]
    api = Api(server, cert_file=pki / "admin.crt", key_file=pki / "admin.key")
    for name in NAMES:
        body = pod(name)
        body["metadata"]["labels"]["odd"] = str(int(name[1:]) % 2)
        await api.ok("POST", PODS, body)
    return api


def _names(page: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in page["items"]]


async def test_limit_and_continue_walk_the_list(admin: Api) -> None:
    first = await admin.ok("GET", PODS + "?limit=3")
    meta = first["metadata"]
    assert _names(first) == NAMES[:3] and meta["remainingItemCount"] == 4
    assert list(meta) == ["resourceVersion", "continue", "remainingItemCount"]
    second = await admin.ok("GET", f"{PODS}?limit=3&continue={meta['continue']}")
    assert _names(second) == NAMES[3:6] and second["metadata"]["remainingItemCount"] == 1
    assert second["metadata"]["resourceVersion"] == meta["resourceVersion"]
    third = await admin.ok("GET", f"{PODS}?limit=3&continue={second['metadata']['continue']}")
    assert _names(third) == NAMES[6:] and list(third["metadata"]) == ["resourceVersion"]
    everything = await admin.ok("GET", PODS)
    assert _names(everything) == NAMES and "continue" not in everything["metadata"]
    huge = await admin.ok("GET", PODS + "?limit=999999999999999999")  # clamped, not allocated
    assert _names(huge) == NAMES


async def test_tables_and_selectors_page_too(admin: Api) -> None:
    table = await admin.ok("GET", PODS + "?limit=2", headers=[("Accept", TABLE)])
    assert table["kind"] == "Table" and [r["cells"][0] for r in table["rows"]] == NAMES[:2]
    assert table["metadata"]["remainingItemCount"] == 5 and table["metadata"]["continue"]
    odd = await admin.ok("GET", PODS + "?limit=2&labelSelector=odd%3D1")
    assert _names(odd) == ["p1", "p3"] and "remainingItemCount" not in odd["metadata"]
    rest = await admin.ok(
        "GET", f"{PODS}?limit=2&labelSelector=odd%3D1&continue={odd['metadata']['continue']}"
    )
    assert _names(rest) == ["p5"]


async def test_list_options_errors(admin: Api) -> None:
    status = await admin.fail("GET", PODS + "?limit=2&continue=garbage")
    assert status["code"] == 400 and "continue key is not valid" in status["message"]
    token = (await admin.ok("GET", PODS + "?limit=2"))["metadata"]["continue"]
    status = await admin.fail("GET", f"{PODS}?limit=2&continue={token}&resourceVersion=5")
    assert status["message"] == "specifying resource version is not allowed when using continue"
    status = await admin.fail("GET", PODS + "?resourceVersionMatch=Exact")
    assert status["code"] == 422 and status["details"]["kind"] == "ListOptions"
    assert "forbidden unless resourceVersion is provided" in status["message"]
    status = await admin.fail("GET", PODS + "?resourceVersion=0&resourceVersionMatch=Exact")
    assert status["code"] == 422
    status = await admin.fail("GET", PODS + "?resourceVersion=1&resourceVersionMatch=Newest")
    assert status["code"] == 422 and "Unsupported value" in status["message"]
    assert (await admin.fail("GET", PODS + "?limit=two"))["code"] == 400


async def _latest_rv(api: Api) -> int:
    return int((await api.ok("GET", PODS))["metadata"]["resourceVersion"])


async def test_resource_version_semantics(admin: Api) -> None:
    """Exact reads at N, and so does a first page (``limit``) at N without a match, as
    kube-apiserver's legacy rule has it; "not older than" N answers the latest, which is
    only known to lie between the latest before the call and the latest after it: the
    store is not quiet (the server renews its Leases on it; on etcd the revision counts
    every key's writes)."""
    rv = await _latest_rv(admin)
    late = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}}
    await admin.ok("POST", "/api/v1/namespaces", late)  # the latest is now past rv
    exact = await admin.ok("GET", f"{PODS}?resourceVersion={rv}&resourceVersionMatch=Exact")
    assert exact["metadata"]["resourceVersion"] == str(rv) and _names(exact) == NAMES
    paged = await admin.ok("GET", f"{PODS}?resourceVersion={rv}&limit=100")
    assert paged["metadata"]["resourceVersion"] == str(rv) and _names(paged) == NAMES
    for query in ("", "&resourceVersionMatch=NotOlderThan&limit=100"):
        newer = await admin.ok("GET", f"{PODS}?resourceVersion={rv - 1}{query}")
        after = await _latest_rv(admin)
        assert rv < int(newer["metadata"]["resourceVersion"]) <= after, query
        assert _names(newer) == NAMES, query
    status = await admin.fail("GET", f"{PODS}?resourceVersion={after + 1000}")
    assert status["code"] == 504 and status["reason"] == "Timeout"
    assert status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def _run_kubectl(binary: Path, kubeconfig: Path, home: Path, *args: str):
    env = dict(os.environ, HOME=str(home), KUBECONFIG=str(kubeconfig))
    return asyncio.create_subprocess_exec(
        str(binary), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _kubectl(binary: Path, kubeconfig: Path, home: Path, *args: str) -> tuple[str, str]:
    proc = await _run_kubectl(binary, kubeconfig, home, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60 * SCALE)
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


def _requests(stderr: str) -> list[str]:
    """The pod list URLs kubectl -v=6 logged (1.33 logs them as key="value" pairs)."""
    pattern = (
        r'GET"? (?:url=")?(https://\S+/api/v1/namespaces/default/pods\?[^"\s]+)"? (?:status=")?200'
    )
    return re.findall(pattern, stderr)


@pytest.mark.parametrize("version", VERSIONS)
async def test_kubectl_get_chunks(server: ApiServer, admin: Api, tmp_path: Path, version) -> None:
    binary = kubectl_binary(version)
    if binary is None:
        pytest.skip(f"kubectl {version} is not bundled")
    home = tmp_path / "home"
    home.mkdir()
    config = _kubeconfig(server, home, "root", ["system:masters"])
    out, err = await _kubectl(binary, config, home, "get", "pods", "--chunk-size=2", "-v=6")
    assert [line.split()[0] for line in out.splitlines()[1:]] == NAMES
    assert out.splitlines()[0].split()[:2] == ["NAME", "READY"]  # one header for all pages
    urls = _requests(err)
    assert len(urls) == 4 and all("limit=2" in u for u in urls), err
    assert ["continue=" in u for u in urls] == [False, True, True, True]


async def test_kubectl_chunks_with_selector_and_names(
    server: ApiServer, admin: Api, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = _kubeconfig(server, home, "root", ["system:masters"])
    binary = kubectl_binary("1.32") or Path("kubectl")
    out, _ = await _kubectl(binary, config, home, "get", "pods", "--chunk-size=3", "-o", "name")
    assert out.split() == [f"pod/{n}" for n in NAMES]
    out, err = await _kubectl(
        binary, config, home, "get", "pods", "-l", "odd=0", "--chunk-size=1", "-v=6"
    )
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["p0", "p2", "p4", "p6"]
    assert len(_requests(err)) >= 4
    out, _ = await _kubectl(binary, config, home, "get", "pods", "-A", "--chunk-size=2")
    assert [line.split()[1] for line in out.splitlines()[1:]] == NAMES


async def test_python_client_continue(server: ApiServer, admin: Api, tmp_path: Path) -> None:
    pytest.importorskip("kubernetes")
    home = tmp_path / "home"
    home.mkdir()
    config = _kubeconfig(server, home, "root", ["system:masters"])

    def walk() -> list[tuple[list[str], Any]]:
        api = core_api(config)
        with api.api_client:
            pages, token = [], None
            while True:
                page = api.list_namespaced_pod("default", limit=3, _continue=token)
                pages.append(([p.metadata.name for p in page.items], page.metadata))
                token = page.metadata._continue
                if not token:
                    return pages

    pages = await asyncio.to_thread(walk)
    assert [names for names, _ in pages] == [NAMES[:3], NAMES[3:6], NAMES[6:]]
    assert [meta.remaining_item_count for _, meta in pages] == [4, 1, None]
