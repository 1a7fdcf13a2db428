"""The node agent's HTTPS endpoint: exec, attach and container logs, for the API server only.

Routes (GET and POST alike, protocol.md 2.4)::

    /exec/{ns}/{pod}/{uid}/{container}      /exec/{ns}/{pod}/{container}
    /attach/{ns}/{pod}/{uid}/{container}    /attach/{ns}/{pod}/{container}
    /portForward/{ns}/{pod}/{uid}           /portForward/{ns}/{pod}   (:mod:`.portforward`)
    /containerLogs/{ns}/{pod}/{container}?podUID={uid}&follow=&tailLines=&limitBytes=&sinceSeconds=&sinceTime=
    /sessions/{audit-id}                    (GET: a session's exit code, :mod:`.sessions`)
    /healthz

The pod's uid (issue 9): the API server always names it — the kubelet's own 5-part form
for exec, attach and port-forward (``/portForward/{ns}/{pod}/{uid}``);
for logs, whose kubelet path has no uid segment, the ``podUID`` query parameter. The node
answers only from the pod with that uid: 404 ``pod does not exist`` when it knows no pod
of that name, 409 when the pods it has of that name have other uids (a new pod reusing
the name of one still stopping). The uid-less forms are kept for clients that send no
uid, and answered only when exactly one pod of that namespace and name is on the node
(409 otherwise). Names must be DNS labels (namespace, container) and a subdomain (pod),
and a uid a canonical UUID, else 400: nothing else is looked up.

Only the API server's client identity gets through (:mod:`hatchway.node.identity`): no
certificate is 401, any other identity 403, each refusal logged. The action comes from
the path, never from the HTTP method.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hatchway.api.names import dns1123_label, dns1123_subdomain
from hatchway.errors import HatchwayError
from hatchway.node import portforward
from hatchway.node.identity import CallerIdentity
from hatchway.node.logs import LogOptions, LogOptionsError, LogUnavailableError, parse_log_options
from hatchway.node.paths import is_uid
from hatchway.node.portforward import PortForwardLimits
from hatchway.node.sessions import AUDIT_ID_HEADER, SessionOutcomes
from hatchway.node.sessions import PREFIX as SESSIONS_PREFIX
from hatchway.protocol import exec_options
from hatchway.protocol.portforward import parse_ports
from hatchway.protocol.spdy import SpdyLimits
from hatchway.session import upgrade
from hatchway.session.heap import HeapTrimmer
from hatchway.session.runner import Process
from hatchway.session.server import ServerSession
from hatchway.transport import phases
from hatchway.transport.base import Connection
from hatchway.transport.http import Request, Response
from hatchway.types import ExecOptions

log = logging.getLogger(__name__)


def text_response(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    body = text.encode() + b"\n"
    return Response(
        status,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("x-content-type-options", "nosniff"),
            *headers,
        ],
        body,
    )


class LookupRefusedError(HatchwayError):
    """The node will not pick a pod for this request (``status``: the HTTP answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Target:
    action: str
    namespace: str
    pod: str
    container: str
    uid: str = ""  # "": the uid-less form


def parse_path(path: str, query: dict[str, list[str]] | None = None) -> Target | None:
    """The request's target; the uid of a log request is its ``podUID`` parameter."""
    parts = [p for p in path.split("/") if p]
    if len(parts) in (4, 5) and parts[0] in {"exec", "attach"}:
        uid = parts[3] if len(parts) == 5 else ""
        return Target(parts[0], parts[1], parts[2], parts[-1], uid)
    if len(parts) in (3, 4) and parts[0] == "portForward":
        uid = parts[3] if len(parts) == 4 else ""
        return Target("portforward", parts[1], parts[2], "", uid)
    if len(parts) == 4 and parts[0] == "containerLogs":
        uid = ((query or {}).get("podUID") or [""])[0]
        return Target("logs", parts[1], parts[2], parts[3], uid)
    return None


def target_problem(target: Target) -> str | None:
    """Why the target names no pod this node could have (names and uid), or None."""
    checks = [
        ("namespace", target.namespace, dns1123_label),
        ("pod name", target.pod, dns1123_subdomain),
    ]
    if target.action != "portforward":
        checks.append(("container name", target.container, dns1123_label))
    for what, value, check in checks:
        problems = check(value)
        if problems:
            return f"invalid {what} {value!r}: {problems[0]}"
    if target.uid and not is_uid(target.uid):
        return f"invalid pod uid {target.uid!r}: not a canonical UUID"
    return None


class NodeEndpoint:
    """The HTTP application of the node agent.

    ``lookup(namespace, pod, uid, container)`` (``uid`` may be ``""``) answers ``None``
    when the node has no such pod, else ``(container_id or None, running)``, or raises
    :class:`LookupRefusedError`. ``start(container_id, options)`` starts a process in the
    container. ``await logs(target, options)`` is the iterator over the log's bytes
    (:class:`~hatchway.node.logs.LogOptions`), or raises
    :class:`~hatchway.node.logs.LogUnavailableError` (the kubelet's 400 text).
    ``netns(namespace, pod, uid)`` is the path of the pod's network namespace for
    port-forward: None when the node has no such pod, ``""`` when its sandbox is not
    running; it raises :class:`LookupRefusedError` as ``lookup`` does.
    """

    def __init__(
        self,
        *,
        caller: CallerIdentity,
        lookup: Callable[[str, str, str, str], Awaitable[tuple[str | None, bool] | None]],
        start: Callable[[str, ExecOptions], object],
        logs: Callable[[Target, LogOptions], Awaitable[AsyncIterator[bytes]]] | None = None,
        outcomes: SessionOutcomes | None = None,
        trimmer: HeapTrimmer | None = None,
        netns: Callable[[str, str, str], Awaitable[str | None]] | None = None,
        port_forward_limits: PortForwardLimits | None = None,
    ) -> None:
        self.caller = caller
        self.netns = netns
        self.port_forward_limits = port_forward_limits or PortForwardLimits()
        self.lookup = lookup
        self.start = start
        self.logs = logs
        self.sessions = 0
        self.outcomes = outcomes if outcomes is not None else SessionOutcomes()
        #: Gives the memory of ended sessions back to the system (:mod:`.heap`).
        self.trimmer = trimmer if trimmer is not None else HeapTrimmer()

    async def __call__(self, request: Request) -> Response:
        refusal = self.caller.admit(request.peercert, request.peer, request.path)
        phases.of(request.context).mark("admit")
        if refusal is not None:
            return text_response(refusal.status, refusal.text)
        if request.path == "/healthz":
            return text_response(200, "ok")
        if request.path.startswith(SESSIONS_PREFIX):
            return await self._session_outcome(request)
        target = parse_path(request.path, request.query)
        if target is None:
            return text_response(404, "404 page not found")
        problem = target_problem(target)
        if problem is not None:
            return text_response(400, problem)
        if target.action == "logs":
            return await self._logs(request, target)
        if target.action == "portforward":
            return await self._port_forward(request, target)
        return await self._exec(request, target)

    async def _session_outcome(self, request: Request) -> Response:
        return await self.outcomes.serve(request)

    async def _find(self, target: Target) -> tuple[str | None, bool] | Response:
        """The container the target names, or the refusal to send."""
        try:
            found = await self.lookup(target.namespace, target.pod, target.uid, target.container)
        except LookupRefusedError as exc:
            return text_response(exc.status, str(exc))
        if found is None:
            return text_response(404, "pod does not exist")
        return found

    async def _logs(self, request: Request, target: Target) -> Response:
        found = await self._find(target)
        if isinstance(found, Response):
            return found
        if self.logs is None:
            return text_response(404, "logs are not served here")
        try:
            options = parse_log_options(request.query, time.time())
            body = await self.logs(target, options)
        except (LogOptionsError, LogUnavailableError) as exc:
            return text_response(400, str(exc))
        return Response(200, [("content-type", "text/plain")], body_iter=body)

    async def _exec(self, request: Request, target: Target) -> Response:
        # Either spelling: the kubelet's from the API server, the API server's from a
        # client that talks to the node directly (tests, tools).
        options = exec_options.decode(
            request.query, target.action, container=target.container
        ).normalised()
        if not options.any_stream:
            return text_response(400, "you must specify at least 1 of stdin, stdout, stderr")
        if options.action == "exec" and not options.command:
            return text_response(400, "you must specify at least one command for the container")
        timed = phases.of(request.context)
        timed.mark("options")
        found = await self._find(target)
        timed.mark("lookup")
        if isinstance(found, Response):
            return found
        container_id, running = found
        if container_id is None or not running:
            return text_response(500, f'container not found ("{target.container}")')
        audit_id = request.header(AUDIT_ID_HEADER)
        found_id: str = container_id

        async def serve(conn: Connection) -> None:
            await self._session(conn, options, found_id, audit_id=audit_id, timed=timed)

        return upgrade.accept(request, serve)

    async def _port_forward(self, request: Request, target: Target) -> Response:
        """protocol.md 6.3: the pod's sandbox must run; the WebSocket form needs ``ports``."""
        if self.netns is None:
            return text_response(404, "404 page not found")
        try:
            path = await self.netns(target.namespace, target.pod, target.uid)
        except LookupRefusedError as exc:
            return text_response(exc.status, str(exc))
        if path is None:
            return text_response(404, "pod does not exist")
        if not path:
            return text_response(500, f"pod {target.pod} has no running sandbox")
        limits = self.port_forward_limits
        ports: list[int] = []
        if "websocket" in (request.header("upgrade") or "").lower():
            try:  # the kubelet's V4 options: only the WebSocket form names its ports
                ports = parse_ports(request.query.get("ports") or [])
            except ValueError as exc:
                return text_response(400, str(exc))
        netns_path: str = path

        async def serve(conn: Connection) -> None:
            self.sessions += 1
            try:
                stats = await portforward.serve(conn, netns_path, ports, limits)
                log.info(
                    "port-forward to %s/%s ended: ports=%s connections=%d failed=%d in=%d out=%d",
                    target.namespace,
                    target.pod,
                    sorted(stats.ports),
                    stats.connections,
                    stats.failed,
                    stats.bytes_in,
                    stats.bytes_out,
                )
            finally:
                self.sessions -= 1
                self.trimmer.session_ended()

        return upgrade.accept_port_forward(
            request,
            serve,
            num_channels=2 * len(ports),
            spdy_limits=SpdyLimits(max_streams=2 * limits.max_connections + 2),
        )

    def _runner(self, container_id: str) -> _BoundRunner:
        return _BoundRunner(self.start, container_id)

    async def _session(
        self,
        conn: Connection,
        options: ExecOptions,
        container_id: str,
        *,
        audit_id: str | None = None,
        timed: Any = phases.OFF,
    ) -> None:
        self.sessions += 1
        # The API server's id, for its audit line's exit code only (see .sessions).
        record = self.outcomes.begin(audit_id)
        outcome = None
        try:
            session = ServerSession(conn, options, self._runner(container_id), timed=timed)
            outcome = await session.run()
            log.info(
                "%s in %s ended: exit=%s error=%r in=%d out=%d",
                options.action,
                container_id,
                outcome.exit_code,
                outcome.error,
                outcome.bytes_in,
                outcome.bytes_out,
            )
        finally:
            self.sessions -= 1
            self.outcomes.finish(record, outcome)
            self.trimmer.session_ended()


class _BoundRunner:
    def __init__(self, start: Callable[[str, ExecOptions], object], container_id: str) -> None:
        self._start = start
        self._container_id = container_id

    async def start(self, options: ExecOptions) -> Process:
        try:
            return await self._start(self._container_id, options)  # type: ignore[misc,no-any-return]
        except HatchwayError:
            raise
        except OSError as exc:
            raise HatchwayError(f"error executing command in container: {exc}") from exc
