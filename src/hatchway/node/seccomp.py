"""The RuntimeDefault seccomp profile, as an OCI ``linux.seccomp`` object.

Pure data and a builder, no I/O. The allow-list follows the documented default profile of
Docker and containerd ("Seccomp security profiles for Docker": an allow-list, everything
else fails with EPERM): the table below is ours, grouped by what the calls do, with the
same conditional rules:

* calls that only a capability makes meaningful (``mount``/``unshare``/``setns`` need
  CAP_SYS_ADMIN, ``ptrace`` CAP_SYS_PTRACE, module loading CAP_SYS_MODULE, ...) are allowed
  only when the container's effective set holds that capability;
* without CAP_SYS_ADMIN, ``clone`` is allowed only with no namespace flag in its flags
  argument, and ``clone3`` (whose flags sit in a struct seccomp cannot read) fails with
  ENOSYS so that libcs fall back to ``clone``;
* ``personality`` only with the values programs use (Linux, UNAME26, ADDR_NO_RANDOMIZE,
  query); ``socket`` with any family but AF_VSOCK.

One deliberate difference: the Docker profile allows ``ptrace`` and ``process_vm_*``
to anyone on kernels from 4.8 (where ptrace no longer bypasses seccomp); we keep them
behind CAP_SYS_PTRACE, as before 4.8, because reading another process's memory is the
first step of most container escapes and tracers can ask for the capability.

Names libseccomp does not know on this host are ignored by runc (it logs them and goes
on), so listing a newer syscall is harmless; tests/node/test_seccomp.py checks this
against the installed runc.

Profile *selection* (``securityContext.seccompProfile``) is :func:`profile_type`; the
Localhost file is read by the runtime (see ``runtime_host.load_localhost_profile``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from hatchway.errors import HatchwayError

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
# CLONE_NEWPID | CLONE_NEWNET: a clone() with any of these creates namespaces.
CLONE_NAMESPACE_FLAGS = 0x7E020000

# personality(2) values glibc, util-linux's setarch and Go runtimes ask for.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

#: ``platform.machine()`` → the native architecture and the compat ones it runs.
ARCHITECTURES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}

_ARCH_CALLS: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": (
        "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
        "cacheflush", "set_tls",
    ),
}  # fmt: skip

_GROUPS: dict[str, tuple[str, ...]] = {
    "process": (
        "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid",
        "waitpid", "kill", "tkill", "tgkill", "getpid", "getppid", "gettid", "getpgid",
        "getpgrp", "setpgid", "getsid", "setsid", "prctl", "pidfd_open",
        "pidfd_send_signal", "set_tid_address", "set_robust_list", "get_robust_list",
        "rseq", "restart_syscall", "seccomp", "get_thread_area", "set_thread_area",
        "process_mrelease", "landlock_add_rule", "landlock_create_ruleset",
        "landlock_restrict_self",
    ),
    "identity": (
        "capget", "capset", "getuid", "getuid32", "geteuid", "geteuid32", "getgid",
        "getgid32", "getegid", "getegid32", "getresuid", "getresuid32", "getresgid",
        "getresgid32", "getgroups", "getgroups32", "setuid", "setuid32", "setgid",
        "setgid32", "setreuid", "setreuid32", "setregid", "setregid32", "setresuid",
        "setresuid32", "setresgid", "setresgid32", "setgroups", "setgroups32", "setfsuid",
        "setfsuid32", "setfsgid", "setfsgid32",
    ),
    "signals": (
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
        "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn", "signalfd",
        "signalfd4", "pause",
    ),
    "scheduling": (
        "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
        "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_yield", "getpriority", "setpriority",
        "ioprio_get", "ioprio_set", "getcpu", "getrlimit", "setrlimit", "ugetrlimit",
        "prlimit64", "getrusage", "times", "sysinfo", "uname", "umask",
    ),
    "time": (
        "clock_adjtime", "clock_adjtime64", "adjtimex", "clock_getres",
        "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
        "clock_nanosleep_time64", "nanosleep", "gettimeofday", "time", "alarm",
        "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
        "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
        "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
        "timerfd_settime64",
    ),
    "memory": (
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore",
        "msync", "mlock", "mlock2", "mlockall", "munlock", "munlockall", "membarrier",
        "memfd_create", "memfd_secret", "remap_file_pages", "pkey_alloc", "pkey_free",
        "pkey_mprotect",
    ),
    "files": (
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv",
        "pread64", "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev",
        "pwritev2", "lseek", "_llseek", "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock",
        "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "truncate",
        "truncate64", "ftruncate", "ftruncate64", "fallocate", "fadvise64",
        "fadvise64_64", "readahead", "copy_file_range", "sendfile", "sendfile64",
        "splice", "tee", "vmsplice", "ioctl", "name_to_handle_at",
    ),
    "paths": (
        "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "chmod",
        "fchmod", "fchmodat", "chown", "chown32", "fchown", "fchown32", "fchownat",
        "lchown", "lchown32", "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64",
        "fstatat64", "newfstatat", "statx", "statfs", "statfs64", "fstatfs", "fstatfs64",
        "getdents", "getdents64", "mkdir", "mkdirat", "mknod", "mknodat", "rmdir", "link",
        "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat",
        "renameat2", "readlink", "readlinkat", "utime", "utimes", "utimensat",
        "utimensat_time64", "futimesat",
    ),
    "xattrs": (
        "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
        "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
        "fremovexattr",
    ),
    "events": (
        "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6",
        "pselect6_time64", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
        "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd",
        "eventfd2", "inotify_init", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch", "fanotify_mark", "futex", "futex_time64", "futex_waitv",
        "pipe", "pipe2", "getrandom",
    ),
    "async_io": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
        "io_pgetevents", "io_pgetevents_time64", "io_uring_setup", "io_uring_enter",
        "io_uring_register",
    ),
    "ipc": (
        "ipc", "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl", "semop",
        "semtimedop", "semtimedop_time64", "shmget", "shmctl", "shmat", "shmdt",
        "mq_open", "mq_unlink", "mq_getsetattr", "mq_notify", "mq_timedsend",
        "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64",
    ),
    "network": (
        "socketpair", "socketcall", "bind", "connect", "listen", "accept", "accept4",
        "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown", "send",
        "sendto", "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg",
        "recvmmsg_time64",
    ),
}  # fmt: skip

#: Everything a container may call whatever its capabilities.
ALLOWED: tuple[str, ...] = tuple(name for group in _GROUPS.values() for name in group)

#: Calls allowed only when the container's effective set holds the capability.
CAPABILITY_CALLS: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
        "fspick", "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
        "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname",
        "setns", "syslog", "umount", "umount2", "unshare",
    ),
    "CAP_SYS_PTRACE": (
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
        "pidfd_getfd",
    ),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}  # fmt: skip

RUNTIME_DEFAULT = "RuntimeDefault"
UNCONFINED = "Unconfined"
LOCALHOST = "Localhost"


class SeccompProfileError(HatchwayError):
    """A seccompProfile that cannot be applied (unknown type, bad Localhost path)."""


def default_profile(caps: Iterable[str], arch: str = "x86_64") -> dict[str, Any]:
    """The RuntimeDefault profile for a container whose effective capabilities are ``caps``,
    on the machine ``arch`` (``platform.machine()``)."""
    if arch not in ARCHITECTURES:
        raise SeccompProfileError(f"no default seccomp profile for architecture {arch!r}")
    held = set(caps)
    names = list(ALLOWED) + list(_ARCH_CALLS[arch])
    for cap, calls in CAPABILITY_CALLS.items():
        if cap in held:
            names += calls
    syscalls: list[dict[str, Any]] = [_allow(_unique(names))]
    syscalls.append(_allow(["socket"], [_arg(0, AF_VSOCK, "SCMP_CMP_NE")]))
    syscalls += [_allow(["personality"], [_arg(0, v, "SCMP_CMP_EQ")]) for v in PERSONALITIES]
    if "CAP_SYS_ADMIN" not in held:
        no_namespaces = _arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)
        syscalls.append(_allow(["clone"], [no_namespaces]))
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES[arch]),
        "syscalls": syscalls,
    }


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _allow(names: list[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def _arg(index: int, value: int, op: str, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def profile_type(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[str, str]:
    """(type, localhostProfile) of the container's seccompProfile, the container's over the
    pod's; unset means RuntimeDefault (the issue's "hardening by default")."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    profile = (container.get("securityContext") or {}).get("seccompProfile")
    profile = profile or pod_sc.get("seccompProfile") or {}
    kind = str(profile.get("type") or RUNTIME_DEFAULT)
    if kind not in (RUNTIME_DEFAULT, UNCONFINED, LOCALHOST):
        raise SeccompProfileError(f'unsupported seccomp profile type "{kind}"')
    name = str(profile.get("localhostProfile") or "")
    if kind == LOCALHOST:
        localhost_relpath(name)
    return kind, name


