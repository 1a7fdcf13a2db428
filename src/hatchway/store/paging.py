"""Paged lists: the ``continue`` token and the answers kube-apiserver gives around it.

The token is kube-apiserver's (``k8s.io/apiserver/pkg/storage/continue.go``):
unpadded URL-safe base64 of ``{"v": "meta.k8s.io/v1", "rv": R, "start": S}``, where R
is the revision every page of the list is read at and S the key to start from, relative
to the list's key prefix (the last key returned plus ``"\\0"``). R = -1 means "continue
at the latest revision": what a 410 for a too-old token hands back so a client may finish
an inconsistent list (protocol.md 10.5).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hatchway.api.status import StatusError, bad_request, expired, status

#: The most objects one page holds, whatever ``limit`` asks (kube-apiserver's etcd3 store
#: grows a filtered page to at most this many keys per read, too).
MAX_LIMIT = 10000

#: Token rv meaning "at the latest revision" (never a real revision: those are > 0).
LATEST = -1

Match = Callable[[dict[str, Any]], bool]

CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter."
)
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


@dataclass(frozen=True)
class ListPage:
    """One page: ``items`` in key order, the list's ``resource_version``, ``continue_``
    for the next page (``""`` after the last) and ``remaining`` (objects after this
    page, or None when unknown, as with a filter)."""

    items: list[dict[str, Any]]
    resource_version: str
    continue_: str = ""
    remaining: int | None = None


def clamp_limit(limit: int) -> int:
    """0 (or less) is "no limit"; anything above :data:`MAX_LIMIT` is that."""
    return MAX_LIMIT if limit <= 0 or limit > MAX_LIMIT else limit


def encode_continue(rv: int, start: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start}
    raw = json.dumps(token, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _invalid(detail: str = "") -> StatusError:
    text = "continue key is not valid" + (f": {detail}" if detail else "")
    return StatusError(bad_request(f"invalid continue token: {text}"))


def decode_continue(token: str) -> tuple[int, str]:
    """(rv, start key relative to the list prefix); 400 BadRequest for anything else.
    The start key may not climb out of the prefix (no ``.``/``..`` segments)."""
    if len(token) > 8192:
        raise _invalid("too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
        raise _invalid("server does not recognize this encoded version")
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0 or rv < LATEST:
        raise _invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start:
        raise _invalid("encoded start key empty (version meta.k8s.io/v1)")
    key = start if start.startswith("/") else "/" + start
    if not _is_clean(key):
        raise _invalid(start)
    return rv, key[1:]


def _is_clean(key: str) -> bool:
    """Go's ``path.Clean(key) == key`` for a rooted path."""
    if key == "/":
        return True
    parts = key[1:].split("/")
    return all(p not in ("", ".", "..") for p in parts)


def continue_expired(start: str) -> StatusError:
    """410 for a token whose revision is gone, with a token to go on at the latest one."""
    error = StatusError(expired(INCONSISTENT_CONTINUE))
    error.status.setdefault("metadata", {})["continue"] = encode_continue(LATEST, start)
    return error


def too_large(wanted: int, current: int) -> StatusError:
    """504 for a list at a resourceVersion the store has not reached yet."""
    details = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }
    message = f"Too large resource version: {wanted}, current: {current}"
    return StatusError(status(504, "Timeout", message, details))


def parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise StatusError(bad_request(f"invalid resource version: {text!r}"))
    return value
