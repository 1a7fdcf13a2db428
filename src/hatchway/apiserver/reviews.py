"""SelfSubjectAccessReview and SubjectAccessReview (``kubectl auth can-i``).

A POST answers 201 with the review echoed back and ``status.allowed`` (and
``status.reason`` when the authorizer gave one); nothing is stored. A
SelfSubjectAccessReview is evaluated for the caller; a SubjectAccessReview for the
user and groups of its spec.
"""

from __future__ import annotations

from typing import Any

from hatchway.api import resources, status, validation
from hatchway.api.status import StatusError
from hatchway.apiserver import protobuf
from hatchway.apiserver.app import Call, json_response
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.apiserver.rest_handlers import decode_body
from hatchway.transport.http import Response


class ReviewHandler:
    def __init__(self, authorizer: RbacAuthorizer) -> None:
        self.authz = authorizer

    async def __call__(self, call: Call) -> Response:
        info = call.info
        res = resources.lookup(info.resource, info.api_group)
        if res is None or res.version != info.api_version or info.name or info.subresource:
            raise StatusError(status.not_found_path())
        if call.request.method != "POST":
            action = "list" if call.request.method == "GET" else call.request.method.lower()
            raise StatusError(status.method_not_allowed(res.name, action, res.group))
        content_type = (call.request.header("content-type") or "").lower()
        if content_type.startswith(protobuf.MEDIA_TYPE):
            review: Any = protobuf.decode_review(call.request.body)
        else:
            review = decode_body(call)
        if not isinstance(review, dict):
            raise StatusError(status.bad_request("the request body is not a JSON object"))
        review.setdefault("apiVersion", res.api_version)
        review.setdefault("kind", res.kind)
        validation.check(res.name, review)
        spec: dict[str, Any] = review.get("spec") or {}
        user = call.user if res.name == "selfsubjectaccessreviews" else None
        review["status"] = await self.authz.subject_access_review(spec, user)
        meta = review.get("metadata") if isinstance(review.get("metadata"), dict) else {}
        meta.setdefault("creationTimestamp", None)
        review["metadata"] = meta
        return json_response(review, 201)
