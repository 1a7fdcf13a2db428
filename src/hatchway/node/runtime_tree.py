"""An exec's process tree: finding it in /proc and killing it without leaving zombies.

Plain ``os`` and ``/proc``, no asyncio: the node agent drives :func:`kill_step` from its
event loop, the exec helper (:mod:`runtime_execshim`) from its select loop when the agent
is gone, and a restarted agent from :func:`leftover_roots` at start-up.

The exec root is normally ``tini -s`` (see :mod:`runtime_exec`): a child subreaper inside
the container's PID namespace, so every orphan of the exec is re-parented to it (the
kernel looks for a subreaper among the ancestors *at the orphan's own PID namespace
level*; the exec helper, at the host's level, never qualifies for what runs inside, and
without tini orphans go to the container's PID 1, which need not reap). Kill order
(:func:`kill_step`, called until it reports done):

1. SIGSTOP every process of the tree but tini: nothing forks any more.
2. SIGKILL everything but tini and tini's own child, and wait until all of them are dead
   (zombie or gone): a dead process's children, zombies included, are re-parented to tini
   as it dies.
3. SIGKILL tini's child. tini sees it exit, reaps every zombie it holds in one waitpid
   loop and exits with 137 (128+N for signal N).

Without tini (containers created before it was mounted, or a command tini does not
cover) everything is SIGKILLed at once; orphans are then the container init's to reap.

The tree is the root and everything below it by parent links, plus its session (runc
makes the exec'd process a session leader; background children that were re-parented
elsewhere keep the session). Two guards keep the kill on the container: a process must
have started no earlier than the root (a recycled PID points at a newer process) and be in
the root's PID namespace, and also its mount namespace where the PID namespace is the
host's (``hostPID``).

The kernel's link: each exec runs in a cgroup of its own (:func:`make_exec_cgroup`,
``exec-<id>`` below the container's cgroup, in the v1 ``pids`` hierarchy or the v2 unified
one; ``runc exec --cgroup``). Everything it starts stays there, whatever re-parenting or
``setsid`` did, so the tree is also every pid in its ``cgroup.procs`` (host pids, read
from the host; the container cannot leave its cgroup namespace's root nor see ours). Where
tini is gone, everything in the cgroup is SIGKILLed until ``cgroup.procs`` is empty; the
empty cgroup is then removed (:func:`remove_exec_cgroup`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

#: Where every container created since this node mounts ``tini-static`` read-only (see
#: :func:`hatchway.node.runtime_spec.exec_init_mount`): on /dev, the container's own tmpfs,
#: so nothing is added to the image's root file system.
EXEC_INIT_PATH = "/dev/hatchway-init"
#: Steps of :func:`kill_step` tini gets to reap and exit before it is SIGKILLed too (it
#: may itself have been stopped from inside the container).
TINI_PATIENCE = 200


@dataclass(frozen=True)
class Root:
    """An exec root: host pid, start time (clock ticks), namespace inodes, tini or not."""

    pid: int
    since: int
    pid_ns: int
    mnt_ns: int
    tini: bool = False

    @classmethod
    def of(cls, pid: int, *, tini: bool = False) -> Root | None:
        info = stat(pid)
        if info is None:
            return None
        pid_ns, mnt_ns = namespaces(pid)
        return cls(pid, info[3], pid_ns, mnt_ns, tini)


def stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session, start time) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def namespaces(pid: int) -> tuple[int, int]:
    """Inodes of the process's PID and mount namespaces (0 when unreadable)."""
    found = []
    for kind in ("pid", "mnt"):
        try:
            found.append(os.stat(f"/proc/{pid}/ns/{kind}").st_ino)
        except OSError:
            found.append(0)
    return found[0], found[1]


_HOST_PID_NS = namespaces(os.getpid())[0]


def _same_container(pid: int, root: Root) -> bool:
    if not root.pid_ns:
        return True  # namespaces unknown (the root was gone when looked up): start time only
    pid_ns, mnt_ns = namespaces(pid)
    if pid_ns != root.pid_ns:
        return False
    return root.pid_ns != _HOST_PID_NS or mnt_ns == root.mnt_ns


def process_tree(root: int, since: int = 0, *, guard: Root | None = None) -> list[int]:
    """``root`` and every live descendant, by parent links and by session (children that
    were re-parented to the container's init keep the session runc gave ``root``).

    ``since``: ``root``'s start time (clock ticks after boot, /proc/PID/stat field 22);
    processes started earlier are left alone, and nothing is found once ``root``'s PID
    names a process started at another time, so a recycled PID never points the kill at
    someone else's processes. ``guard``: also only processes in that root's namespaces.
    """
    procs: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = stat(int(entry))
        if info is None:
            continue
        if int(entry) == root and since and info[3] != since:
            return []  # the root's PID was recycled: its session and children are not ours
        if info[0] != "Z" and info[3] >= since:
            procs[int(entry)] = (info[1], info[2])  # ppid, session
    found = {root} if root in procs else set()
    found |= {p for p, (_, sid) in procs.items() if sid == root}
    changed = True
    while changed:
        extra = {p for p, (ppid, _) in procs.items() if ppid in found and p not in found}
        found |= extra
        changed = bool(extra)
    if guard is not None:
        found = {p for p in found if _same_container(p, guard)}
    return sorted(found)


