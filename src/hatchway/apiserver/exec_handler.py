"""Serving ``pods/exec``, ``pods/attach`` and the legacy ``/proxy/minions`` exec path.

The caller is already authenticated and authorised (``create`` on ``pods/exec`` or
``pods/attach``, whatever the method and transport). Here, before any byte goes to a
node: load the pod (404), validate the options (:mod:`.connect`), require an upgrade
request (400 ``Upgrade request required``), run exec admission (403 for privileged or
host-namespace pods, or pods violating the namespace's Pod Security enforce level,
unless cluster admin; raised as AdmissionDeniedError so that it is audited as a
denial), take a session slot (429 with ``Retry-After`` beyond the per-user
or total bound; "per user" is per authenticated caller, so impersonating many users
buys no more slots). Then :class:`~.proxy.ExecProxy` dials the pod's node, sending the
request id as ``Audit-ID``, and either relays its refusal or switches protocols and
splices. The node's answer is audited at once with the command (``session_start``);
when the splice ends the node is asked for the exit code (:mod:`.outcome`) and the
end is audited with it, the byte counts and the duration (``session_end``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.api import events, status
from hatchway.api.status import AdmissionDeniedError, StatusError
from hatchway.apiserver import connect
from hatchway.apiserver.admission import exec_admission, exec_forbidden_status
from hatchway.apiserver.app import Call
from hatchway.apiserver.audit import AuditLogger
from hatchway.apiserver.connect import NodeAddress
from hatchway.apiserver.events import EventStore
from hatchway.apiserver.outcome import OutcomeClient
from hatchway.apiserver.pod_security import enforce_level
from hatchway.apiserver.proxy import ExecProxy, SpliceStats, forward_headers
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.apiserver.slots import SlotLedger
from hatchway.protocol import exec_options
from hatchway.session.heap import HeapTrimmer
from hatchway.store.base import Store
from hatchway.transport import phases
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.http import ClientResponse, Response
from hatchway.types import ExecOptions

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class SessionLimits:
    """Concurrent exec/attach sessions allowed, per user and in total."""

    per_user: int = 32
    total: int = 512


class Slot:
    """One taken place of :class:`SessionSlots`; :meth:`release` gives it back, once,
    whichever of the paths that may end a session calls it first."""

    def __init__(self, slots: SessionSlots, user: str) -> None:
        self._slots = slots
        self.user = user
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots.release(self.user)


class SessionSlots:
    """Counts open sessions (or follow-log streams); :meth:`acquire` raises 429 when a
    bound is reached. ``what`` names them in the message. With a ``ledger`` the bounds
    hold across every API server sharing the store (:mod:`.slots`); ``by_user`` and
    ``total`` are this server's share."""

    def __init__(
        self, limits: SessionLimits, what: str = "exec sessions", ledger: SlotLedger | None = None
    ) -> None:
        self.limits = limits
        self.what = what
        self.ledger = ledger
        self.by_user: collections.Counter[str] = collections.Counter()
        self.total = 0

    async def acquire(self, user: str) -> Slot:
        self._check(self.total, self.by_user[user], user, "on this API server")
        self.by_user[user] += 1
        self.total += 1
        if self.ledger is not None:
            try:
                of_user, total = await self.ledger.claim(self.what, self.by_user, user)
                self._check(
                    self.total - 1 + total, self.by_user[user] - 1 + of_user, user, "in the cluster"
                )
            except BaseException:
                self.release(user)
                raise
        return Slot(self, user)

    def _check(self, total: int, of_user: int, user: str, where: str) -> None:
        """429 if one more slot would pass a bound, given the slots held without it."""
        if total >= self.limits.total:
            raise StatusError(
                status.too_many_requests(RETRY_AFTER_SECONDS, f"too many {self.what} {where}")
            )
        if of_user >= self.limits.per_user:
            raise StatusError(
                status.too_many_requests(
                    RETRY_AFTER_SECONDS, f"too many {self.what} for user {user!r}"
                )
            )

    def release(self, user: str) -> None:
        self.by_user[user] -= 1
        if self.by_user[user] <= 0:
            del self.by_user[user]
        self.total -= 1
        if self.ledger is not None:
            self.ledger.released(self.what, self.by_user)


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
        outcomes: OutcomeClient | None = None,
        trimmer: HeapTrimmer | None = None,
        events: EventStore | None = None,
        ledger: SlotLedger | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.authz = authorizer
        self.proxy = proxy
        self.audit = audit
        self.slots = SessionSlots(limits or SessionLimits(), ledger=ledger)
        self.outcomes = (
            outcomes
            if outcomes is not None
            else OutcomeClient(proxy.ssl_context, http_client=proxy.http_client)
        )
        #: Gives the memory of ended sessions back to the system (:mod:`hatchway.session.heap`).
        self.trimmer = trimmer if trimmer is not None else HeapTrimmer()

    async def __call__(self, call: Call) -> Response:
        info = call.info
        action = info.subresource
        if call.request.method not in ("GET", "POST"):
            raise StatusError(
                status.method_not_allowed(f"pods/{action}", call.request.method.lower())
            )
        timed = phases.of(call.request.context)
        pod = await self.store.get("pods", info.namespace, info.name)
        timed.mark("pod get")
        if info.legacy_node:
            options = exec_options.decode_legacy(call.request.query, action, info.container)
            node_name = str((pod.get("spec") or {}).get("nodeName") or "")
            if node_name and node_name != info.legacy_node:
                raise connect.bad_request(
                    f"pod {info.name} is not on node {info.legacy_node} but on {node_name}"
                )
        else:
            spelling = exec_options.APISERVER
            options = exec_options.decode(call.request.query, action, spelling=spelling)
        options = connect.validate(pod, options)
        if not _is_upgrade(call):
            raise connect.bad_request(connect.UPGRADE_REQUIRED)
        meta = pod.get("metadata") or {}
        target = connect.kubelet_target(
            str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")), options
        )
        return await self.connect(
            call, pod, target, Session(call, options, str(meta.get("uid") or ""))
        )

    async def connect(
        self,
        call: Call,
        pod: Mapping[str, Any],
        target: str,
        session: Session,
        dial: Dial | None = None,
    ) -> Response:
        """What every connect subresource shares once its request is validated: exec
        admission (the rule of exec for port-forward too), the pod's node, a session
        slot, then the node dialled at ``target`` and its answer relayed or switched
        to (``dial``: the tunnel's own request and switch, :mod:`.tunnel`)."""
        timed = phases.of(call.request.context)
        timed.mark("options")
        is_admin = await self.authz.is_cluster_admin(call.user)
        timed.mark("admin check")
        enforce = await enforce_level(self.store, str(pod["metadata"].get("namespace") or ""))
        timed.mark("namespace get")
        reason = exec_admission(pod, call.user, is_admin, enforce)
        timed.mark("admission")
        if reason is not None:  # raised, so the audit line records a denial and why
            if self.events is not None:  # a Warning on the pod, rate-limited
                action = call.info.subresource or "exec"  # exec, attach, portforward
                text = events.exec_denied_message(action, call.user.name, reason)
                await self.events.record_limited(
                    pod, events.EXEC_DENIED, text, component=events.APISERVER
                )
            raise AdmissionDeniedError(exec_forbidden_status(pod, reason))
        node = await self._node(pod)
        timed.mark("node get")
        slot = await self.slots.acquire(call.caller.name)
        timed.mark("slot")
        try:
            return await self._proxy(call, node, target, session, slot, dial or _PlainDial())
        except BaseException:
            slot.release()
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
        self,
        call: Call,
        node: Mapping[str, Any],
        target: str,
        session: Session,
        slot: Slot,
        dial: Dial,
    ) -> Response:
        endpoint = connect.node_address(node)
        method, headers = dial.request(call)
        try:
            answer, node_stream = await self.proxy.dial(
                method, endpoint.url(target), headers, client=call.request.stream
            )
        except StatusError as exc:
            self._audit_start(session, exc.code, exc.message)
            raise
        timed = phases.of(call.request.context)
        timed.mark("node dial")
        try:
            self._audit_start(session, answer.status)
            timed.mark("audit start")
        except BaseException:
            if node_stream is not None:
                node_stream.abort()
            raise
        if node_stream is None:
            slot.release()
            return self.proxy.refusal(answer)

        async def on_end(stats: SpliceStats) -> None:
            timed.mark("splice")
            slot.release()
            try:
                await self._audit_end(session, endpoint, stats, timed)
            finally:
                self.trimmer.session_ended()

        # The client may be gone before its 101 is written: then the HTTP layer never
        # runs the splice, and the slot goes back through on_abandon.
        return dial.switch(self.proxy, answer, node_stream, on_end, slot.release)

    def _audit_start(self, session: Session, code: int, error: str = "") -> None:
        """The command, before anything runs; a log that cannot take it refuses the
        session (500): a full disk must not be a way to exec unaudited."""
        if self.audit is None:
            return
        try:
            self.audit.log_session_start(**session.fields(), code=code, error=error)
        except (OSError, ValueError) as exc:
            raise StatusError(status.internal_error(f"audit log unavailable: {exc}")) from None

    async def _audit_end(
        self, session: Session, endpoint: NodeAddress, stats: SpliceStats, timed: phases.Timer
    ) -> None:
        if self.audit is None:
            return
        if session.ports is not None:  # port-forward has no exit code to ask for
            self._write_end(session, stats, None, "")
            return
        try:
            exit_code, why = await self.outcomes.fetch(endpoint, session.request_id)
        except asyncio.CancelledError:
            # Shutting down: the end is still written, without the exit code.
            self._write_end(session, stats, None, "the API server shut down before asking")
            raise
        timed.mark("outcome fetch")
        self._write_end(session, stats, exit_code, why)
        timed.mark("audit end")

    def _write_end(
        self, session: Session, stats: SpliceStats, exit_code: int | None, why: str
    ) -> None:
        assert self.audit is not None
        self.audit.log_session_end(
            **session.fields(),
            duration=stats.duration,
            bytes_in=stats.bytes_to_node,
            bytes_out=stats.bytes_to_client,
            exit_code=exit_code,
            exit_code_error=why,
            error=stats.error,
        )


