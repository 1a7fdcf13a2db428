"""Acting as another user: the ``Impersonate-*`` headers, as Kubernetes' WithImpersonation.

    wanted = parse_headers(request.headers)         # [] when nothing is asked
    outcome = await impersonate(authz, user, wanted)
    if isinstance(outcome, dict):                   # a 403 Status body
        ...
    user = outcome                                  # the request now runs as this user

Headers (names are lower-case here, as the HTTP server hands them over):

* ``Impersonate-User``: the user (the first value counts, as Go's ``Header.Get``). A
  name ``system:serviceaccount:NS:NAME`` with a valid namespace and account name is the
  service account NAME in NS, anything else a plain user.
* ``Impersonate-Group`` (repeatable), ``Impersonate-Uid``, and ``Impersonate-Extra-<key>``
  (repeatable, one value each): the key lower-cased, as Go canonicalises header names,
  then percent-decoded (kept as sent when the escapes are malformed).

Each requested attribute is authorised for the *caller* with the verb ``impersonate``:
``users`` (name: the user), ``groups``, ``serviceaccounts`` (namespace NS, name NAME),
all in the core group; ``uids`` and ``userextras/<key>`` (name: the value) in
``authentication.k8s.io``. The first refusal answers 403 with Kubernetes' wording
(``users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API
group "" at the cluster scope``). Groups, a uid or extras without a user are refused as
Kubernetes refuses them: 500 ``Internal Server Error: "<uri>": requested [...] without
impersonating a user`` (:class:`ImpersonationError`).

The new identity: the name; the groups as given, or for a service account without
groups ``system:serviceaccounts`` and ``system:serviceaccounts:NS``; then
``system:authenticated`` is added unless ``system:authenticated`` or
``system:unauthenticated`` is already there (``system:anonymous`` gets
``system:unauthenticated`` instead); the uid and extras as given.

The headers are the peer's: at most :data:`MAX_VALUES` impersonation values and
:data:`MAX_VALUE_CHARS` characters in any one of them (a Hatchway bound; Kubernetes
only bounds the header block) -- each value is one authorisation, so the count bounds
the work a request can cause. Beyond that the request is refused with 400, saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from hatchway.api import status
from hatchway.api.names import dns1123_label, dns1123_subdomain
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.apiserver.rbac import Attributes, RbacAuthorizer, forbidden_status
from hatchway.errors import HatchwayError

__all__ = [
    "ANONYMOUS",
    "MAX_VALUES",
    "MAX_VALUE_CHARS",
    "ImpersonationError",
    "Wanted",
    "impersonate",
    "parse_headers",
]

USER_HEADER = "impersonate-user"
GROUP_HEADER = "impersonate-group"
UID_HEADER = "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"
AUTHN_GROUP = "authentication.k8s.io"
AUTHN_VERSION = f"{AUTHN_GROUP}/v1"
ANONYMOUS = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
MAX_VALUES = 64
MAX_VALUE_CHARS = 1024

_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


class ImpersonationError(HatchwayError):
    """The headers cannot be acted on: answer ``code`` with the Status ``body``, or
    without one (Kubernetes' plain-text 500) with ``message`` as text."""

    def __init__(self, code: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: A Status body, or None for Kubernetes' plain-text 500.
        self.body = body


@dataclass(frozen=True)
class Wanted:
    """One impersonated attribute, as Kubernetes' ObjectReference for it: ``kind`` is
    User, ServiceAccount, Group, UserExtra or UID; ``field_path`` holds an extra's key."""

    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""
    field_path: str = ""

    def go_repr(self) -> str:
        """Go's ``%v`` of the ObjectReference (Kind Namespace Name UID APIVersion
        ResourceVersion FieldPath), for the error text Kubernetes writes."""
        parts = (self.kind, self.namespace, self.name, "", self.api_version, "", self.field_path)
        return "{" + " ".join(parts) + "}"

    def attributes(self) -> Attributes:
        """What the caller must be allowed to do for this attribute."""
        resource, subresource, group = {
            "User": ("users", "", ""),
            "ServiceAccount": ("serviceaccounts", "", ""),
            "Group": ("groups", "", ""),
            "UID": ("uids", "", AUTHN_GROUP),
            "UserExtra": ("userextras", self.field_path, AUTHN_GROUP),
        }[self.kind]
        return Attributes(
            verb="impersonate",
            namespace=self.namespace,
            api_group=group,
            api_version="v1" if group else "",
            resource=resource,
            subresource=subresource,
            name=self.name,
        )


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of ``system:serviceaccount:NS:NAME``, as Kubernetes'
    SplitUsername: exactly two parts, a DNS label and a DNS subdomain."""
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    namespace, name = parts
    if dns1123_label(namespace) or dns1123_subdomain(name):
        return None
    return namespace, name


def _extra_key(suffix: str) -> str:
    """Lower-cased, then percent-decoded as Go's url.PathUnescape (which refuses a
    malformed escape: then the key is kept as sent)."""
    key = suffix.lower()
    if _BAD_ESCAPE.search(key):
        return key
    return unquote(key, errors="replace")


def _bounded(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``Impersonate-*`` headers, refused (400, saying which bound) beyond the
    bounds of the module docstring."""
    found = [(k, v) for k, v in headers if k.startswith("impersonate-")]
    text = ""
    if len(found) > MAX_VALUES:
        text = f"too many impersonation headers: {len(found)}, at most {MAX_VALUES} are accepted"
    for key, value in found:
        if not text and len(value) > MAX_VALUE_CHARS:
            text = (
                f"impersonation header {key} is {len(value)} characters long,"
                f" at most {MAX_VALUE_CHARS} are accepted"
            )
    if text:
        raise ImpersonationError(400, text, status.bad_request(text))
    return found


def parse_headers(headers: Sequence[tuple[str, str]], uri: str = "") -> list[Wanted]:
    """The attributes a request asks to impersonate, in Kubernetes' order (user, groups,
    extras, uid); ``[]`` when it asks none. ``uri`` is the request target, for the text
    of the refusal of groups/uid/extras without a user."""
    found = _bounded(headers)
    if not found:
        return []
    wanted: list[Wanted] = []
    user = next((v for k, v in found if k == USER_HEADER), "")
    if user:
        account = split_service_account(user)
        if account is not None:
            wanted.append(Wanted("ServiceAccount", account[1], account[0]))
        else:
            wanted.append(Wanted("User", user))
    others = [Wanted("Group", v) for k, v in found if k == GROUP_HEADER]
    others += [
        Wanted(
            "UserExtra", v, api_version=AUTHN_VERSION, field_path=_extra_key(k[len(EXTRA_PREFIX) :])
        )
        for k, v in found
        if k.startswith(EXTRA_PREFIX)
    ]
    uid = next((v for k, v in found if k == UID_HEADER), "")
    if uid:
        others.append(Wanted("UID", uid, api_version=AUTHN_VERSION))
    wanted += others
    if others and not user:
        listed = "[" + " ".join(w.go_repr() for w in wanted) + "]"
        error = f"requested {listed} without impersonating a user"
        raise ImpersonationError(500, _go_internal_error(uri, error))
    return wanted


def _go_internal_error(uri: str, error: str) -> str:
    """responsewriters.InternalError's text: ``Internal Server Error: %q: %v``, with its
    HTML sanitiser applied."""
    text = f"Internal Server Error: {json.dumps(uri, ensure_ascii=False)}: {error}"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def impersonate(
    authz: RbacAuthorizer, requestor: UserInfo, wanted: Sequence[Wanted]
) -> UserInfo | dict[str, Any]:
    """The identity ``wanted`` describes if ``requestor`` may take each part of it, else
    the 403 Status for the first part refused."""
    groups_given = any(w.kind == "Group" for w in wanted)
    name, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for item in wanted:
        attrs = item.attributes()
        decision = await authz.authorize(requestor, attrs)
        if not decision.allowed:
            return forbidden_status(requestor, attrs, decision.reason)
        if item.kind == "ServiceAccount":
            name = f"{SA_PREFIX}{item.namespace}:{item.name}"
            if not groups_given:
                groups = [SA_GROUP, f"{SA_GROUP}:{item.namespace}"]
        elif item.kind == "User":
            name = item.name
        elif item.kind == "Group":
            groups.append(item.name)
        elif item.kind == "UserExtra":
            extra.setdefault(item.field_path, []).append(item.name)
        else:
            uid = item.name
    if name != ANONYMOUS:
        if AUTHENTICATED_GROUP not in groups and UNAUTHENTICATED_GROUP not in groups:
            groups.append(AUTHENTICATED_GROUP)
    elif UNAUTHENTICATED_GROUP not in groups:
        groups.append(UNAUTHENTICATED_GROUP)
    return UserInfo(name, tuple(groups), uid, {k: tuple(v) for k, v in extra.items()})
