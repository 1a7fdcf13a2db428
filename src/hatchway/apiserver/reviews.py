"""Reviews: SelfSubjectAccessReview and SubjectAccessReview (``kubectl auth can-i``),
SelfSubjectRulesReview (``kubectl auth can-i --list``) and authentication's
SelfSubjectReview (``kubectl auth whoami``).

A POST answers 201 with the review echoed back and ``status.allowed`` (and
``status.reason`` when the authorizer gave one); nothing is stored. A
SelfSubjectAccessReview is evaluated for the caller; a SubjectAccessReview for the
user and groups of its spec. A rules review lists the caller's RBAC rules at cluster
scope and in ``spec.namespace`` (required); a SelfSubjectReview answers the caller's
user info.
"""

from __future__ import annotations

from typing import Any

from hatchway.api import resources, status, validation
from hatchway.api.resources import AUTHZ
from hatchway.api.status import StatusError
from hatchway.apiserver.app import Call, json_response
from hatchway.apiserver.authn import UserInfo
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.apiserver.rest_handlers import decode_body
from hatchway.transport.http import Response


class ReviewHandler:
    def __init__(self, authorizer: RbacAuthorizer) -> None:
        self.authz = authorizer

    async def __call__(self, call: Call) -> Response:
        info = call.info
        res = resources.lookup(info.resource, info.api_group)
        if res is None or info.name or info.subresource or not _served(res, info.api_version):
            raise StatusError(status.not_found_path())
        if call.request.method != "POST":
            action = "list" if call.request.method == "GET" else call.request.method.lower()
            raise StatusError(status.method_not_allowed(res.name, action, res.group))
        review: Any = decode_body(call)  # JSON, YAML or protobuf
        if not isinstance(review, dict):
            raise StatusError(status.bad_request("the request body is not a JSON object"))
        review["apiVersion"] = f"{res.group}/{info.api_version}"
        review.setdefault("kind", res.kind)
        review["status"] = await self._status(call, res.name, review)
        meta = review.get("metadata") if isinstance(review.get("metadata"), dict) else {}
        meta.setdefault("creationTimestamp", None)
        review["metadata"] = meta
        return json_response(review, 201)

    async def _status(self, call: Call, resource: str, review: dict[str, Any]) -> dict[str, Any]:
        spec = review.get("spec") if isinstance(review.get("spec"), dict) else {}
        if resource == "selfsubjectreviews":
            return {"userInfo": user_info(call.user)}
        if resource == "selfsubjectrulesreviews":
            namespace = spec.get("namespace")
            if not isinstance(namespace, str) or not namespace:
                causes = [status.required("spec.namespace")]
                raise StatusError(status.invalid("SelfSubjectRulesReview", "", causes, AUTHZ))
            return await self.authz.rules_review(call.user, namespace)
        validation.check(resource, review)
        user = call.user if resource == "selfsubjectaccessreviews" else None
        return await self.authz.subject_access_review(spec, user)


#: kubectl 1.27's ``auth whoami`` posts to v1alpha1, then v1beta1 (same shape as v1),
#: without reading discovery, which lists v1 only.
_ALSO_SERVED = {"selfsubjectreviews": ("v1beta1",)}


def _served(res: resources.Resource, version: str) -> bool:
    return version == res.version or version in _ALSO_SERVED.get(res.name, ())


def user_info(user: UserInfo) -> dict[str, Any]:
    """authentication/v1 UserInfo of the caller."""
    info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra.items()}
    return info
