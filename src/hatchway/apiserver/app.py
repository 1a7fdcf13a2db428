"""The API server's HTTP application: authn -> impersonation -> authz -> handler, audited.

Every request is authenticated (client certificate from the cluster CA, or a bearer
token; anything else is 401, discovery included), switched to the user its
``Impersonate-*`` headers name if the caller may impersonate it (:mod:`.impersonation`;
from there on, authorisation, admission and the handlers see only that user), classified by
:func:`~hatchway.apiserver.request_info.parse_request_info`, authorised by RBAC (exec
and attach are always ``create`` on ``pods/exec``/``pods/attach``), then served:

* non-resource paths: ``/version``, ``/healthz``, ``/livez``, ``/readyz``, legacy
  discovery ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]`` (also for
  kubectl's aggregated-discovery ``Accept``, which falls back to it), ``/openapi/v3``
  (:mod:`.openapi`), ``/openapi/v2`` and ``/swagger-2.0.0.pb-v1`` (:mod:`.openapi_v2`);
* ``pods/exec``, ``pods/attach`` and the legacy ``/proxy/minions/...`` path:
  :mod:`.exec_handler`; ``pods/portforward``: :mod:`.portforward`;
* ``pods/log``: :mod:`.logs`;
* access reviews: :mod:`.reviews`;
* everything else: :mod:`.rest_handlers`.

One audit line per request, with the decision and the code answered; when the request
impersonates, the line names both the caller (``user``) and the impersonated user.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hatchway.api import protobuf, resources, status
from hatchway.api.status import AdmissionDeniedError
from hatchway.apiserver import impersonation, openapi, openapi_v2
from hatchway.apiserver.audit import AuditLogger
from hatchway.apiserver.authn import Authenticator, UserInfo
from hatchway.apiserver.rbac import Attributes, RbacAuthorizer, forbidden_status
from hatchway.apiserver.request_info import RequestInfo, parse_request_info
from hatchway.errors import ApiError
from hatchway.transport import phases
from hatchway.transport.http import Request, Response, plain_response

log = logging.getLogger(__name__)

JSON = "application/json"
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
#: The key of the user :meth:`ApiApp.check_head` authenticated, in ``Request.context``.
USER = "hatchway.user"
#: Where client-go looks for the v2 document when ``/openapi/v2`` is 404 (servers < 1.10).
SWAGGER_PB_PATH = "/swagger-2.0.0.pb-v1"


@dataclass
class Call:
    """One authenticated, authorised request on its way to a handler."""

    request: Request
    #: Who the request runs as: the impersonated user when it impersonates.
    user: UserInfo
    info: RequestInfo
    request_id: str
    #: The authenticated caller when the request impersonates ``user``, else None.
    requestor: UserInfo | None = None
    #: Added by admission: ``Warning`` headers for the answer, annotations for the audit.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def audit_users(self) -> dict[str, UserInfo | None]:
        """The audit's ``user`` (who authenticated) and ``impersonated_user``."""
        return {"user": self.caller, "impersonated_user": self.impersonated}

    @property
    def caller(self) -> UserInfo:
        """Who authenticated: what per-user bounds (session slots) are charged to, so
        that acting as many users never buys more than one user's share."""
        return self.requestor or self.user

    @property
    def impersonated(self) -> UserInfo | None:
        return self.user if self.requestor is not None else None

    @property
    def source(self) -> str:
        return _source(self.request)

    @property
    def source_address(self) -> str:
        peer = self.request.peer
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""


@dataclass
class _Unauthenticated:
    """A request refused before anyone was authenticated, as the audit sees it."""

    request: Request
    info: RequestInfo
    request_id: str

    @property
    def audit_users(self) -> dict[str, UserInfo | None]:
        return {"user": None, "impersonated_user": None}

    @property
    def source(self) -> str:
        return _source(self.request)


def _source(request: Request) -> str:
    peer = request.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


Handler = Callable[[Call], Awaitable[Response]]


