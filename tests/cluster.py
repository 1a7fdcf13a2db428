"""A real local Hatchway cluster for tests: ``hatchway up`` in a private data directory
and HOME, free ports, torn down with ``hatchway down``.

Use the ``cluster`` fixture (session scope, one cluster for the whole run) from
``tests/conftest.py``; ``cluster.pod(name, ...)`` creates a busybox pod and waits until
it runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
#: The servers' timeouts stretch with the tests' ones: through their configuration (the
#: daemons read no test variable).
SCALE_ARGS = [f"--timeout-scale={SCALE}"] if SCALE != 1 else []


#: A persistent ``busybox nc`` listener: busybox takes its listen backlog from the number of
#: ``-l`` flags (``-ll``, persistent, is a backlog of 2), and a test that opens a few dozen
#: connections at once overflows a backlog that small: the kernel then drops or resets
#: connections (ListenOverflows, failed SYN cookies) before any server sees them.
NC_LISTEN = ("busybox", "nc", "-" + "l" * 64)


#: The one line client-go's WebSocket executor (kubectl 1.30+) logs when the server's initial
#: empty message (protocol.md 5.3, on stdout) reaches it before it has made its streams: it
#: starts its read loop first, so the message can land in that window under load. The message
#: carries no byte; kube-apiserver sends it at the same moment and kubectl logs the same line
#: against Kubernetes. Only that line, for channel 1, and at most once: any other "Unknown
#: stream id" (a message with data, another channel, twice) stays in the output.
CLIENT_GO_INITIAL_MESSAGE_RACE = re.compile(
    rb"^E\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ websocket\.go:\d+\] "
    rb"Unknown stream id 1, discarding message\n",
    re.MULTILINE,
)


def without_initial_message_race(stderr: bytes) -> bytes:
    """``stderr`` of a kubectl run without :data:`CLIENT_GO_INITIAL_MESSAGE_RACE`'s line."""
    return CLIENT_GO_INITIAL_MESSAGE_RACE.sub(b"", stderr, count=1)


def nc_server(port: int, *command: str) -> str:
    """The shell command of a persistent ``busybox nc`` server on ``port`` that runs
    ``command`` per connection, in the background (``&``)."""
    return " ".join((*NC_LISTEN, "-p", str(port), "-e", *command)) + " &"


def can_run_containers() -> str | None:
    """Why containers cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("runc") is None:
        return "runc is not installed"
    return None


@dataclass
class Cluster:
    data_dir: pathlib.Path
    home: pathlib.Path
    kubeconfig: pathlib.Path
    apiserver_port: int
    node_port: int
    node_name: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def hatchway(
        self, *args: str, input: bytes | None = None, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the CLI against this cluster."""
        return subprocess.run(
            [sys.executable, "-m", "hatchway", *args],
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout * SCALE,
            check=check,
        )

    def kubectl(
        self,
        *args: str,
        binary: str = "kubectl",
        input: bytes | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=timeout * SCALE,
        )
        result.stderr = without_initial_message_race(result.stderr)
        return result

    def apply_pod(self, manifest: dict[str, Any]) -> None:
        result = self.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest).encode())
        assert result.returncode == 0, result.stderr.decode()

    def get(self, *path: str) -> dict[str, Any]:
        result = self.kubectl("get", *path, "-o", "json")
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def wait_phase(
        self,
        name: str,
        phases: tuple[str, ...] = ("Running",),
        timeout: float = 60,
        namespace: str = "default",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout * SCALE
        pod: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pod = self.get("pod", name, "-n", namespace)
            statuses = pod.get("status", {}).get("containerStatuses", [])
            phase = pod.get("status", {}).get("phase")
            if phase in phases and (
                phase != "Running" or (statuses and all(s.get("ready") for s in statuses))
            ):
                return pod
            time.sleep(0.2)
        raise AssertionError(f"pod {name} not in {phases}: {json.dumps(pod.get('status'))}")

    def pod(
        self,
        name: str | None = None,
        *,
        command: tuple[str, ...] = ("sleep", "86400"),
        containers: list[dict[str, Any]] | None = None,
        namespace: str = "default",
        wait: bool = True,
        **spec: Any,
    ) -> str:
        """Create a busybox pod (``sleep``) and wait until it runs; returns its name."""
        name = name or f"p-{uuid.uuid4().hex[:8]}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "containers": containers
                or [{"name": "main", "image": "busybox", "command": list(command)}],
                "terminationGracePeriodSeconds": 1,
                **spec,
            },
        }
        self.apply_pod(manifest)
        if wait:
            self.wait_phase(name, namespace=namespace)
        return name


def start_cluster(base: pathlib.Path) -> Cluster:
    data_dir = base / "data"
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "HATCHWAY_DATA_DIR": str(data_dir),
        "KUBECONFIG": str(data_dir / "admin.kubeconfig"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "up",
            "--data-dir",
            str(data_dir),
            "--apiserver-port",
            "0",
            "--node-port",
            "0",
            "--detach",
            "--no-merge",
            *SCALE_ARGS,
        ],
        capture_output=True,
        env=env,
        timeout=120 * SCALE,
    )
    if result.returncode != 0:
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((data_dir / "logs").glob("*.log"))
        )
        raise RuntimeError(f"hatchway up failed: {result.stderr.decode()}{logs}")
    state = json.loads((data_dir / "cluster.json").read_text())
    return Cluster(
        data_dir=data_dir,
        home=home,
        kubeconfig=data_dir / "admin.kubeconfig",
        apiserver_port=state["apiserver_port"],
        node_port=state["node_port"],
        node_name=state["node_name"],
        env=env,
    )


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchway", "down", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        env=cluster.env,
        timeout=120 * SCALE,
    )
