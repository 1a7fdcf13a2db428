"""Network namespaces, veths and a bridge for ``hatchway up --ha``, with ``ip``.

Each component runs in ``hatchway-<cluster>-<name>`` with one veth to the bridge
``hw<cluster>``; addresses come from 198.18.0.0/24 (RFC 2544's benchmarking range, never
routed), the bridge itself gets 198.18.0.1 so that the host (the admin's kubectl)
reaches the load balancer. Only interfaces created here get these addresses, and only
these are removed: everything is named after the cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

from hatchway.errors import ConfigError

SUBNET = "198.18.0"
PREFIX = 24
HOST_ADDRESS = f"{SUBNET}.1"
NETNS_DIR = "/run/netns"


def why_not() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veths, a bridge)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def namespace(cluster: str, name: str) -> str:
    return f"hatchway-{cluster}-{name}"


def bridge_name(cluster: str) -> str:
    return f"hw{cluster}"


def _veth(cluster: str, address: str) -> str:
    """The host side of a component's veth (15 characters at most, IFNAMSIZ)."""
    return f"hw{cluster}v{address.rsplit('.', 1)[1]}"


def _links() -> set[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def ensure_bridge(cluster: str) -> None:
    """The cluster's bridge, up, with the host's address (refused when another
    interface of this machine already has it: one such cluster per machine)."""
    bridge = bridge_name(cluster)
    if bridge not in _links():
        holders = _ip("-o", "addr", "show", "to", f"{HOST_ADDRESS}/32", check=False).stdout
        if holders.strip():
            owner = holders.split()[1]
            raise ConfigError(
                f"{HOST_ADDRESS} is already on {owner}: another `hatchway up --ha` cluster "
                "runs on this machine (hatchway down --data-dir ... stops it)"
            )
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", bridge)
    _ip("link", "set", bridge, "up")


def ensure_namespace(cluster: str, name: str, address: str) -> str:
    """``hatchway-<cluster>-<name>`` with ``eth0`` at ``address`` on the bridge, and its
    loopback up; what exists already is kept. Returns the namespace's name."""
    netns = namespace(cluster, name)
    if not os.path.exists(os.path.join(NETNS_DIR, netns)):
        _ip("netns", "add", netns)
    host_side = _veth(cluster, address)
    if host_side not in _links():
        peer = f"hw{cluster}p{address.rsplit('.', 1)[1]}"  # renamed eth0 inside
        _ip("link", "add", host_side, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", netns)
        _ip("-n", netns, "link", "set", peer, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
    _ip("link", "set", host_side, "master", bridge_name(cluster))
    _ip("link", "set", host_side, "up")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    return netns


def enter(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in the network namespace ``netns`` alone: nsenter (not ``ip netns
    exec``, which remounts /sys without the cgroup hierarchy runc needs). nsenter
    execs the command, so the pid spawned is the component's."""
    return ["nsenter", f"--net={os.path.join(NETNS_DIR, netns)}", "--", *argv]


def namespaces(cluster: str) -> list[str]:
    """The cluster's namespaces that exist now."""
    prefix = namespace(cluster, "")
    with contextlib.suppress(OSError):
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    return []


def kill_namespace_processes(netns: str) -> int:
    """SIGKILL whatever still runs in ``netns`` (after a crash or an unclean stop);
    how many. Anything there is a process of this cluster."""
    out = _ip("netns", "pids", netns, check=False).stdout.split()
    count = 0
    for pid in out:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
            count += 1
    return count


def remove(cluster: str) -> None:
    """Remove the cluster's namespaces, veths and bridge (what is missing is skipped)."""
    for netns in namespaces(cluster):
        kill_namespace_processes(netns)
        _ip("netns", "del", netns, check=False)
    prefix = f"hw{cluster}v"
    for link in _links():
        if link.startswith(prefix):
            _ip("link", "del", link, check=False)
    if bridge_name(cluster) in _links():
        _ip("link", "del", bridge_name(cluster), check=False)