def json_response(
    obj: Any, code: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(code, [("Content-Type", JSON), *(headers or [])], body)


def status_response(body: dict[str, Any]) -> Response:
    code = int(body.get("code") or 500)
    headers: list[tuple[str, str]] = []
    retry = (body.get("details") or {}).get("retryAfterSeconds")
    if retry:
        headers.append(("Retry-After", str(retry)))
    return json_response(body, code, headers)


def negotiated(request: Request, response: Response) -> Response:
    """``response`` in protobuf when the client accepts only protobuf and the object has
    a protobuf form (every served kind, its list, a Status); otherwise as it is, JSON,
    which client-go decodes by the Content-Type whatever it asked for. Streams (watch)
    and upgrades stay as they are."""
    if response.body_iter is not None or response.upgrade is not None or not response.body:
        return response
    if not protobuf.only_protobuf(request.header("accept") or ""):
        return response
    types = [v for k, v in response.headers if k.lower() == "content-type"]
    if types != [JSON]:
        return response
    try:
        body = protobuf.encode(json.loads(response.body))
    except (ValueError, TypeError):  # EncodeError is a ValueError: no protobuf form
        return response
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-type"]
    response.headers = [("Content-Type", protobuf.MEDIA_TYPE), *headers]
    response.body = body
    return response


class ApiApp:
    """The application :class:`~hatchway.transport.http.HttpServer` serves.

    ``resource_handler``, ``exec_handler``, ``log_handler`` and ``review_handler`` are
    async callables taking a :class:`Call` (wired by :mod:`.server`)."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        authorizer: RbacAuthorizer,
        audit: AuditLogger | None,
        resource_handler: Handler,
        exec_handler: Handler,
        log_handler: Handler,
        review_handler: Handler,
        server_address: str = "",
        port_forward_handler: Handler | None = None,
    ) -> None:
        self.authn = authenticator
        self.authz = authorizer
        self.audit = audit
        self.resource_handler = resource_handler
        self.exec_handler = exec_handler
        self.log_handler = log_handler
        self.review_handler = review_handler
        self.port_forward_handler = port_forward_handler
        self.server_address = server_address

    async def check_head(self, request: Request) -> Response | None:
        """Authentication on the head alone, before the HTTP server reads the body: an
        anonymous request (or one whose credentials fail) is answered 401 and its body
        never held, so unauthenticated clients cannot pin request bodies in memory."""
        user = self.authn.authenticate(request.peercert, request.header("authorization"))
        if user is not None:
            request.context[USER] = user
            return None
        info = parse_request_info(request.method, request.raw_path, request.query)
        body = status.unauthorized()
        return self._audited(_Unauthenticated(request, info, str(uuid.uuid4())), "deny", body)

    async def __call__(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        info = parse_request_info(request.method, request.raw_path, request.query)
        user = request.context.get(USER) or self.authn.authenticate(
            request.peercert, request.header("authorization")
        )
        if user is None:
            anonymous = _Unauthenticated(request, info, request_id)
            return self._audited(anonymous, "deny", status.unauthorized())
        call = Call(request, user, info, request_id)
        timed = phases.of(request.context)
        timed.mark("request info")
        refusal = await self._impersonate(call)
        if refusal is not None:
            return refusal
        decision = await self.authz.authorize(call.user, Attributes.from_request_info(info))
        timed.mark("rbac")
        if not decision.allowed:
            attrs = Attributes.from_request_info(info)
            return self._audited(call, "deny", forbidden_status(call.user, attrs, decision.reason))
        try:
            response = await self._dispatch(call)
        except AdmissionDeniedError as exc:
            # Refused by policy after authorisation: a denial, with admission's reason.
            return self._audited(call, "deny", exc.status, call.annotations)
        except ApiError as exc:
            # A 403 past authorization is an admission refusal: a denial, with its reason.
            decision = "deny" if exc.code == 403 else "allow"
            return self._audited(call, decision, exc.status, call.annotations)
        except Exception as exc:
            log.exception("handler failed: %s %s", request.method, request.raw_path)
            body = status.internal_error(f"{type(exc).__name__}: {exc}")
            return self._audited(call, "error", body)
        response.headers.extend(call.warnings)
        self._audit(call, "allow", response.status, annotations=call.annotations)
        timed.mark("audit")
        return negotiated(request, response)

    async def _impersonate(self, call: Call) -> Response | None:
        """Switches ``call`` to the user its ``Impersonate-*`` headers ask for, or
        answers the refusal (see :mod:`.impersonation`)."""
        request = call.request
        try:
            wanted = impersonation.parse_headers(request.headers, request.target)
        except impersonation.ImpersonationError as exc:
            if exc.body is not None:
                return self._audited(call, "deny", exc.body)
            self._audit(call, "deny", exc.code, exc.message)
            return plain_response(exc.code, exc.message)
        if not wanted:
            return None
        outcome = await impersonation.impersonate(self.authz, call.user, wanted)
        if isinstance(outcome, dict):
            return self._audited(call, "deny", outcome)
        call.requestor, call.user = call.user, outcome
        return None

    def _audited(
        self,
        call: Call | _Unauthenticated,
        decision: str,
        body: dict[str, Any],
        annotations: dict[str, str] | None = None,
    ) -> Response:
        response = negotiated(call.request, status_response(body))
        message = str(body.get("message", ""))
        self._audit(call, decision, response.status, message, annotations)
        return response

    def _audit(
        self,
        call: Call | _Unauthenticated,
        decision: str,
        code: int,
        reason: str = "",
        annotations: dict[str, str] | None = None,
    ) -> None:
        if self.audit is None:
            return
        request = call.request
        try:
            self.audit.log_request(
                **call.audit_users,
                info=call.info,
                decision=decision,
                code=code,
                reason=reason,
                source=call.source,
                user_agent=request.header("user-agent") or "",
                request_id=call.request_id,
                annotations=annotations,
            )
        except (OSError, ValueError):
            log.exception("audit write failed")

    async def _dispatch(self, call: Call) -> Response:
        info = call.info
        if not info.is_resource_request:
            return self._non_resource(call)
        if info.legacy_node or (info.resource == "pods" and info.subresource in ("exec", "attach")):
            return await self.exec_handler(call)
        if info.resource == "pods" and info.subresource == "portforward":
            if self.port_forward_handler is not None:
                return await self.port_forward_handler(call)
        if info.resource == "pods" and info.subresource == "log":
            return await self.log_handler(call)
        if info.api_group in (resources.AUTHZ, resources.AUTHN):
            return await self.review_handler(call)
        return await self.resource_handler(call)

    def _non_resource(self, call: Call) -> Response:
        path = call.info.path.rstrip("/") or "/"
        method = call.request.method
        if method not in ("GET", "HEAD"):
            return status_response(
                status.status(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            )
        if path == "/version":
            return json_response(resources.version_info())
        if path in HEALTH_PATHS or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return Response(200, [("Content-Type", "text/plain; charset=utf-8")], b"ok")
        if path in ("/openapi/v2", SWAGGER_PB_PATH):
            return _openapi_v2(call.request, path)
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            answer = openapi.serve(call.request, path)
            return answer or status_response(status.not_found_path())
        doc = _discovery(path, self.server_address)
        if doc is None:
            return status_response(status.not_found_path())
        return json_response(doc)


def _openapi_v2(request: Request, path: str) -> Response:
    """Protobuf when asked for (client-go always asks) or on the legacy path, else JSON."""
    accept = (request.header("accept") or "").lower()
    if path == SWAGGER_PB_PATH or "protobuf" in accept:
        body, media = openapi_v2.document_protobuf(), openapi_v2.PROTOBUF_MEDIA_TYPE
    else:
        body, media = openapi_v2.document_json(), JSON
    return openapi.conditional(request, body, openapi.etag(body), media)


def _discovery(path: str, server_address: str) -> dict[str, Any] | None:
    parts = path.strip("/").split("/")
    if parts == ["api"]:
        return resources.api_versions(server_address or None)
    if parts == ["apis"]:
        return resources.api_group_list()
    if len(parts) == 2 and parts[0] == "api":
        return resources.api_resource_list("", parts[1])
    if len(parts) == 2 and parts[0] == "apis":
        doc = resources.api_group(parts[1])
        return doc if doc["versions"] else None
    if len(parts) == 3 and parts[0] == "apis":
        return resources.api_resource_list(parts[1], parts[2])
    return None
