"""The columns: how each tool runs one command in the same busybox container image.

* ``runc`` — ``runc exec`` straight into the Hatchway pod's container: the floor.
* ``podman`` — ``podman exec`` into a podman container from the same rootfs.
* ``ssh`` — OpenSSH to a private sshd on loopback, which runs ``runc exec`` into the same
  container as the Hatchway pod: the transport cost of SSH on top of the floor, so the
  work done at the far end is identical to Hatchway's (the node agent also starts
  ``runc exec``); running the command on the host instead would skip the runtime.
* ``hatchway`` — ``hatchway exec`` (the CLI as a user runs it, a new process each time).
* ``hatchway-reuse`` — the same with ``HATCHWAY_EXEC_REUSE=1`` (``hatchway exec --reuse``): a
  new CLI process each time, which hands its descriptors to a warm per-user daemon
  (bench/README.md, "``hatchway exec --reuse``"). Only in the figures it serves: exec
  latency and one stream each way (it declines terminals, and the 200-session figures
  would measure its 64-session bound).
* ``kubectl-ws`` / ``kubectl-spdy`` — ``kubectl exec`` against the same API server over
  WebSocket v5 and over SPDY/3.1 (``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.env import HATCHWAY, Peers, restart_servers

ORDER = ("runc", "podman", "ssh", "hatchway", "hatchway-reuse", "kubectl-ws", "kubectl-spdy")
FLOOR = "runc"
SSH = "ssh"


@dataclass
class Peer:
    name: str
    build: Callable[[Sequence[str], bool, bool, int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    # The processes that serve sessions for this peer: name → pid (for memory figures).
    servers: Callable[[], dict[str, list[int]]] = dict
    # Replaces those processes by fresh ones before a memory figure (None: nothing to do).
    fresh: Callable[[], None] | None = None
    # The figures this peer takes part in (None: all of them).
    figures: tuple[str, ...] | None = None

    def argv(
        self, cmd: Sequence[str], *, stdin: bool = False, tty: bool = False, session: int = 0
    ) -> list[str]:
        return self.build(cmd, stdin, tty, session)


def make_peers(peers: Peers, base_env: dict[str, str]) -> dict[str, Peer]:
    """The available columns, in :data:`ORDER`."""
    out: dict[str, Peer] = {}
    cluster = peers.cluster
    if cluster is None:
        return out
    env = cluster.env
    runc_exec = ["runc", "--root", cluster.runc_root, "exec"]

    def runc(cmd: Sequence[str], stdin: bool, tty: bool, session: int) -> list[str]:
        return [*runc_exec, *(["-t"] if tty else []), cluster.container_id, *cmd]

    out["runc"] = Peer("runc", runc, env)
    if peers.podman_container:
        name = peers.podman_container

        def podman(cmd: Sequence[str], stdin: bool, tty: bool, session: int) -> list[str]:
            flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
            return ["podman", "exec", *flags, name, *cmd]

        out["podman"] = Peer("podman", podman, base_env)
    if peers.ssh:
        ssh_server = peers.ssh

        def ssh(cmd: Sequence[str], stdin: bool, tty: bool, session: int) -> list[str]:
            return [*ssh_server.argv(tty), shlex.join(runc(cmd, stdin, tty, session))]

        out["ssh"] = Peer("ssh", ssh, base_env, lambda: {"sshd": [ssh_server.process.pid]})

    def servers() -> dict[str, list[int]]:
        return {"apiserver": [cluster.apiserver_pid], "node": [cluster.node_pid]}

    def hatchway(cmd: Sequence[str], stdin: bool, tty: bool, session: int) -> list[str]:
        flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
        kubeconfig = ["--kubeconfig", cluster.kubeconfig(session)]
        return [HATCHWAY, "exec", *kubeconfig, cluster.pod, *flags, "--", *cmd]

    def fresh() -> None:
        restart_servers(cluster)

    out["hatchway"] = Peer("hatchway", hatchway, env, servers, fresh)
    if peers.reuse_dir:
        reuse_env = {**env, "HATCHWAY_EXEC_REUSE": "1", "XDG_RUNTIME_DIR": peers.reuse_dir}
        out["hatchway-reuse"] = Peer(
            "hatchway-reuse", hatchway, reuse_env, figures=("stdout", "stdin", "latency")
        )

    def kubectl(cmd: Sequence[str], stdin: bool, tty: bool, session: int) -> list[str]:
        flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
        kubeconfig = ["--kubeconfig", cluster.kubeconfig(session)]
        return ["kubectl", *kubeconfig, "exec", cluster.pod, *flags, "--", *cmd]

    out["kubectl-ws"] = Peer("kubectl-ws", kubectl, env, servers, fresh)
    spdy_env = {**env, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    out["kubectl-spdy"] = Peer("kubectl-spdy", kubectl, spdy_env, servers, fresh)
    return out
