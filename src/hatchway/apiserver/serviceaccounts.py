"""Service accounts and their tokens, as Kubernetes' bound service-account tokens.

Every namespace has a ``default`` service account (:func:`ensure_default`, when the
namespace is created and for every namespace at start). ``POST
.../serviceaccounts/NAME/token`` with a TokenRequest (``kubectl create token NAME``;
RBAC ``create`` on ``serviceaccounts/token``, which ``edit`` has) answers with a signed
JWT (ES256, the cluster's service-account key ``pki/service-account.key``) carrying
Kubernetes' claims: ``iss``, ``sub`` ``system:serviceaccount:NS:NAME``, ``aud``
(default: the issuer), ``exp``/``iat``/``nbf``, ``jti`` and ``kubernetes.io``
(namespace, service account name and uid). ``spec.expirationSeconds``: 3600 by default,
at least 600, as Kubernetes validates it.

Authentication (:meth:`ServiceAccountTokens.authenticate`, synchronous like the rest
of the authenticator): the signature with our key and ``alg`` ES256 only (no ``none``,
no other key), the issuer, one audience the API server accepts, ``exp`` in the future
and ``nbf`` not after now (60 s leeway for clocks), and the service account must still
exist *with the uid in the token*: a deleted account's tokens stop working at once, and
an account re-created under the same name does not revive them. Existence is read from a
cache of the store's accounts, refreshed before a local write of an account is answered
and every ``ttl`` seconds (another API server on the same store). The user is
``system:serviceaccount:NS:NAME`` in groups ``system:serviceaccounts``,
``system:serviceaccounts:NS`` and ``system:authenticated``.

Tokens are never logged; a refused token is ``None`` (401) and the log line says why
without the token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hatchway.api import status
from hatchway.api.meta import format_time
from hatchway.api.status import StatusError
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.store.base import Store

log = logging.getLogger(__name__)

ISSUER = "https://kubernetes.default.svc.cluster.local"
SA_PREFIX = "system:serviceaccount:"
DEFAULT_NAME = "default"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
#: A bearer token longer than this is no token of ours (checked before any decoding).
MAX_TOKEN = 8192
LEEWAY = 60.0
API_VERSION = "authentication.k8s.io/v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key at ``path``, created (P-256, mode 0600) when missing."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return loaded


def _key_id(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(hashlib.sha256(der).digest())


async def ensure_default(store: Store, namespace: str) -> None:
    """The namespace's ``default`` service account, created when missing."""
    try:
        await store.get("serviceaccounts", namespace, DEFAULT_NAME)
        return
    except StatusError as exc:
        if exc.code != 404:
            raise
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": DEFAULT_NAME,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": format_time(datetime.now(UTC)),
        },
    }
    with contextlib.suppress(StatusError):  # created meanwhile (409): fine
        await store.create("serviceaccounts", account)


