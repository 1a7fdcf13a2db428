"""The soak's own cluster and what it inspects on it: ``hatchway up`` in a temporary data
directory (free ports, the bench's session limits), busybox pods, SIGKILL and restart of
one component, and the processes, fds and memory of the servers.

Restart is ``hatchway up`` again with the same flags: it restarts only the component
that died, on its port (``cli/up.py``). Container processes are found by the PID
namespace of each pod container's init (``runc state``), so ``/proc`` of the host shows
what runs in which container.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml
from bench.env import alive

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
HATCHWAY = str(ROOT / ".venv" / "bin" / "hatchway")
#: As bench/env.py: every session runs as the one admin identity from 127.0.0.1.
SESSION_LIMIT = 1000


def log(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, **kw)  # type: ignore[call-overload,no-any-return]


@dataclass
class Pod:
    name: str
    uid: str
    container_ids: list[str] = field(default_factory=list)  # every id seen, newest last


@dataclass
class SoakCluster:
    data_dir: pathlib.Path
    env: dict[str, str]
    pods: list[Pod] = field(default_factory=list)
    #: Every pid namespace a pod container had (its init's pid in the host's view).
    namespaces: dict[str, int] = field(default_factory=dict)
    restarts: list[dict[str, object]] = field(default_factory=list)

    @property
    def kubeconfig(self) -> str:
        return str(self.data_dir / "admin.kubeconfig")

    @property
    def runc_root(self) -> str:
        return str(self.data_dir / "node" / "runc")

    def pids(self) -> dict[str, int]:
        """The live API server and node agent pids (cluster.json, rewritten on restart)."""
        state = json.loads((self.data_dir / "cluster.json").read_text())
        return {"apiserver": int(state["apiserver_pid"]), "node": int(state["node_pid"])}

    def ports(self) -> dict[str, int]:
        """The API server's and the node agent's listening ports, as ``fd_account``'s
        client and server."""
        state = json.loads((self.data_dir / "cluster.json").read_text())
        return {"client": int(state["apiserver_port"]), "server": int(state["node_port"])}

    def up_argv(self) -> list[str]:
        argv = [PYTHON, "-m", "hatchway", "up", "--data-dir", str(self.data_dir)]
        argv += ["--apiserver-port", "0", "--node-port", "0", "--detach", "--no-merge"]
        argv += ["--max-sessions-per-user", str(SESSION_LIMIT)]
        argv += ["--max-sessions", str(SESSION_LIMIT)]
        return [*argv, "--max-connections-per-source", str(4 * SESSION_LIMIT)]

    def up(self) -> None:
        result = _run(self.up_argv(), env=self.env)
        if result.returncode != 0:
            raise RuntimeError(f"hatchway up failed: {result.stderr.decode(errors='replace')}")

    def kill(self, component: str) -> int:
        pid = self.pids()[component]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        return pid

    def restart(self) -> None:
        """``hatchway up`` again: the dead component comes back on its port."""
        self.up()
        self.refresh_containers()

    def live_containers(self) -> list[str]:
        """Ids of every container runc knows (pods' sandboxes and containers)."""
        result = _run(["runc", "--root", self.runc_root, "list", "-q"], timeout=30)
        return result.stdout.decode().split()

    def create_pods(self, count: int) -> None:
        for i in range(count):
            name = f"soak-{i}"
            _create_pod(self.env, name)
            self.pods.append(Pod(name, _pod_uid(self.env, name)))
        self.refresh_containers()

    def refresh_containers(self, timeout: float = 60) -> None:
        """The running container of every pod; its init's pid namespace is remembered."""
        for pod in self.pods:
            cid, init = _running_container(self.data_dir, self.runc_root, pod.uid, timeout)
            if cid not in pod.container_ids:
                pod.container_ids.append(cid)
            self.namespaces[cid] = init


def start(stack: contextlib.ExitStack, base: pathlib.Path, pods: int) -> SoakCluster:
    data_dir = base / "hatchway"
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "HATCHWAY_DATA_DIR": str(data_dir)}
    env["KUBECONFIG"] = str(data_dir / "admin.kubeconfig")
    env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
    cluster = SoakCluster(data_dir, env)
    stack.callback(_down, cluster)
    cluster.up()
    cluster.create_pods(pods)
    return cluster


def _down(cluster: SoakCluster) -> None:
    log("stopping the soak cluster")
    _run([PYTHON, "-m", "hatchway", "down", "--data-dir", str(cluster.data_dir)], env=cluster.env)


def _create_pod(env: dict[str, str], name: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "86400"]}],
            "terminationGracePeriodSeconds": 1,
        },
    }
    body = yaml.safe_dump(manifest).encode()
    result = _run(["kubectl", "create", "-f", "-"], env=env, input=body)
    if result.returncode != 0:
        raise RuntimeError(f"cannot create pod {name}: {result.stderr.decode(errors='replace')}")


def _pod_uid(env: dict[str, str], name: str) -> str:
    result = _run(["kubectl", "get", "pod", name, "-o", "jsonpath={.metadata.uid}"], env=env)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"no uid for pod {name}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


def _running_container(
    data_dir: pathlib.Path, runc_root: str, uid: str, timeout: float
) -> tuple[str, int]:
    """(runc id, init pid) of the pod's ``main`` container once it runs (the node keeps
    ``node/pods/<uid>.json``)."""
    path = data_dir / "node" / "pods" / f"{uid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            cid = str(json.loads(path.read_text())["containers"]["main"]["id"])
            state = _run(["runc", "--root", runc_root, "state", cid], timeout=10)
            if state.returncode == 0:
                doc = json.loads(state.stdout)
                if doc["status"] == "running":
                    return cid, int(doc["pid"])
        time.sleep(0.2)
    raise RuntimeError(f"pod {uid} did not run within {timeout}s")
