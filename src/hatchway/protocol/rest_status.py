"""The Status of a failed REST response, and query encoding: shared by the asyncio REST
client (:mod:`hatchway.rest`) and the blocking exec path (:mod:`hatchway.client.blocking`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hatchway.protocol import peer_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Params = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]] | None


def status_from_response(status: int, reason: str, body: bytes) -> dict[str, Any]:
    """The Status a failed response carries, or one built from its status line."""
    try:
        decoded = peer_json.loads(body)
    except (ValueError, UnicodeDecodeError):
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        decoded.setdefault("code", status)
        return decoded
    text = body.decode("utf-8", "replace").strip() if body else reason
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": text or f"HTTP {status}",
        "reason": reason.replace(" ", "") if reason else "",
        "code": status,
    }


def encode_query(params: Params) -> str:
    if not params:
        return ""
    import urllib.parse  # not at import: the exec path (transport/httpurl.py) needs none

    return urllib.parse.urlencode(params, doseq=True)
