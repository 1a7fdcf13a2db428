"""OCI runtime config (``config.json``) from a Kubernetes pod and container, as plain dicts.

Pure functions: no file system, no processes. The runtime hands in what they need to know
about the host (the sandbox's namespace paths, host devices for privileged containers,
volume directories).

Namespaces follow the pod model: a sandbox container (a ``sleep`` forever, like the
Kubernetes pause container) owns the pod's network, IPC and UTS namespaces; each app
container joins them (by ``/proc/<sandbox pid>/ns/...``) and has its own PID and mount
namespaces. ``hostNetwork`` (which also means the host's UTS namespace), ``hostIPC`` and
``hostPID`` leave the namespace out, i.e. use the host's.

Hardening, for every container that is not privileged (issue 9; containerd and Docker do
the same by default):

* seccomp: ``securityContext.seccompProfile`` (the container's, else the pod's) chooses
  RuntimeDefault (also when unset: :func:`hatchway.node.seccomp.default_profile` for the
  container's effective capabilities), Unconfined (none) or Localhost (a file under the
  node's ``seccomp/`` directory, loaded by the runtime). Privileged containers get none,
  as with containerd. ``runc exec`` applies the container's filter to exec'd processes.
* no_new_privs: on unless ``allowPrivilegeEscalation`` is explicitly true, or the container
  is privileged or holds CAP_SYS_ADMIN (both of which mean escalation is allowed; the
  Kubernetes API refuses ``allowPrivilegeEscalation: false`` with either). This is stricter
  than containerd, which sets it only for an explicit false: the issue asks for "no new
  privileges unless allowed", and a setuid binary is a way up from a namespace user's
  container that nothing in a pod needs by default.
* a cgroup namespace, so ``/proc/self/cgroup`` and ``/sys/fs/cgroup`` show the container's
  own cgroup as the root and nothing of the node's layout.
* ``resources.limits``: memory (and memory+swap at the same value: no swap beyond the
  limit), CPU as a CFS quota over a 100 ms period (``millicores * 100``, at least 1 ms, as
  the kubelet computes it), CPU shares from the request (kubelet's formula), and a pids
  limit for every container (privileged ones too) chosen by the runtime.
* rlimits: RLIMIT_NOFILE 1048576/1048576 (the kernel's ``nr_open`` default and what
  Docker and containerd under systemd hand out), lowered to the node agent's own hard
  limit when that is smaller, and RLIMIT_CORE 0/0: ``core_pattern`` is
  the node's, so a core file would land on the node's disk (or in a host helper) with the
  process's secrets in it.

Exec init: every app container gets the node's ``tini-static`` bind-mounted read-only
(and nosuid, nodev) at :data:`~hatchway.node.runtime_tree.EXEC_INIT_PATH`, on the
container's own /dev tmpfs, as Docker's ``--init`` mounts ``docker-init``; exec'd commands
run under it as ``tini -s -- argv`` (see :mod:`hatchway.node.runtime_tree` for why). A
read-only bind mount gives the container no write path to the host's file (no
CVE-2019-5736-style overwrite through ``/proc/PID/exe``); a privileged container, which
can remount, can reach the host in any case.

The sandbox gets the same seccomp profile (with no capabilities), no_new_privs, a cgroup
namespace and small memory and pids limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hatchway.api import quantity
from hatchway.errors import HatchwayError
from hatchway.node import seccomp
from hatchway.node.runtime_tree import EXEC_INIT_PATH

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's and containerd's default set.
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

SANDBOX_COMMAND = ["sleep", "2147483647"]

#: Default pids limit of each container (kubelet's podPidsLimit is unlimited by default;
#: issue 9 asks for a bound, so a fork bomb stops at its container).
DEFAULT_PIDS_LIMIT = 4096
# The sandbox's limits: runc init (a Go binary with its threads) runs in the cgroup before
# it becomes ``sleep``, so these leave it room.
SANDBOX_PIDS_LIMIT = 32
SANDBOX_MEMORY_LIMIT = 32 * 1024 * 1024
CPU_PERIOD = 100_000  # µs, the kubelet's
MIN_CPU_QUOTA = 1_000  # µs, the kubelet's minimum
NOFILE_LIMIT = 1048576


class SpecError(HatchwayError):
    """The pod or container cannot be turned into a runnable spec (e.g. no command)."""


def pod_namespaces(pod: Mapping[str, Any]) -> dict[str, bool]:
    """Which pod-level namespaces are the host's: ``{"network": bool, "ipc": ..., "pid": ...}``."""
    spec = pod.get("spec") or {}
    return {
        "network": bool(spec.get("hostNetwork")),
        "ipc": bool(spec.get("hostIPC")),
        "pid": bool(spec.get("hostPID")),
    }


