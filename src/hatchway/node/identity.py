"""Who may call the node agent: the API server's client identity, exactly.

The TLS layer already verified the chain to the node-client CA, the only CA the node
trusts for its callers (:mod:`hatchway.pki`). On top of that a caller must show:

* a certificate at all -- else 401, as the kubelet answers an unauthenticated request;
* a subject with exactly one CN, not empty -- several CNs are read differently by
  different parsers, so one of them could name the API server to us only;
* an issuer equal to the node-client CA's subject -- should the trust store ever hold
  more than that CA (an operator's bundle), a certificate of another CA is still not
  the API server's;
* that one CN equal to the API server's client name.

Anything else is 403 in the kubelet's words. Every refusal is logged as a warning with
the peer address, the request path (not the query: exec arguments may hold secrets),
the subject's CNs, the issuer and the reason, so an operator sees probes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway import pki
from hatchway.transport import tls

log = logging.getLogger(__name__)

Name = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Refusal:
    """Why a caller is refused, and the HTTP status and text it gets."""

    status: int
    text: str
    reason: str


def forbidden_text(user: str) -> str:
    """The kubelet's authorisation refusal (``server/auth.go``), for the node's proxy."""
    return f"Forbidden (user={user}, verb=create, resource=nodes, subresource=proxy)"


@dataclass(frozen=True)
class CallerIdentity:
    """The one identity the node serves: ``name`` (the CN) issued by ``issuer`` (the
    node-client CA's subject as flat ``(attribute, value)`` pairs)."""

    name: str
    issuer: Name

    @classmethod
    def from_ca(cls, ca_cert: str, name: str = pki.APISERVER_CLIENT_CN) -> CallerIdentity:
        """The API server's identity, issued by the CA in the file ``ca_cert``."""
        return cls(name, pki.subject_attributes(ca_cert))

    def check(self, peercert: Mapping[str, Any] | None) -> Refusal | None:
        """``None`` for the API server; else the refusal (not logged: see :meth:`admit`)."""
        if not peercert:
            return Refusal(401, "Unauthorized", "no client certificate")
        identity = tls.peer_identity(peercert)
        if identity is None:
            return Refusal(403, forbidden_text(""), "the subject needs exactly one non-empty CN")
        if tls.peer_issuer(peercert) != self.issuer:
            return Refusal(403, forbidden_text(identity[0]), "not issued by the node-client CA")
        if identity[0] != self.name:
            return Refusal(403, forbidden_text(identity[0]), "not the API server's identity")
        return None

    def admit(self, peercert: Mapping[str, Any] | None, peer: Any, path: str) -> Refusal | None:
        """:meth:`check`, with every refusal logged."""
        refusal = self.check(peercert)
        if refusal is not None:
            subject = tls.name_attributes(peercert.get("subject", ()) if peercert else ())
            log.warning(
                "refused a direct call from %s to %r: %s (status %d; subject CN %r, issuer %r)",
                _address(peer),
                path,
                refusal.reason,
                refusal.status,
                [value for key, value in subject if key == "commonName"],
                _rfc4514(tls.peer_issuer(peercert)),
            )
        return refusal


def _address(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return repr(peer)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def _rfc4514(name: Name) -> str:
    """A readable issuer (most specific first, as RFC 4514 writes names)."""
    return ",".join(f"{_SHORT.get(k, k)}={v}" for k, v in reversed(name))