def first_child(pid: int) -> int | None:
    """The oldest child of ``pid``: the kernel appends both forked and re-parented
    children to the list /proc/PID/task/PID/children shows, so tini's own child (forked
    before any orphan can exist) comes first."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_step(root: Root | None, attempt: int = 0, cgroup: str | None = None) -> bool:
    """One round of the kill order in the module docstring; True once nothing of the
    tree is left alive. Call again (a few ms later) until it returns True. ``cgroup``: the
    exec's own cgroup directory, whose processes are part of the tree; ``root`` None:
    only those (all SIGKILLed)."""
    found = set(process_tree(root.pid, root.since, guard=root)) if root is not None else set()
    found |= set(cgroup_procs(cgroup)) if cgroup else set()
    victims = sorted(found)
    if not victims:
        return True
    if root is None:
        _signal(victims, signal.SIGKILL)
        return False
    if not root.tini or root.pid not in victims or attempt >= TINI_PATIENCE:
        _signal(victims, signal.SIGKILL)
        return False
    child = first_child(root.pid)
    rest = [p for p in victims if p != root.pid]
    _signal(rest, signal.SIGSTOP)
    others = [p for p in rest if p != child]
    if others:
        _signal(others, signal.SIGKILL)
    elif child is not None and child in victims:
        _signal([child], signal.SIGKILL)
    # else: only tini is left; it exits once it has reaped its child.
    return False


def leftover_roots(init_pid: int) -> list[Root]:
    """Exec roots left in the container whose init is ``init_pid`` by an earlier node
    agent: processes in the init's PID and mount namespaces, other than the init, whose
    parent is outside them (runc started them from the host; everything a container
    starts itself descends from its init or from an exec root). Where the PID namespace
    is the host's (``hostPID``) nothing is found this way (orphans are re-parented to host
    processes there): the runtime's exec records find those."""
    pid_ns, mnt_ns = namespaces(init_pid)
    if not pid_ns or not mnt_ns or pid_ns == _HOST_PID_NS:
        return []  # hostPID: orphans go to host processes, so the parent proves nothing
    roots = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init_pid:
            continue
        pid = int(entry)
        if namespaces(pid) != (pid_ns, mnt_ns):
            continue
        info = stat(pid)
        if info is None or info[0] == "Z":
            continue
        if namespaces(info[1]) == (pid_ns, mnt_ns):
            continue  # started inside the container
        root = Root.of(pid, tini=_is_tini(pid))
        if root is not None:
            roots.append(root)
    return roots


def _is_tini(pid: int) -> bool:
    """Whether the process is the exec init this node mounts (see runtime_spec)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return argv0 == EXEC_INIT_PATH.encode()


# -- the exec's own cgroup ---------------------------------------------------------------

CGROUP_ROOT = "/sys/fs/cgroup"
#: Prefix of an exec's cgroup below the container's (the sweep looks for it).
EXEC_CGROUP_PREFIX = "exec-"


@dataclass(frozen=True)
class ExecCgroup:
    """An exec's cgroup: its directory on the host and ``runc exec --cgroup``'s value."""

    path: str
    arg: str


def container_cgroup(init_pid: int) -> tuple[str, str] | None:
    """(host directory, runc controller prefix) of the cgroup an exec's cgroup goes below
    for the container whose init is ``init_pid``: v1's ``pids`` hierarchy (prefix
    ``pids:``) or, on a pure v2 host, the unified one (no prefix). None if neither."""
    try:
        with open(f"/proc/{init_pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not unified and "pids" in controllers.split(","):
            base, prefix = os.path.join(CGROUP_ROOT, "pids"), "pids:"
        elif unified and controllers == "":
            base, prefix = CGROUP_ROOT, ""
        else:
            continue
        if path in ("", "/") or ".." in path.split("/"):
            return None  # the container is in the root cgroup: nothing of its own
        full = os.path.join(base, path.lstrip("/"))
        return (full, prefix) if os.path.isdir(full) else None
    return None


def make_exec_cgroup(init_pid: int, name: str) -> ExecCgroup:
    """Create the cgroup ``exec-<name>`` below the container's (see
    :func:`container_cgroup`). Raises OSError where it cannot be made."""
    where = container_cgroup(init_pid)
    if where is None:
        raise FileNotFoundError(f"no pids or unified cgroup of container init {init_pid}")
    base, prefix = where
    sub = EXEC_CGROUP_PREFIX + name
    os.mkdir(os.path.join(base, sub), 0o755)
    return ExecCgroup(os.path.join(base, sub), prefix + sub)


def exec_cgroups(init_pid: int) -> list[str]:
    """The exec cgroups (directories) below the container's."""
    where = container_cgroup(init_pid)
    if where is None:
        return []
    try:
        names = os.listdir(where[0])
    except OSError:
        return []
    return [
        os.path.join(where[0], n)
        for n in sorted(names)
        if n.startswith(EXEC_CGROUP_PREFIX) and os.path.isdir(os.path.join(where[0], n))
    ]


def cgroup_procs(path: str) -> list[int]:
    """Live (not zombie) processes in the cgroup ``path``; [] if it is gone."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []
    return [p for p in pids if (info := stat(p)) is not None and info[0] != "Z"]


def remove_exec_cgroup(path: str) -> bool:
    """Remove the (empty) cgroup; True if it is gone."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