def container_profile(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    caps: Iterable[str],
    *,
    arch: str,
    localhost: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The container's ``linux.seccomp``: None for privileged and Unconfined containers,
    ``localhost`` (the loaded Localhost profile) when that is asked for, else the default."""
    if (container.get("securityContext") or {}).get("privileged"):
        return None
    kind, name = profile_type(pod, container)
    if kind == UNCONFINED:
        return None
    if kind == RUNTIME_DEFAULT:
        return default_profile(caps, arch)
    if localhost is None:
        raise SeccompProfileError(f'localhost profile "{name}" was not loaded')
    return dict(localhost)


def localhost_relpath(name: str) -> str:
    """``localhostProfile`` as a path relative to the node's seccomp directory; refuses
    what could leave it (absolute, ``..``) since the pod author chooses the string."""
    if not name:
        raise SeccompProfileError("localhostProfile must be set when seccomp type is Localhost")
    clean = posixpath.normpath(name)
    if name.startswith("/") or clean == ".." or clean.startswith("../") or "\0" in name:
        raise SeccompProfileError(f'localhostProfile "{name}" must be a relative path inside '
                                  "the node's seccomp profile root")  # fmt: skip
    return clean


# The OCI fields of a profile file; Docker-format extras (archMap, includes, comments)
# are dropped as containerd drops them, and so is a notify listener, which would make
# runc connect to a socket on the node.
_PROFILE_FIELDS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls")
_RULE_FIELDS = ("names", "action", "errnoRet", "args")


def localhost_profile(doc: Any) -> dict[str, Any]:
    """A Localhost profile file's JSON as ``linux.seccomp``, checked for shape."""
    if not isinstance(doc, dict) or not isinstance(doc.get("defaultAction"), str):
        raise SeccompProfileError("the profile is not a seccomp profile (no defaultAction)")
    rules = doc.get("syscalls") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise SeccompProfileError("the profile's syscalls must be a list of rules")
    profile = {k: doc[k] for k in _PROFILE_FIELDS if k in doc}
    profile["syscalls"] = [_rule(r) for r in rules]
    return profile


def _rule(raw: dict[str, Any]) -> dict[str, Any]:
    rule = {k: raw[k] for k in _RULE_FIELDS if k in raw}
    if "names" not in rule and isinstance(raw.get("name"), str):
        rule["names"] = [raw["name"]]  # the old Docker form: one name per rule
    if not isinstance(rule.get("names"), list) or not isinstance(rule.get("action"), str):
        raise SeccompProfileError("each syscalls rule needs names and an action")
    return rule
