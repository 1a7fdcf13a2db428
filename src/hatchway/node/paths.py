"""Every host path the node creates or removes is built here, inside its data directory.

Pod uids, namespaces, names and volume names come from the API server, and so at one
remove from a client (issue 9: ``metadata.uid: /`` made the node ``rmtree`` the host's
root). The API server validates them; the node checks again before any ``mkdir``,
``rmtree`` or ``unlink``, so a bug or an old stored object upstream cannot point it out
of its own directory:

* :func:`check_uid` — a pod uid must be a canonical lowercase UUID (what the API server
  hands out), else :class:`UnsafePathError`;
* :func:`inside` — ``root`` joined with single path segments (no ``/``, NUL, ``.`` or
  ``..``, nothing empty), resolved through symlinks, must still be under ``root``.
"""

from __future__ import annotations

import os
import re

from hatchway.errors import HatchwayError

_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UnsafePathError(HatchwayError):
    """A path the node was asked to build would leave its data directory."""


def is_uid(value: object) -> bool:
    """Whether ``value`` is a canonical pod uid (``8-4-4-4-12`` lowercase hex)."""
    return isinstance(value, str) and _UID.fullmatch(value) is not None


def check_uid(value: object) -> str:
    """``value`` if it is a canonical pod uid, else :class:`UnsafePathError`."""
    if not is_uid(value):
        raise UnsafePathError(f"invalid pod uid {value!r}: not a canonical UUID")
    return str(value)


def _check_segment(part: object) -> str:
    if not isinstance(part, str) or not part:
        raise UnsafePathError(f"invalid path segment {part!r}")
    if part in (".", "..") or "/" in part or "\x00" in part:
        raise UnsafePathError(f"invalid path segment {part!r}")
    return part


def inside(root: str, *parts: str) -> str:
    """``root/part/...`` after checking each part is one plain segment and that the
    result, with symlinks resolved, stays under ``root`` (which must exist)."""
    base = os.path.realpath(root)
    path = os.path.join(base, *(_check_segment(p) for p in parts))
    resolved = os.path.realpath(path)
    if resolved != base and not resolved.startswith(base + os.sep):
        raise UnsafePathError(f"{path!r} leads out of {base!r} (to {resolved!r})")
    if parts and resolved == base:
        raise UnsafePathError(f"{path!r} is {base!r} itself")
    return path
