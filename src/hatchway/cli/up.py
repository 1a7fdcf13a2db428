"""``hatchway up`` / ``hatchway down``: a one-machine cluster, the way kind and k3d do it.

``up`` creates the PKI, starts an API server on SQLite and one node agent as background
processes of this machine (logs and pid files in the data directory), writes
``DATA_DIR/admin.kubeconfig``, merges a ``hatchway`` context into the user's kubeconfig,
waits until the node is Ready and says what to do next. Running it again reuses the
running cluster, restarting only a component that died, on its own port (the live one
and the kubeconfig stay as they are). ``down`` stops both, removes the containers of the
node, and removes the merged context, restoring the kubeconfig's previous
current-context (as ``kind delete cluster`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hatchway.errors import ConfigError

CONTEXT = "hatchway"


def default_data_dir() -> pathlib.Path:
    env = os.environ.get("HATCHWAY_DATA_DIR")
    if env:
        return pathlib.Path(env)
    home = os.path.expanduser("~")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return pathlib.Path(base) / "hatchway"


@dataclass
class ClusterState:
    apiserver_port: int
    node_port: int
    apiserver_pid: int
    node_pid: int
    node_name: str
    #: The kubeconfig the ``hatchway`` context was merged into, and its current-context
    #: before that: ``down`` removes the one and restores the other, as kind does.
    kubeconfig: str = ""
    previous_context: str = ""
    #: Every process: ``{"role", "name", "pid", "address", "port"}`` (``up --ha`` has
    #: etcd members, API servers, a load balancer and nodes; the fields above are then
    #: the load balancer's port and the first API server's and node's).
    components: list[dict[str, Any]] = field(default_factory=list)
    #: ``up --ha``: the cluster's id (its namespaces and interfaces are named after it),
    #: the number of nodes and the load balancer's URL.
    cluster_id: str = ""
    nodes: int = 0
    server: str = ""

    @classmethod
    def load(cls, data_dir: pathlib.Path) -> ClusterState | None:
        try:
            return cls(**json.loads((data_dir / "cluster.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @property
    def server_url(self) -> str:
        return self.server or f"https://127.0.0.1:{self.apiserver_port}"

    def single_components(self) -> list[dict[str, Any]]:
        """The components of a one-machine cluster (no --ha)."""
        return [
            {"role": "apiserver", "name": "apiserver", "pid": self.apiserver_pid,
             "address": "127.0.0.1", "port": self.apiserver_port},
            {"role": "node", "name": self.node_name, "pid": self.node_pid,
             "address": "127.0.0.1", "port": self.node_port},
        ]  # fmt: skip

    def save(self, data_dir: pathlib.Path) -> None:
        if not self.cluster_id:
            self.components = self.single_components()
        path = data_dir / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours is not alive.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(args: list[str], log_path: pathlib.Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hatchway", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return process.pid


def _log_tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _wait_ready(data_dir: pathlib.Path, state: ClusterState, timeout: float) -> None:
    from hatchway.client.api import Client

    client = Client.from_kubeconfig(str(data_dir / "admin.kubeconfig"))
    deadline = time.monotonic() + timeout
    last = "API server not answering yet"
    while time.monotonic() < deadline:
        for name, pid in (("apiserver", state.apiserver_pid), ("node", state.node_pid)):
            if not _alive(pid):
                log = data_dir / "logs" / f"{name}.log"
                raise ConfigError(
                    f"the {name} exited during start-up; last lines of {log}:\n{_log_tail(log)}"
                )
        try:
            node = await client.rest.get(f"/api/v1/nodes/{state.node_name}")
            conditions = node.get("status", {}).get("conditions", [])
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                return
            last = f"node {state.node_name} is not Ready yet"
        except Exception as exc:
            last = str(exc) or type(exc).__name__
        await asyncio.sleep(0.2)
    raise ConfigError(f"the cluster did not become ready within {timeout:.0f}s: {last}")


def write_kubeconfigs(
    data_dir: pathlib.Path,
    apiserver_port: int,
    merge: bool,
    node_name: str | None = None,
    server: str = "",
) -> str:
    from hatchway import pki as pki_module
    from hatchway.client import kubeconfig

    # The node's name as up gave it: ensure_pki's default (the hostname, not lowercased)
    # would reissue the node's certificate under the running node.
    pki = pki_module.ensure_pki(data_dir, node_name=node_name)
    server = server or f"https://127.0.0.1:{apiserver_port}"
    text = kubeconfig.render_kubeconfig(
        CONTEXT,
        server,
        pki_module.pem_bytes(pki.ca.cert),
        cert_pem=pki_module.pem_bytes(pki.admin.cert),
        key_pem=pki_module.pem_bytes(pki.admin.key),
    )
    path = data_dir / "admin.kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if not merge:
        return ""
    cluster = {
        "server": server,
        "certificate-authority-data": kubeconfig.encode_data(pki_module.pem_bytes(pki.ca.cert)),
    }
    user = {
        "client-certificate-data": kubeconfig.encode_data(pki_module.pem_bytes(pki.admin.cert)),
        "client-key-data": kubeconfig.encode_data(pki_module.pem_bytes(pki.admin.key)),
    }
    return kubeconfig.merge_context(None, CONTEXT, cluster, user)


def up(
    data_dir: pathlib.Path,
    *,
    apiserver_port: int = 6443,
    node_port: int = 10250,
    detach: bool = True,
    merge: bool = True,
    timeout: float = 60.0,
    apiserver_args: Sequence[str] = (),
    timeout_scale: float = 1.0,
) -> int:
    """Start (or reuse) the cluster; returns the process exit status.

    ``apiserver_args`` are extra ``hatchway apiserver`` flags; ``timeout_scale`` is both
    daemons' ``--timeout-scale`` (neither applied to a reused cluster)."""
    from hatchway import pki as pki_module

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    scale = [f"--timeout-scale={timeout_scale}"] if timeout_scale != 1.0 else []
    state = ClusterState.load(data_dir)
    if state is not None and state.cluster_id:
        raise ConfigError(f"an `up --ha` cluster runs in {data_dir}: `hatchway up --ha` reuses it")
    api_alive = state is not None and _alive(state.apiserver_pid)
    node_alive = state is not None and _alive(state.node_pid)
    if state and api_alive and node_alive:
        print(f"hatchway: reusing the running cluster in {data_dir}", file=sys.stderr)
    elif state and (api_alive or node_alive):
        # Restart only what is missing, on the ports it had: the live component, its
        # sessions and the kubeconfig pointing at it stay as they are.
        if not api_alive:
            print("hatchway: restarting the API server", file=sys.stderr)
            state.apiserver_pid = _spawn_apiserver(
                data_dir, state.apiserver_port, [*apiserver_args, *scale]
            )
        if not node_alive:
            print("hatchway: restarting the node agent", file=sys.stderr)
            state.node_pid = _spawn_node(
                data_dir, state.node_port, state.apiserver_port, state.node_name, scale
            )
        state.save(data_dir)
    else:
        if state:
            _stop(state)
        node_name = socket.gethostname().lower()
        pki_module.ensure_pki(data_dir, node_name=node_name)
        api_port = apiserver_port or free_port()
        kubelet_port = node_port or free_port()
        api_pid = _spawn_apiserver(data_dir, api_port, [*apiserver_args, *scale])
        node_pid = _spawn_node(data_dir, kubelet_port, api_port, node_name, scale)
        previous = (state.kubeconfig, state.previous_context) if state else ("", "")
        state = ClusterState(api_port, kubelet_port, api_pid, node_pid, node_name, *previous)
        state.save(data_dir)
    if merge and not state.kubeconfig:
        state.kubeconfig, state.previous_context = _current_context()
        state.save(data_dir)
    merged = write_kubeconfigs(data_dir, state.apiserver_port, merge, state.node_name)
    try:
        asyncio.run(_wait_ready(data_dir, state, timeout))
    except ConfigError:
        raise
    print(
        f"hatchway: cluster ready: API server https://127.0.0.1:{state.apiserver_port}, "
        f"node {state.node_name} (port {state.node_port})"
    )
    print(f"  admin kubeconfig: {data_dir / 'admin.kubeconfig'}")
    if merged:
        print(f"  context {CONTEXT!r} merged into {merged} and made current")
    print("next:")
    print("  hatchway run demo --image busybox -- sleep 3600")
    print("  hatchway exec demo -- uname -a")
    print("  kubectl exec demo -- uname -a")
    print(f"  hatchway down{'' if data_dir == default_data_dir() else f' --data-dir {data_dir}'}")
    if detach:
        return 0
    print("hatchway: running in the foreground; Ctrl-C stops the cluster", file=sys.stderr)
    try:
        while _alive(state.apiserver_pid) and _alive(state.node_pid):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    down(data_dir)
    return 0