def hostname_of(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    name = spec.get("hostname") or (pod.get("metadata") or {}).get("name") or "pod"
    return str(name)[:63]


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names replaced, ``$$`` escapes, rest kept."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def merge_env(image_env: list[str], container: Mapping[str, Any], hostname: str) -> list[str]:
    """Image env, then HOSTNAME, then the container's ``env`` (``valueFrom`` ignored)."""
    env: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = hostname
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value") or ""), env)
    return [f"{k}={v}" for k, v in env.items()]


def command_line(
    container: Mapping[str, Any], entrypoint: list[str], cmd: list[str], env: list[str]
) -> list[str]:
    """argv as Kubernetes builds it from command/args and the image Entrypoint/Cmd."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        argv = command + args
    elif args:
        argv = list(entrypoint) + args
    else:
        argv = list(entrypoint) + list(cmd)
    if not argv:
        raise SpecError(f"container {container.get('name')!r}: no command specified")
    values = dict(e.partition("=")[::2] for e in env)
    return [expand(str(a), values) for a in argv]


def resolve_user(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image_user: str,
    users: Mapping[str, tuple[int, int]],
) -> tuple[int, int]:
    """(uid, gid): securityContext (container over pod) over the image's ``User``."""
    uid, gid = 0, 0
    if image_user:
        name, _, group = image_user.partition(":")
        if name.isdigit():
            uid = int(name)
            gid = next((g for (u, g) in users.values() if u == uid), 0)
        elif name in users:
            uid, gid = users[name]
        else:
            raise SpecError(f"image user {name!r} not found in the image's /etc/passwd")
        if group.isdigit():
            gid = int(group)
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    for sc in (psc, csc):
        if sc.get("runAsUser") is not None:
            uid = int(sc["runAsUser"])
        if sc.get("runAsGroup") is not None:
            gid = int(sc["runAsGroup"])
    return uid, gid


def capabilities(container: Mapping[str, Any], host_caps: list[str] | None = None) -> list[str]:
    """The container's capability set; privileged means every one the host holds (as
    containerd does: asking for one outside our bounding set makes runc fail)."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return [c for c in ALL_CAPS if host_caps is None or c in host_caps]
    caps = sc.get("capabilities") or {}
    drop = {_cap(c) for c in caps.get("drop") or []}
    result = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    for c in caps.get("add") or []:
        name = _cap(c)
        added = ALL_CAPS if name == "CAP_ALL" else [name]
        result += [a for a in added if a not in result]
    return result


def _cap(name: str) -> str:
    name = str(name).upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _mounts(privileged: bool) -> list[dict[str, Any]]:
    ro = [] if privileged else ["ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", *ro],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", *ro],
        },
    ]


def exec_init_mount(source: str) -> dict[str, Any]:
    """The read-only bind mount of the node's tini (``source``) for exec (see above)."""
    return {
        "destination": EXEC_INIT_PATH,
        "type": "bind",
        "source": source,
        "options": ["bind", "ro", "nosuid", "nodev"],
    }


def volume_mounts(container: Mapping[str, Any], volumes: Mapping[str, str]) -> list[dict[str, Any]]:
    """Bind mounts for ``volumeMounts`` whose volume has a host directory in ``volumes``."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        source = volumes.get(vm.get("name", ""))
        if source is None:
            raise SpecError(f"volume {vm.get('name')!r} is not defined in the pod")
        opts = ["rbind", "ro" if vm.get("readOnly") else "rw"]
        mounts.append(
            {"destination": vm["mountPath"], "type": "bind", "source": source, "options": opts}
        )
    return mounts


def _namespaces(kinds: list[str], join: Mapping[str, str]) -> list[dict[str, str]]:
    result = []
    for kind in kinds:
        entry = {"type": kind}
        if kind in join:
            entry["path"] = join[kind]
        result.append(entry)
    return result


def _linux(
    namespaces: list[dict[str, str]],
    privileged: bool,
    cgroups_path: str,
    host_devices: list[dict[str, Any]],
) -> dict[str, Any]:
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": privileged, "access": "rwm"}]},
    }
    if privileged:
        linux["devices"] = list(host_devices)
    else:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    return linux


def _process(
    args: list[str], env: list[str], cwd: str, uid: int, gid: int, caps: list[str], nnp: bool
) -> dict[str, Any]:
    return {
        "terminal": False,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": cwd or "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": nnp,
    }


def rlimits(max_nofile: int) -> list[dict[str, Any]]:
    """``process.rlimits``; ``max_nofile`` caps RLIMIT_NOFILE (runc cannot raise a hard
    limit above the node agent's own without CAP_SYS_RESOURCE)."""
    nofile = min(NOFILE_LIMIT, max_nofile)
    return [
        {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
    ]


def no_new_privileges(container: Mapping[str, Any], caps: list[str]) -> bool:
    """no_new_privs unless escalation is allowed (see the module docstring)."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged") or "CAP_SYS_ADMIN" in caps:
        return False
    return sc.get("allowPrivilegeEscalation") is not True


def resources(container: Mapping[str, Any], pids_limit: int | None) -> dict[str, Any]:
    """``linux.resources`` (devices aside) from ``resources.limits``/``requests``."""
    res = container.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    out: dict[str, Any] = {}
    if limits.get("memory") is not None:
        memory = _quantity(limits["memory"], "memory", quantity.value)
        out["memory"] = {"limit": memory, "swap": memory}
    cpu: dict[str, int] = {}
    if limits.get("cpu") is not None:
        milli = _quantity(limits["cpu"], "cpu", quantity.milli_value)
        if milli:
            cpu = {"quota": max(milli * CPU_PERIOD // 1000, MIN_CPU_QUOTA), "period": CPU_PERIOD}
    request = requests.get("cpu", limits.get("cpu"))
    if request is not None:
        cpu["shares"] = max(_quantity(request, "cpu", quantity.milli_value) * 1024 // 1000, 2)
    if cpu:
        out["cpu"] = cpu
    if pids_limit is not None and pids_limit > 0:
        out["pids"] = {"limit": pids_limit}
    return out


def _quantity(raw: Any, name: str, convert: Any) -> int:
    try:
        amount = int(convert(raw))
    except quantity.QuantityError as e:
        raise SpecError(f"resources: {name}: {e}") from None
    if amount < 0:
        raise SpecError(f"resources: {name}: must be greater than or equal to 0")
    return amount


def seccomp_profile(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    caps: list[str],
    *,
    arch: str,
    localhost: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The container's ``linux.seccomp`` (None: unconfined); see ``seccomp.container_profile``."""
    try:
        return seccomp.container_profile(pod, container, caps, arch=arch, localhost=localhost)
    except seccomp.SeccompProfileError as e:
        raise SpecError(f"failed to generate seccomp security profile: {e}") from None


def sandbox_spec(
    pod: Mapping[str, Any],
    *,
    rootfs: str,
    cgroups_path: str,
    arch: str = "x86_64",
    max_nofile: int = NOFILE_LIMIT,
) -> dict[str, Any]:
    """The pod's sandbox: holds the network, IPC and UTS namespaces, sleeps forever."""
    host = pod_namespaces(pod)
    kinds = ["pid", "mount", "cgroup"]
    kinds += [] if host["network"] else ["network", "uts"]
    kinds += [] if host["ipc"] else ["ipc"]
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": _process(SANDBOX_COMMAND, [f"PATH={DEFAULT_PATH}"], "/", 65534, 65534, [], True),
        "root": {"path": rootfs, "readonly": True},
        "mounts": _mounts(False),
        "linux": _linux(_namespaces(kinds, {}), False, cgroups_path, []),
        "annotations": _annotations(pod, "POD"),
    }
    spec["linux"]["resources"].update(
        memory={"limit": SANDBOX_MEMORY_LIMIT, "swap": SANDBOX_MEMORY_LIMIT},
        pids={"limit": SANDBOX_PIDS_LIMIT},
    )
    spec["linux"]["seccomp"] = seccomp.default_profile([], arch)
    spec["process"]["rlimits"] = rlimits(max_nofile)
    if not host["network"]:
        spec["hostname"] = hostname_of(pod)
    return spec


def container_spec(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    rootfs: str,
    image_entrypoint: list[str] | None = None,
    image_cmd: list[str] | None = None,
    image_env: list[str] | None = None,
    image_workdir: str = "",
    image_user: str = "",
    users: Mapping[str, tuple[int, int]] | None = None,
    sandbox_pid: int | None = None,
    cgroups_path: str = "",
    host_devices: list[dict[str, Any]] | None = None,
    volumes: Mapping[str, str] | None = None,
    host_caps: list[str] | None = None,
    pids_limit: int | None = DEFAULT_PIDS_LIMIT,
    arch: str = "x86_64",
    localhost_seccomp: Mapping[str, Any] | None = None,
    max_nofile: int = NOFILE_LIMIT,
    exec_init: str | None = None,
) -> dict[str, Any]:
    """The OCI config for one app container of ``pod``.

    ``sandbox_pid``: the sandbox's host PID, whose network/IPC/UTS namespaces are joined
    (not needed when all three are the host's). ``users``: name → (uid, gid) from the
    image's /etc/passwd. ``host_devices``: linux.devices entries for privileged containers.
    ``volumes``: volume name → host directory for ``volumeMounts``. ``host_caps``: the
    capabilities the node holds (privileged containers get those; default: all).
    ``pids_limit``: each container's (None or 0: none). ``arch``: ``platform.machine()``
    for the seccomp profile. ``localhost_seccomp``: the Localhost profile, if asked for.
    ``max_nofile``: the node's own hard RLIMIT_NOFILE (see :func:`rlimits`).
    ``exec_init``: the node's tini-static, mounted for exec (None: none).
    """
    sc = container.get("securityContext") or {}
    privileged = bool(sc.get("privileged"))
    host = pod_namespaces(pod)
    hostname = hostname_of(pod)
    env = merge_env(image_env or [], container, hostname)
    args = command_line(container, image_entrypoint or [], image_cmd or [], env)
    uid, gid = resolve_user(pod, container, image_user, users or {})
    join: dict[str, str] = {}
    shared = [k for k in ("network", "ipc") if not host[k]]
    if not host["network"]:
        shared.append("uts")
    if shared and sandbox_pid is None:
        raise SpecError("a sandbox PID is needed to join the pod's namespaces")
    ns_file = {"network": "net", "ipc": "ipc", "uts": "uts"}
    for kind in shared:
        join[kind] = f"/proc/{sandbox_pid}/ns/{ns_file[kind]}"
    kinds = ["mount", *shared] + ([] if host["pid"] else ["pid"])
    kinds += [] if privileged else ["cgroup"]
    caps = capabilities(container, host_caps)
    workdir = str(container.get("workingDir") or image_workdir or "/")
    process = _process(args, env, workdir, uid, gid, caps, no_new_privileges(container, caps))
    process["rlimits"] = rlimits(max_nofile)
    groups = ((pod.get("spec") or {}).get("securityContext") or {}).get("supplementalGroups")
    if groups:
        process["user"]["additionalGids"] = [int(g) for g in groups]
    linux = _linux(_namespaces(kinds, join), privileged, cgroups_path, host_devices or [])
    linux["resources"].update(resources(container, pids_limit))
    profile = seccomp_profile(pod, container, caps, arch=arch, localhost=localhost_seccomp)
    if profile is not None:
        linux["seccomp"] = profile
    return {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": rootfs, "readonly": bool(sc.get("readOnlyRootFilesystem"))},
        "mounts": _mounts(privileged)
        + ([exec_init_mount(exec_init)] if exec_init else [])
        + volume_mounts(container, volumes or {}),
        "linux": linux,
        "annotations": _annotations(pod, "CONTAINER", str(container.get("name") or "")),
    }


def _annotations(pod: Mapping[str, Any], kind: str, name: str = "") -> dict[str, str]:
    meta = pod.get("metadata") or {}
    notes = {
        "io.hatchway.kind": kind,
        "io.hatchway.pod.namespace": str(meta.get("namespace") or "default"),
        "io.hatchway.pod.name": str(meta.get("name") or ""),
        "io.hatchway.pod.uid": str(meta.get("uid") or ""),
    }
    if name:
        notes["io.hatchway.container.name"] = name
    return notes


def caps_from_mask(mask: int) -> list[str]:
    """Capability names of a /proc/<pid>/status ``CapBnd`` bit mask."""
    return [name for bit, name in enumerate(ALL_CAPS) if mask >> bit & 1]


def with_terminal(spec: dict[str, Any]) -> None:
    """A ``tty: true`` container: its process gets a pty (the shim receives the master
    over runc's console socket) and, as containerd's ``WithTTY`` does, ``TERM=xterm``
    unless the container sets ``TERM`` itself."""
    process = spec["process"]
    process["terminal"] = True
    env = process.setdefault("env", [])
    if not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")
