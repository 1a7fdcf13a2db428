"""What the interop tests share: the bundled kubectl binaries, minted users, pods."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import os
import pathlib
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from typing import Any

import yaml

from cluster import SCALE, Cluster, without_initial_message_race

VERSIONS = ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33")
#: kubectl 1.30 and later try WebSocket first (protocol.md 5.8); older ones speak SPDY only.
WEBSOCKET_SINCE = (1, 30)


def kubectl_dir() -> pathlib.Path | None:
    found = shutil.which("kubectl")
    return pathlib.Path(found).resolve().parent if found else None


def kubectl_binary(version: str) -> pathlib.Path | None:
    directory = kubectl_dir()
    if directory is None:
        return None
    path = directory / f"kubectl.{version}"
    return path if os.access(path, os.X_OK) else None


def speaks_websocket(version: str) -> bool:
    major, minor = (int(part) for part in version.split("."))
    return (major, minor) >= WEBSOCKET_SINCE


@dataclasses.dataclass
class Kubectl:
    """One kubectl binary with a private HOME, run against the cluster."""

    version: str
    transport: str
    binary: pathlib.Path
    cluster: Cluster
    home: pathlib.Path

    @property
    def env(self) -> dict[str, str]:
        env = {**self.cluster.env, "HOME": str(self.home)}
        env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
        if self.transport == "spdy" and speaks_websocket(self.version):
            env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
        return env

    def argv(self, *args: str, kubeconfig: pathlib.Path | None = None) -> list[str]:
        config = kubeconfig or self.cluster.kubeconfig
        return [str(self.binary), "--kubeconfig", str(config), *args]

    def __call__(
        self,
        *args: str,
        kubeconfig: pathlib.Path | None = None,
        input: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            self.argv(*args, kubeconfig=kubeconfig),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env,
            timeout=timeout * SCALE,
        )
        result.stderr = without_initial_message_race(result.stderr)
        return result


# -- users -----------------------------------------------------------------------
@dataclasses.dataclass
class Users:
    """Kubeconfigs of minted users: ``nobody`` (no binding), ``viewer`` (view),
    ``editor`` (edit), all in the ``default`` namespace."""

    nobody: pathlib.Path
    viewer: pathlib.Path
    editor: pathlib.Path
    names: dict[str, str]


def write_user_kubeconfig(cluster: Cluster, user: str, path: pathlib.Path) -> pathlib.Path:
    from hatchway import pki

    cert, key = pki.mint_user_cert(cluster.data_dir / "pki", user)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [
        {
            "name": user,
            "user": {
                "client-certificate-data": base64.b64encode(cert).decode(),
                "client-key-data": base64.b64encode(key).decode(),
            },
        }
    ]
    config["contexts"] = [
        {"name": user, "context": {"cluster": config["clusters"][0]["name"], "user": user}}
    ]
    config["current-context"] = user
    path.write_text(yaml.safe_dump(config))
    return path


def bind_role(user: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{role}", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


# -- pods ------------------------------------------------------------------------
@dataclasses.dataclass
class Pods:
    """Pods shared by the interop tests (created once, all running)."""

    simple: str
    #: Containers ``app`` (prints two log lines) and ``sidecar``, an init container
    #: ``init``; no default-container annotation.
    multi: str
    #: Like ``multi`` but annotated ``kubectl.kubernetes.io/default-container: sidecar``.
    annotated: str
    privileged: str
    host_pid: str


def container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    env = [{"name": "WHO", "value": name}]
    return {"name": name, "image": "busybox", "command": command, "env": env, **extra}


def pod_manifest(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"terminationGracePeriodSeconds": 1, **spec},
    }


SLEEP = ["sleep", "86400"]
LOGGER = ["sh", "-c", "echo line1; echo line2; exec sleep 86400"]


def multi_spec() -> dict[str, Any]:
    return {
        "initContainers": [container("init", ["true"])],
        "containers": [container("app", LOGGER), container("sidecar", SLEEP)],
    }


# -- a real pty ----------------------------------------------------------------------------
class PtySession:
    """A child process on the slave side of a new pty, as its controlling terminal, so
    that a window-size change on the master makes the kernel send it SIGWINCH."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int, cols: int) -> None:
        master, slave = os.openpty()
        set_window_size(master, rows, cols)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only execs
            try:
                os.close(master)
                os.login_tty(slave)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid = pid
        self.master = master
        self.output = b""
        self._seen = 0
        self.returncode: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def resize(self, rows: int, cols: int) -> None:
        set_window_size(self.master, rows, cols)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.output += chunk
        return bool(chunk)

    def expect(self, pattern: bytes, timeout: float = 20) -> re.Match[bytes]:
        """The first match of ``pattern`` in output not matched before."""
        deadline = time.monotonic() + timeout * SCALE
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.output, self._seen)
            if match:
                self._seen = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                raise AssertionError(f"{pattern!r} not seen in {self.output[-2000:]!r}")

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout * SCALE
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"still running; output {self.output[-2000:]!r}")
            self._read(0.05)
        while self._read(0):
            pass
        return self.returncode

    def close(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.returncode = -signal.SIGKILL
        with contextlib.suppress(OSError):
            os.close(self.master)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def core_api(kubeconfig: str | os.PathLike[str]) -> Any:
    """The official Python client's CoreV1Api for ``kubeconfig``'s current context (the
    caller has checked that ``kubernetes`` is installed); ``api.api_client`` closes it."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
