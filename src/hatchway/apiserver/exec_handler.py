"""Serving ``pods/exec``, ``pods/attach`` and the legacy ``/proxy/minions`` exec path.

The caller is already authenticated and authorised (``create`` on ``pods/exec`` or
``pods/attach``, whatever the method and transport). Here, before any byte goes to a
node: load the pod (404), validate the options (:mod:`.connect`), require an upgrade
request (400 ``Upgrade request required``), run exec admission (403 for privileged or
host-namespace pods unless cluster admin), take a session slot (429 with
``Retry-After`` beyond the per-user or total bound). Then :class:`~.proxy.ExecProxy`
dials the pod's node and either relays its refusal or switches protocols and splices;
the session's end is audited with the byte counts and duration.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.apiserver import connect
from hatchway.apiserver.admission import exec_admission, exec_forbidden_status
from hatchway.apiserver.app import Call, status_response
from hatchway.apiserver.audit import AuditLogger
from hatchway.apiserver.proxy import ExecProxy, SpliceStats, forward_headers
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.store.base import Store
from hatchway.transport.http import Response
from hatchway.types import ExecOptions

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class SessionLimits:
    """Concurrent exec/attach sessions allowed, per user and in total."""

    per_user: int = 32
    total: int = 512


class SessionSlots:
    """Counts open sessions; :meth:`acquire` raises 429 when a bound is reached."""

    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self.by_user: collections.Counter[str] = collections.Counter()
        self.total = 0

    def acquire(self, user: str) -> None:
        if self.total >= self.limits.total:
            raise StatusError(
                status.too_many_requests(
                    RETRY_AFTER_SECONDS, "too many exec sessions on this API server"
                )
            )
        if self.by_user[user] >= self.limits.per_user:
            raise StatusError(
                status.too_many_requests(
                    RETRY_AFTER_SECONDS, f"too many exec sessions for user {user!r}"
                )
            )
        self.by_user[user] += 1
        self.total += 1

    def release(self, user: str) -> None:
        self.by_user[user] -= 1
        if self.by_user[user] <= 0:
            del self.by_user[user]
        self.total -= 1


def _is_upgrade(call: Call) -> bool:
    return call.request.is_upgrade and bool(call.request.header("upgrade"))


class ExecHandler:
    """The handler for exec/attach requests (see module docstring)."""

    def __init__(
        self,
        store: Store,
        authorizer: RbacAuthorizer,
        proxy: ExecProxy,
        audit: AuditLogger | None,
        limits: SessionLimits | None = None,
    ) -> None:
        self.store = store
        self.authz = authorizer
        self.proxy = proxy
        self.audit = audit
        self.slots = SessionSlots(limits or SessionLimits())

    async def __call__(self, call: Call) -> Response:
        info = call.info
        action = info.subresource
        if call.request.method not in ("GET", "POST"):
            raise StatusError(
                status.method_not_allowed(f"pods/{action}", call.request.method.lower())
            )
        pod = await self.store.get("pods", info.namespace, info.name)
        if info.legacy_node:
            options = connect.options_from_kubelet_query(action, info.container, call.request.query)
            node_name = str((pod.get("spec") or {}).get("nodeName") or "")
            if node_name and node_name != info.legacy_node:
                raise connect.bad_request(
                    f"pod {info.name} is not on node {info.legacy_node} but on {node_name}"
                )
        else:
            options = connect.options_from_query(action, call.request.query)
        options = connect.validate(pod, options)
        if not _is_upgrade(call):
            raise connect.bad_request(connect.UPGRADE_REQUIRED)
        is_admin = await self.authz.is_cluster_admin(call.user)
        reason = exec_admission(pod, call.user, is_admin)
        if reason is not None:
            return status_response(exec_forbidden_status(pod, reason))
        node = await self._node(pod)
        self.slots.acquire(call.user.name)
        try:
            return await self._proxy(call, pod, node, options)
        except BaseException:
            self.slots.release(call.user.name)
            raise

    async def _node(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        node_name = str(pod["spec"]["nodeName"])
        try:
            return await self.store.get("nodes", "", node_name)
        except StatusError as exc:
            if exc.code != 404:
                raise
            raise StatusError(
                status.status(500, "", f'error dialing backend: node "{node_name}" not found')
            ) from None

    async def _proxy(
        self, call: Call, pod: Mapping[str, Any], node: Mapping[str, Any], options: ExecOptions
    ) -> Response:
        endpoint = connect.node_endpoint(node)
        meta = pod.get("metadata") or {}
        target = connect.kubelet_target(
            str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")), options
        )
        headers = forward_headers(call.request.headers, call.source_address)
        answer, node_stream = await self.proxy.dial(
            call.request.method, endpoint.url(target), headers
        )
        if node_stream is None:
            self.slots.release(call.user.name)
            return self.proxy.refusal(answer)

        async def on_end(stats: SpliceStats) -> None:
            self.slots.release(call.user.name)
            self._audit_end(call, options, stats)

        return self.proxy.switch(answer, node_stream, on_end)

    def _audit_end(self, call: Call, options: ExecOptions, stats: SpliceStats) -> None:
        if self.audit is None:
            return
        self.audit.log_session_end(
            user=call.user,
            info=call.info,
            container=options.container,
            command=list(options.command),
            tty=options.tty,
            stdin=options.stdin,
            duration=stats.duration,
            bytes_in=stats.bytes_to_node,
            bytes_out=stats.bytes_to_client,
            error="" if stats.reason != "idle" else "idle timeout",
            source=call.source,
            request_id=call.request_id,
        )
