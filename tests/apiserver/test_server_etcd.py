"""An API server on a real etcd (mutual TLS), served to the real kubectl."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from etcd_process import ETCD, SCALE, EtcdProcess
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.store.etcd import EtcdStore

from .test_app import _kubeconfig, kubectl

pytestmark = [
    pytest.mark.skipif(ETCD is None, reason="etcd is not installed (etcd-server)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed"),
]

POD = (
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n"
    "  containers:\n  - name: main\n    image: busybox\n"
)


async def test_apiserver_on_etcd_serves_kubectl(tmp_path: Path) -> None:
    etcd = EtcdProcess(tmp_path / "etcd", tls=True).start()
    config = ApiServerConfig(
        data_dir=tmp_path / "data",
        port=0,
        etcd_servers=(etcd.url,),
        etcd_cafile=etcd.ca,
        etcd_certfile=etcd.client_cert,
        etcd_keyfile=etcd.client_key,
    )
    home = tmp_path / "home"
    home.mkdir()
    watcher = None
    try:
        async with ApiServer(config) as server:
            assert isinstance(server.store, EtcdStore)
            admin = _kubeconfig(server, home, "root", ["system:masters"])
            env = dict(os.environ, HOME=str(home), KUBECONFIG=str(admin))
            watcher = await asyncio.create_subprocess_exec(
                "kubectl", "get", "pods", "--watch", "-o", "name", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            for name in ("web", "db"):
                manifest = home / f"{name}.yaml"
                manifest.write_text(POD.format(name=name))
                code, out, err = await kubectl(admin, home, "create", "-f", str(manifest))
                assert (code, out.strip()) == (0, f"pod/{name} created"), err
            code, out, err = await kubectl(admin, home, "get", "pods")
            assert code == 0, err
            assert [line.split()[0] for line in out.splitlines()[1:]] == ["db", "web"]
            assert watcher.stdout is not None
            seen: list[str] = []
            while "pod/db" not in seen:
                line = await asyncio.wait_for(watcher.stdout.readline(), 30 * SCALE)
                assert line, "kubectl's watch ended"
                seen.append(line.decode().strip())
            assert "pod/web" in seen
            code, out, err = await kubectl(admin, home, "delete", "pod", "web", "--wait=false")
            assert code == 0, err
            # The objects are in etcd where Kubernetes keeps them.
            store = server.store
            kv, _ = await store._read(b"/registry/pods/default/db")
            assert kv is not None
            assert (await store._read(b"/registry/pods/default/web"))[0] is None
            assert (await store._read(b"/registry/namespaces/default"))[0] is not None
    finally:
        if watcher is not None and watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
        etcd.stop()
