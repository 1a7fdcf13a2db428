"""What the benchmark starts and stops: its own Hatchway cluster with one busybox pod, a
podman container from the same rootfs, and an sshd on a free loopback port.

Everything is registered on one :class:`contextlib.ExitStack`, so a failure or Ctrl-C
half-way still removes what was started. A peer that cannot be started is recorded as
unavailable (with the reason) and its column reads n/a; the rest of the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
HATCHWAY = str(ROOT / ".venv" / "bin" / "hatchway")
PODMAN_IMAGE = "localhost/hatchway-bench-busybox:latest"
# Debian package of each tool the peers need.
PACKAGES = {"podman": "podman", "sshd": "openssh-server", "ssh": "openssh-client"}
# The bench cluster allows this many exec sessions per user and in total
# (``hatchway up --max-sessions-per-user/--max-sessions``; the default is 32 per user),
# so every concurrent session runs as the one admin identity.
SESSIONS_PER_USER = 1000


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ensure_tools(install: bool) -> None:
    """Install the missing peers' Debian packages, or say exactly how."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if _which(tool) is None})
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not install or os.geteuid() != 0:
        log(f"missing tools; install them with: {' '.join(cmd)} (their columns read n/a)")
        return
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(cmd, capture_output=True, env=env, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=300)
        result = subprocess.run(cmd, capture_output=True, env=env, timeout=600)
    if result.returncode != 0:
        log(f"apt-get failed: {result.stderr.decode(errors='replace')[-500:]}")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    data_dir: pathlib.Path
    env: dict[str, str]
    pod: str
    container_id: str
    apiserver_pid: int
    node_pid: int
    kubeconfigs: list[str] = field(default_factory=list)  # one per bench user
    up_argv: list[str] = field(default_factory=list)  # how it was started (for restarts)

    @property
    def runc_root(self) -> str:
        return str(self.data_dir / "node" / "runc")

    @property
    def rootfs(self) -> pathlib.Path:
        images = self.data_dir / "node" / "images"
        return next(images.glob("busybox*/rootfs"))

    def kubeconfig(self, session: int = 0) -> str:
        return self.kubeconfigs[(session // SESSIONS_PER_USER) % len(self.kubeconfigs)]


@dataclass
class Peers:
    """What was started, and why a peer is missing (name → reason)."""

    cluster: Cluster | None = None
    podman_container: str | None = None
    ssh: SshServer | None = None
    #: XDG_RUNTIME_DIR of the hatchway-reuse column (its daemons' sockets and lock files).
    reuse_dir: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


def _run(argv: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, **kw)  # type: ignore[call-overload,no-any-return]


def start_cluster(stack: contextlib.ExitStack, base: pathlib.Path, users: int) -> Cluster:
    data_dir = base / "hatchway"
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "HATCHWAY_DATA_DIR": str(data_dir),
        "KUBECONFIG": str(data_dir / "admin.kubeconfig"),
    }
    env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
    up = [PYTHON, "-m", "hatchway", "up", "--data-dir", str(data_dir)]
    up += ["--apiserver-port", "0", "--node-port", "0", "--detach", "--no-merge"]
    up += ["--max-sessions-per-user", str(SESSIONS_PER_USER)]
    up += ["--max-sessions", str(SESSIONS_PER_USER)]
    # Every bench client connects from 127.0.0.1: one source address.
    up += ["--max-connections-per-source", str(4 * SESSIONS_PER_USER)]
    stack.callback(_stop_cluster, data_dir, env)
    result = _run(up, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"hatchway up failed: {result.stderr.decode(errors='replace')}")
    state = json.loads((data_dir / "cluster.json").read_text())
    pod = "bench"
    _create_pod(env, pod)
    cid = _container_id(data_dir, _pod_uid(env, pod))
    cluster = Cluster(data_dir, env, pod, cid, state["apiserver_pid"], state["node_pid"], [], up)
    cluster.kubeconfigs = _user_kubeconfigs(data_dir, users)
    return cluster


def restart_servers(cluster: Cluster, timeout: float = 60) -> None:
    """Fresh API server and node agent processes (the pod's container keeps running):
    each peer's memory figure is then measured on servers that no earlier peer grew.
    ``hatchway up`` restarts exactly the components that died, on the same ports."""
    pids = [cluster.apiserver_pid, cluster.node_pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the servers {pids} did not stop within {timeout}s")
        time.sleep(0.05)
    result = _run(cluster.up_argv, env=cluster.env)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace")
        raise RuntimeError(f"hatchway up (restart) failed: {detail}")
    state = json.loads((cluster.data_dir / "cluster.json").read_text())
    cluster.apiserver_pid, cluster.node_pid = state["apiserver_pid"], state["node_pid"]
    probe = [HATCHWAY, "exec", "--kubeconfig", cluster.kubeconfig(0), cluster.pod, "--", "true"]
    while _run(probe, env=cluster.env, timeout=timeout).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the restarted cluster does not run an exec")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop_cluster(data_dir: pathlib.Path, env: dict[str, str]) -> None:
    log("stopping the Hatchway cluster")
    _run([PYTHON, "-m", "hatchway", "down", "--data-dir", str(data_dir)], env=env)


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
    result = _run(
        ["kubectl", "create", "-f", "-"], env=env, input=yaml.safe_dump(manifest).encode()
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot create the pod: {result.stderr.decode(errors='replace')}")


def _pod_uid(env: dict[str, str], name: str) -> str:
    result = _run(["kubectl", "get", "pod", name, "-o", "jsonpath={.metadata.uid}"], env=env)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"cannot read the pod's uid: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode().strip()


def _container_id(data_dir: pathlib.Path, uid: str, timeout: float = 60) -> str:
    """The runc id of the pod's container once it runs (the node's pod state file, which
    is named by the pod's uid)."""
    path = data_dir / "node" / "pods" / f"{uid}.json"
    runc_root = str(data_dir / "node" / "runc")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            cid = json.loads(path.read_text())["containers"]["main"]["id"]
            state = _run(["runc", "--root", runc_root, "state", cid], timeout=10)
            if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
                return str(cid)
        time.sleep(0.2)
    raise RuntimeError(f"pod {uid} did not start within {timeout}s")


def _user_kubeconfigs(data_dir: pathlib.Path, users: int) -> list[str]:
    """Admin kubeconfigs for ``users`` distinct identities (system:masters)."""
    import base64

    from hatchway.pki import mint_user_cert

    admin = yaml.safe_load((data_dir / "admin.kubeconfig").read_text())
    paths = [str(data_dir / "admin.kubeconfig")]
    for i in range(1, users):
        cert, key = mint_user_cert(data_dir / "pki", f"bench-{i}", ["system:masters"], admin=True)
        doc = json.loads(json.dumps(admin))
        doc["users"][0]["user"] = {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
        path = data_dir / f"bench-{i}.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    return paths


def start_reuse_dir(stack: contextlib.ExitStack, base: pathlib.Path) -> str:
    """A private XDG_RUNTIME_DIR for the hatchway-reuse column; its exec daemons are
    stopped at the end (each writes its pid into its socket's lock file)."""
    directory = base / "reuse-runtime"
    directory.mkdir(mode=0o700)

    def stop_daemons() -> None:
        for lock in (directory / "hatchway").glob("*.lock"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)

    stack.callback(stop_daemons)
    return str(directory)


def start_podman(stack: contextlib.ExitStack, cluster: Cluster) -> str:
    if _which("podman") is None:
        raise RuntimeError("podman is not installed (apt-get install -y podman)")
    stack.callback(_run, ["podman", "rmi", "-f", PODMAN_IMAGE])  # after the container
    tar = subprocess.Popen(["tar", "-C", str(cluster.rootfs), "-c", "."], stdout=subprocess.PIPE)
    result = _run(["podman", "import", "-", PODMAN_IMAGE], stdin=tar.stdout)
    tar.wait()
    if result.returncode != 0:
        raise RuntimeError(f"podman import failed: {result.stderr.decode(errors='replace')}")
    name = f"hatchway-bench-{os.getpid()}"
    stack.callback(_run, ["podman", "rm", "-f", "-t", "0", name])
    # Limits at or under this process's own: runc may not raise them (no CAP_SYS_RESOURCE
    # in some sandboxes), and podman's default asks for 1048576.
    run = ["podman", "run", "-d", "--name", name, "--network", "none"]
    run += ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
    result = _run([*run, PODMAN_IMAGE, "sleep", "86400"])
    if result.returncode != 0:
        raise RuntimeError(f"podman run failed: {result.stderr.decode(errors='replace')}")
    return name


@dataclass
class SshServer:
    port: int
    key: str
    process: subprocess.Popen[bytes]

    def argv(self, tty: bool) -> list[str]:
        return [
            "ssh", "-F", "/dev/null", "-i", self.key, "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "Compression=no",
            "-c", "aes128-gcm@openssh.com", "-tt" if tty else "-T", "root@127.0.0.1",
        ]  # fmt: skip


SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_ed25519
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Compression no
Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com
MaxStartups 1000
MaxSessions 1000
UseDNS no
LogLevel ERROR
"""


def start_sshd(stack: contextlib.ExitStack, base: pathlib.Path) -> SshServer:
    sshd = _which("sshd")
    if sshd is None or _which("ssh") is None:
        raise RuntimeError("OpenSSH is not installed (apt-get install -y openssh-server)")
    d = base / "sshd"
    d.mkdir()
    for name in ("host_ed25519", "client_ed25519"):
        result = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)])
        if result.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed: {result.stderr.decode(errors='replace')}")
    (d / "authorized_keys").write_bytes((d / "client_ed25519.pub").read_bytes())
    port = free_port()
    (d / "sshd_config").write_text(SSHD_CONFIG.format(port=port, dir=d))
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(d / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(d / "sshd.log", "wb"),
    )
    stack.callback(_stop, process)
    server = SshServer(port, str(d / "client_ed25519"), process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()[-500:]}")
        if _run([*server.argv(False), "true"], timeout=10).returncode == 0:
            return server
        time.sleep(0.2)
    raise RuntimeError(f"sshd on port {port} not answering: {(d / 'sshd.log').read_text()[-500:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
