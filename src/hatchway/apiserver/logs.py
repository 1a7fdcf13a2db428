"""``GET pods/NAME/log``: proxied to the node's ``/containerLogs/{ns}/{pod}/{container}``
with ``podUID={uid}`` (the kubelet's log path has no uid segment): the node answers from
that pod only, never from another that reuses the name (issue 9).

The container defaults as for exec (one container, else 400 naming the choices); a pod
not yet bound to a node has no logs (200, empty, as Kubernetes answers). The query
parameters the kubelet understands are passed on (``follow``, ``previous``,
``tailLines``, ``sinceSeconds``, ``sinceTime``, ``timestamps``, ``limitBytes``); with
``follow`` the body streams until the node or the client ends it. A node error becomes
a Status with the node's code and text. Redirects are never followed.

Follow streams hold a node connection for as long as the client likes, so they are
bounded per user (the authenticated one, not whom it impersonates) and in total
(:class:`~.exec_handler.SessionSlots`, 429 with ``Retry-After`` beyond); the slot goes
back when the stream ends, whichever side ends it, or when it is never streamed at all.
"""

from __future__ import annotations

import contextlib
import http as http_status
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.apiserver import connect
from hatchway.apiserver.app import Call, json_response
from hatchway.apiserver.exec_handler import SessionLimits, SessionSlots, Slot
from hatchway.apiserver.request_info import query_bool
from hatchway.apiserver.slots import SlotLedger
from hatchway.errors import HatchwayError
from hatchway.protocol import peer_json
from hatchway.store.base import Store
from hatchway.transport import http
from hatchway.transport.http import Response

PASSED = ("tailLines", "sinceSeconds", "sinceTime", "limitBytes")
BOOLS = ("follow", "previous", "timestamps")
MAX_ERROR_BODY = 64 * 1024


def _reason(code: int) -> str:
    try:
        return http_status.HTTPStatus(code).phrase.replace(" ", "")
    except ValueError:
        return ""


def log_target(
    namespace: str, pod: str, uid: str, container: str, query: dict[str, list[str]]
) -> str:
    quote = urllib.parse.quote
    segments = (quote(part, safe="") for part in (namespace, pod, container))
    path = "/containerLogs/" + "/".join(segments)
    pairs: list[tuple[str, str]] = [("podUID", uid)]
    for key in BOOLS:
        if query_bool(query.get(key)):
            pairs.append((key, "true"))
    for key in PASSED:
        if query.get(key):
            pairs.append((key, query[key][0]))
    pairs.sort()
    return path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")


class LogHandler:
    def __init__(
        self,
        store: Store,
        ssl_context: ssl.SSLContext,
        timeout: float = 30.0,
        limits: SessionLimits | None = None,
        ledger: SlotLedger | None = None,
    ) -> None:
        self.store = store
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.follows = SessionSlots(limits or SessionLimits(), "follow-log streams", ledger)

    async def __call__(self, call: Call) -> Response:
        info = call.info
        if call.request.method not in ("GET", "HEAD"):
            raise StatusError(status.method_not_allowed("pods/log", call.request.method.lower()))
        pod = await self.store.get("pods", info.namespace, info.name)
        container = connect.choose_container(pod, (call.request.query.get("container") or [""])[0])
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        if not node_name:
            return Response(200, [("Content-Type", "text/plain")], b"")
        node = await self.store.get("nodes", "", node_name)
        endpoint = connect.node_address(node)
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        target = log_target(info.namespace, info.name, uid, container, call.request.query)
        url = endpoint.url(target)
        slot = None
        if query_bool(call.request.query.get("follow")):
            slot = await self.follows.acquire(call.caller.name)
        try:
            return await self._stream(url, slot)
        except BaseException:
            if slot is not None:
                slot.release()
            raise

    async def _stream(self, url: str, slot: Slot | None) -> Response:
        try:
            upstream = await http.stream("GET", url, ssl=self.ssl_context, timeout=self.timeout)
        except (OSError, TimeoutError, HatchwayError) as exc:
            raise StatusError(status.status(500, "", f"error dialing backend: {exc}")) from None
        if upstream.status != 200:
            if slot is not None:
                slot.release()
            return await self._error(upstream)
        content_type = upstream.header("content-type") or "text/plain"
        return Response(200, [("Content-Type", content_type)], body_iter=_Relay(upstream, slot))

    async def _error(self, upstream: Any) -> Response:
        try:
            body = await upstream.read(MAX_ERROR_BODY)
        except HatchwayError:
            body = b""
        finally:
            await upstream.aclose()
        try:
            decoded = peer_json.loads(body)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            return json_response(decoded, upstream.status)
        code = upstream.status if upstream.status >= 400 else 500
        text = body.decode("utf-8", "replace").strip() or f"node answered {upstream.status}"
        return json_response(status.status(code, _reason(code), text), code)


class _Relay:
    """The node's log body for the client. ``aclose`` (the HTTP server calls it on every
    path, streamed or not) closes the node's stream and gives the slot back, once."""

    def __init__(self, upstream: Any, slot: Slot | None) -> None:
        self._upstream = upstream
        self._chunks: AsyncIterator[bytes] = upstream.iter_body()
        self._slot = slot

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._slot is not None:
            self._slot.release()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        await self._upstream.aclose()
