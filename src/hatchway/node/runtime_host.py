"""What the runtime reads from (and tidies on) the host: runc's logged errors, our
capability bounding set, the device nodes a privileged container gets, cgroups."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import resource
import stat
from collections.abc import Mapping
from typing import Any

from hatchway.node import runtime_spec, seccomp


def runc_error(path: str) -> str:
    """The last error runc logged (e.g. ``exec: "x": executable file not found``)."""
    message = ""
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg") or "")
    return message


def host_capabilities() -> list[str]:
    """The capabilities in our bounding set (what a privileged container can get)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return runtime_spec.caps_from_mask(int(line.split()[1], 16))
    return list(runtime_spec.ALL_CAPS)


def host_nofile_limit() -> int:
    """The node agent's hard RLIMIT_NOFILE: what runc can give a container."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return runtime_spec.NOFILE_LIMIT if hard == resource.RLIM_INFINITY else hard


def host_devices() -> list[dict[str, Any]]:
    """The host's /dev device nodes as OCI linux.devices entries (privileged containers)."""
    found = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
            if not kind or path in ("/dev/console", "/dev/ptmx"):
                continue
            found.append(
                {
                    "path": path,
                    "type": kind,
                    "major": os.major(st.st_rdev),
                    "minor": os.minor(st.st_rdev),
                    "fileMode": stat.S_IMODE(st.st_mode),
                    "uid": st.st_uid,
                    "gid": st.st_gid,
                }
            )
    return found


def remove_cgroups(relative: str) -> None:
    """Remove the container's (empty) cgroup directories, v1 and v2, if runc left them
    (it does when its foreground process was killed instead of seeing the exit), and the
    (empty) ``exec-*`` cgroups of its execs first: a cgroup with children cannot go."""
    for path in [*glob.glob(f"/sys/fs/cgroup/*/{relative}"), f"/sys/fs/cgroup/{relative}"]:
        for child in glob.glob(os.path.join(glob.escape(path), "exec-*")):
            with contextlib.suppress(OSError):
                os.rmdir(child)
        with contextlib.suppress(OSError):
            os.rmdir(path)


MAX_PROFILE_BYTES = 1 << 20  # a profile is a few KiB; a bigger file is a mistake


def load_localhost_profile(
    seccomp_dir: str, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The Localhost seccomp profile ``container`` asks for, from ``seccomp_dir`` (the
    node's profile root); None when it asks for another type or is privileged. Raises
    SpecError (the pod's CreateContainerConfigError) when it cannot be loaded."""
    if (container.get("securityContext") or {}).get("privileged"):
        return None
    try:
        kind, name = seccomp.profile_type(pod, container)
    except seccomp.SeccompProfileError as e:
        raise runtime_spec.SpecError(f"failed to generate seccomp security profile: {e}") from None
    if kind != seccomp.LOCALHOST:
        return None
    try:
        return _read_profile(seccomp_dir, name)
    except (OSError, ValueError, seccomp.SeccompProfileError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise runtime_spec.SpecError(
            f'failed to generate seccomp security profile: cannot load "{name}": {reason}'
        ) from None


def _read_profile(seccomp_dir: str, name: str) -> dict[str, Any]:
    base = os.path.realpath(seccomp_dir)
    # realpath: a symlink in the profile root must not lead out of it either.
    path = os.path.realpath(os.path.join(base, seccomp.localhost_relpath(name)))
    if os.path.commonpath([base, path]) != base:
        raise seccomp.SeccompProfileError("the path leaves the node's seccomp profile root")
    with open(path, "rb") as f:
        data = f.read(MAX_PROFILE_BYTES + 1)
    if len(data) > MAX_PROFILE_BYTES:
        raise seccomp.SeccompProfileError("the profile file is too large")
    return seccomp.localhost_profile(json.loads(data))