def up_ha(
    data_dir: pathlib.Path,
    *,
    nodes: int = 2,
    merge: bool = True,
    timeout: float = 90.0,
    apiserver_args: Sequence[str] = (),
    timeout_scale: float = 1.0,
) -> int:
    """``hatchway up --ha`` (:mod:`hatchway.cli.ha_cluster`); always detached."""
    from hatchway.cli import ha_cluster

    state = ha_cluster.up(
        data_dir,
        nodes=nodes,
        merge=merge,
        timeout=timeout,
        apiserver_args=apiserver_args,
        timeout_scale=timeout_scale,
    )
    print(f"hatchway: cluster ready: load balancer {state.server}")
    for c in state.components:
        print(f"  {c['role']:<12} {c['name']:<12} {c['address']}:{c['port']}  pid {c['pid']}")
    print(f"  admin kubeconfig: {data_dir / 'admin.kubeconfig'}")
    print(f"  hatchway down{'' if data_dir == default_data_dir() else f' --data-dir {data_dir}'}")
    return 0


def _spawn_apiserver(data_dir: pathlib.Path, port: int, args: Sequence[str]) -> int:
    return _spawn(
        ["apiserver", "--data-dir", str(data_dir), "--port", str(port), *args],
        data_dir / "logs" / "apiserver.log",
    )