class ServiceAccountTokens:
    """Issues and checks service-account tokens (see module docstring)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        store: Store,
        *,
        issuer: str = ISSUER,
        audiences: tuple[str, ...] = (),
        ttl: float = 2.0,
    ) -> None:
        self._key = key
        self._public = key.public_key()
        self.kid = _key_id(key)
        self.store = store
        self.issuer = issuer
        self.audiences = audiences or (issuer,)
        self.ttl = ttl
        #: (namespace, name) -> uid of every service account, from the store.
        self._accounts: dict[tuple[str, str], str] = {}

    # -- the accounts --------------------------------------------------------------------
    async def refresh(self) -> None:
        items, _ = await self.store.list("serviceaccounts")
        self._accounts = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"].get(
                "uid", ""
            )
            for o in items
        }

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (StatusError, OSError, RuntimeError):
                log.exception("service account refresh failed")
            await asyncio.sleep(self.ttl)

    # -- issuing -------------------------------------------------------------------------
    def issue(self, account: dict[str, Any], audiences: list[str], seconds: int, now: float) -> str:
        meta = account["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        claims = {
            "aud": audiences,
            "exp": int(now) + seconds,
            "iat": int(now),
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": meta.get("uid", "")},
            },
            "nbf": int(now),
            "sub": f"{SA_PREFIX}{namespace}:{name}",
        }
        header = {"alg": "ES256", "kid": self.kid}
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    async def token_request(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The answer to a TokenRequest for ``namespace/name`` (raises StatusError)."""
        account = await self.store.get("serviceaccounts", namespace, name)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        causes = []
        seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
        if seconds is None:
            seconds = DEFAULT_EXPIRATION
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            causes.append(status.invalid_value("spec.expirationSeconds", seconds, "not a number"))
        elif seconds < MIN_EXPIRATION:
            causes.append(
                status.invalid_value(
                    "spec.expirationSeconds",
                    seconds,
                    "may not specify a duration less than 10 minutes",
                )
            )
        elif seconds > MAX_EXPIRATION:
            too_long = "may not specify a duration larger than 2^32 seconds"
            causes.append(status.invalid_value("spec.expirationSeconds", seconds, too_long))
        audiences = spec.get("audiences") or list(self.audiences)
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            causes.append(status.invalid_value("spec.audiences", audiences, "must be strings"))
        if spec.get("boundObjectRef"):
            causes.append(
                status.forbidden_field(
                    "spec.boundObjectRef", "tokens bound to an object are not supported"
                )
            )
        if causes:
            raise StatusError(status.invalid("TokenRequest", name, causes, "authentication.k8s.io"))
        now = time.time()
        token = self.issue(account, audiences, seconds, now)
        expires = datetime.fromtimestamp(int(now) + seconds, UTC)
        return {
            "kind": "TokenRequest",
            "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": format_time(expires)},
        }

    # -- checking ------------------------------------------------------------------------
    def authenticate(self, token: str, now: float | None = None) -> UserInfo | None:
        """The service account behind ``token``, or None (not ours, or not valid)."""
        if len(token) > MAX_TOKEN or token.count(".") != 2:
            return None
        claims = self._verified_claims(token)
        if claims is None:
            return None
        why = self._refusal(claims, time.time() if now is None else now)
        if why:
            log.info("service account token refused: %s", why)
            return None
        info = claims["kubernetes.io"]
        namespace, name = info["namespace"], info["serviceaccount"]["name"]
        return UserInfo(
            f"{SA_PREFIX}{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED_GROUP),
            info["serviceaccount"]["uid"],
            {"authentication.kubernetes.io/credential-id": (f"JTI={claims.get('jti', '')}",)},
        )

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        head, body, signature = token.split(".")
        try:
            header = json.loads(_unb64(head))
            raw = _unb64(signature)
            if not isinstance(header, dict) or header.get("alg") != "ES256" or len(raw) != 64:
                return None
            if header.get("kid") not in (None, self.kid):
                return None
            der = encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            self._public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
            claims = json.loads(_unb64(body))
        except (ValueError, InvalidSignature, RecursionError):
            return None
        return claims if isinstance(claims, dict) else None

    def _refusal(self, claims: dict[str, Any], now: float) -> str:
        if claims.get("iss") != self.issuer:
            return "another issuer"
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or not set(audiences) & set(self.audiences):
            return "not for this API server's audiences"
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or exp <= now:
            return "expired"
        if not isinstance(nbf, int | float) or nbf > now + LEEWAY:
            return "not valid yet"
        info = claims.get("kubernetes.io")
        try:
            namespace, name = info["namespace"], info["serviceaccount"]["name"]  # type: ignore[index]
            uid = info["serviceaccount"]["uid"]  # type: ignore[index]
        except (KeyError, TypeError):
            return "no service account claims"
        if claims.get("sub") != f"{SA_PREFIX}{namespace}:{name}":
            return "subject and service account differ"
        if self._accounts.get((namespace, name)) != uid:
            return f"service account {namespace}/{name} with uid {uid} no longer exists"
        return ""
