"""What the runtime reads from (and tidies on) the host: runc's logged errors, our
capability bounding set, the device nodes a privileged container gets, cgroups."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
from typing import Any

from hatchway.node import runtime_spec


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
    (it does when its foreground process was killed instead of seeing the exit)."""
    for path in [*glob.glob(f"/sys/fs/cgroup/*/{relative}"), f"/sys/fs/cgroup/{relative}"]:
        with contextlib.suppress(OSError):
            os.rmdir(path)