def _spawn_node(
    data_dir: pathlib.Path, port: int, api_port: int, node_name: str, args: Sequence[str] = ()
) -> int:
    return _spawn(
        [
            "node",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--apiserver",
            f"https://127.0.0.1:{api_port}",
            "--node-name",
            node_name,
            *args,
        ],
        data_dir / "logs" / "node.log",
    )


def _current_context() -> tuple[str, str]:
    """The kubeconfig ``up`` merges into and its current-context now (never ours)."""
    from hatchway.client import kubeconfig_file, kubeconfig_write

    path = kubeconfig_write.default_write_path(os.environ)
    try:
        current = str((kubeconfig_file.read_document(path) or {}).get("current-context") or "")
    except (OSError, ValueError, ConfigError):
        current = ""
    return path, "" if current == CONTEXT else current


def _unmerge(state: ClusterState) -> None:
    """Remove the merged context; give the kubeconfig back its previous current-context."""
    from hatchway.client import kubeconfig_write

    if not state.kubeconfig:
        return
    try:
        kubeconfig_write.remove_context(state.kubeconfig, CONTEXT)
        if state.previous_context:
            kubeconfig_write.use_context(state.kubeconfig, state.previous_context)
    except (OSError, ValueError, ConfigError) as exc:
        print(f"hatchway: could not restore {state.kubeconfig}: {exc}", file=sys.stderr)
        return
    restored = f"; current context {state.previous_context!r}" if state.previous_context else ""
    print(f"hatchway: context {CONTEXT!r} removed from {state.kubeconfig}{restored}")


def _terminate(pid: int, timeout: float = 10.0) -> None:
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(state: ClusterState) -> None:
    _terminate(state.node_pid)
    _terminate(state.apiserver_pid)


def down(data_dir: pathlib.Path) -> int:
    from hatchway.cli import ha_cluster

    state = ClusterState.load(data_dir)
    if (state is not None and state.cluster_id) or ha_cluster.leftovers(data_dir):
        # up --ha (or what a crashed one left: its namespaces are named after data_dir)
        ha_cluster.down(data_dir, state)
        if state is not None:
            _unmerge(state)
        with contextlib.suppress(OSError):
            (data_dir / "cluster.json").unlink()
        print(f"hatchway: cluster in {data_dir} stopped")
        return 0
    if state is None:
        print(f"hatchway: no cluster in {data_dir}", file=sys.stderr)
        return 0
    _stop(state)
    _remove_containers(data_dir)
    _unmerge(state)
    with contextlib.suppress(OSError):
        (data_dir / "cluster.json").unlink()
    print(f"hatchway: cluster in {data_dir} stopped")
    return 0


def _remove_containers(data_dir: pathlib.Path) -> None:
    """Delete every container the node agent in ``data_dir`` left behind (down means
    down)."""
    subprocess.run(
        [sys.executable, "-m", "hatchway", "node", "--data-dir", str(data_dir), "--cleanup"],
        check=False,
        stdout=subprocess.DEVNULL,
    )