class Dial:
    """How :meth:`ExecHandler.connect` asks the node: the request's method and headers,
    and the client's 101 with what runs after it."""

    def request(self, call: Call) -> tuple[str, list[tuple[str, str]]]:
        raise NotImplementedError

    def switch(
        self,
        proxy: ExecProxy,
        answer: ClientResponse,
        node: ByteStream,
        on_end: Callable[[SpliceStats], Awaitable[None]],
        on_abandon: Callable[[], None],
    ) -> Response:
        raise NotImplementedError


class _PlainDial(Dial):
    """The client's own request (method, headers as :func:`forward_headers` keeps them),
    and the node's 101 spliced byte for byte."""

    def request(self, call: Call) -> tuple[str, list[tuple[str, str]]]:
        headers = forward_headers(call.request.headers, call.source_address, call.request_id)
        return call.request.method, headers

    def switch(
        self,
        proxy: ExecProxy,
        answer: ClientResponse,
        node: ByteStream,
        on_end: Callable[[SpliceStats], Awaitable[None]],
        on_abandon: Callable[[], None],
    ) -> Response:
        return proxy.switch(answer, node, on_end, on_abandon=on_abandon)


class Session:
    """What both audit lines of one session say about it; ``ports`` for port-forward
    (those the request names: the SPDY form names them per connection, inside the
    stream the API server does not parse).

    Taken from the call when the session is set up, so that what lasts as long as the
    session (its end's audit line) keeps these fields, not the request: its headers,
    query and connection are let go once the splice runs."""

    def __init__(
        self,
        call: Call,
        options: ExecOptions,
        pod_uid: str,
        ports: tuple[int, ...] | None = None,
    ) -> None:
        self.request_id = call.request_id
        self.ports = ports
        extra: dict[str, Any] = {} if ports is None else {"ports": list(ports)}
        self._fields: dict[str, Any] = {
            **extra,
            **call.audit_users,
            "info": call.info,
            "pod_uid": pod_uid,
            "container": options.container,
            "command": list(options.command),
            "tty": options.tty,
            "stdin": options.stdin,
            "source": call.source,
            "request_id": call.request_id,
        }

    def fields(self) -> dict[str, Any]:
        return dict(self._fields)
