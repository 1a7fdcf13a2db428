"""A real ``hatchway up --ha`` cluster for tests/ha: started in a private data directory,
reached through its load balancer (or one API server directly), torn down with
``hatchway down`` whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
SCALE_ARGS = [f"--timeout-scale={SCALE}"] if SCALE != 1 else []


@dataclass
class HaCluster:
    data_dir: pathlib.Path
    env: dict[str, str]

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.data_dir / "admin.kubeconfig"

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "cluster.json").read_text()))

    def components(self, role: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.state()["components"] if role is None or c["role"] == role]

    def component(self, name: str) -> dict[str, Any]:
        return next(c for c in self.components() if c["name"] == name)

    def hatchway(
        self, *args: str, timeout: float = 60, kubeconfig: pathlib.Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "hatchway", *args],
            capture_output=True,
            env={**self.env, "KUBECONFIG": str(kubeconfig or self.kubeconfig)},
            timeout=timeout * SCALE,
        )

    def kubectl(
        self, *args: str, timeout: float = 60, kubeconfig: pathlib.Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True,
            env=self.env,
            timeout=timeout * SCALE,
        )

    def kubeconfig_for(self, name: str) -> pathlib.Path:
        """The admin kubeconfig with one API server's own address instead of the load
        balancer's (its certificate names every API server's address)."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        me = self.component(name)
        doc["clusters"][0]["cluster"]["server"] = f"https://{me['address']}:{me['port']}"
        path = self.data_dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def haproxy_status(self) -> dict[str, str]:
        """Each API server's state in HAProxy's rotation (``UP``, ``DOWN``...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.data_dir / "haproxy" / "admin.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines()[1:] if line]
        return {r[1]: r[17] for r in rows if r[0] == "apiservers" and r[1].startswith("api")}

    def etcd_status(self, name: str) -> dict[str, Any] | None:
        """The member's ``/v3/maintenance/status`` (its id, the leader's), or None when
        it does not answer."""
        me = self.component(name)
        pki = self.data_dir / "pki" / "etcd"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(
            str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key")
        )
        request = urllib.request.Request(
            f"https://{me['address']}:{me['port']}/v3/maintenance/status", data=b"{}"
        )
        try:
            with urllib.request.urlopen(request, timeout=3, context=ctx) as answer:
                return dict(json.loads(answer.read()))
        except (OSError, ValueError):
            return None

    def etcd_leader(self) -> str:
        """The name of the etcd member that leads now."""
        for member in self.components("etcd"):
            status = self.etcd_status(member["name"])
            if status and status.get("leader") == status.get("header", {}).get("member_id"):
                return str(member["name"])
        raise AssertionError("no etcd member leads")


def start(data_dir: pathlib.Path, env: dict[str, str]) -> HaCluster:
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", "up", "--ha", "--data-dir", str(data_dir),
         "--no-merge", "--timeout", str(120 * SCALE), *SCALE_ARGS],
        capture_output=True, env=env, timeout=240 * SCALE,
    )  # fmt: skip
    cluster = HaCluster(data_dir, env)
    if done.returncode != 0:
        stop(cluster)
        raise AssertionError(f"hatchway up --ha failed: {done.stderr.decode()[-3000:]}")
    return cluster


def stop(cluster: HaCluster) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hatchway", "down", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        env=cluster.env,
        timeout=120 * SCALE,
    )


class Watcher:
    """A watch on the default namespace's pods through the load balancer, in a thread,
    as client-go's reflector runs one: a watch that ends is resumed from the last
    resourceVersion seen, 410 Gone lists again. ``events`` has every event seen;
    ``restarts`` how often the watch had to be opened again."""

    def __init__(self, kubeconfig: pathlib.Path, first: pathlib.Path | None = None) -> None:
        """``first``: the kubeconfig of the first list and watch (one API server's)."""
        self.kubeconfig = kubeconfig
        self.first = first or kubeconfig
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.restarts = 0
        self.relists = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.listed = threading.Event()

    def start(self) -> Watcher:
        self._thread.start()
        assert self.listed.wait(30 * SCALE), f"the watcher could not list: {self.errors}"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30 * SCALE)

    def labels_seen(self, pod: str, key: str) -> list[str]:
        return [
            str(obj["metadata"].get("labels", {}).get(key))
            for kind, obj in list(self.events)
            if obj.get("metadata", {}).get("name") == pod
            and key in obj["metadata"].get("labels", {})
        ]

    async def _run(self) -> None:
        from hatchway.client.api import Client
        from hatchway.errors import ApiError

        client = Client.from_kubeconfig(str(self.first))
        rv = ""
        path = "/api/v1/namespaces/default/pods"
        while not self._stop.is_set():
            try:
                if not rv:
                    listing = await client.rest.get(path)
                    rv = listing["metadata"]["resourceVersion"]
                    self.relists += 1
                    self.listed.set()
                params = {
                    "resourceVersion": rv,
                    "allowWatchBookmarks": "true",
                }
                async for event in client.rest.watch(path, params):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        rv = "" if obj.get("code") == 410 else rv
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if event.get("type") != "BOOKMARK":
                        self.events.append((str(event.get("type")), obj))
                    if self._stop.is_set():
                        return
            except ApiError as exc:
                self.errors.append(str(exc))
                if exc.code == 410:
                    rv = ""
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.restarts += 1
            client = Client.from_kubeconfig(str(self.kubeconfig))
            await asyncio.sleep(0.2)


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout * SCALE
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout * SCALE:.0f}s (last: {last!r})")
