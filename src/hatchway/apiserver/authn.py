"""Who is asking: client certificates and static bearer tokens (no anonymous access).

    auth = Authenticator(token_file="/etc/hatchway/tokens.csv")
    user = auth.authenticate(ssl_object.getpeercert(), headers.get("authorization"))
    if user is None:
        ...  # answer 401 Unauthorized

``authenticate(peercert, authorization_header) -> UserInfo | None`` tries, in
Kubernetes' order:

1. the client certificate, already verified by the TLS handshake against the cluster CA:
   ``peercert`` is the dict of :meth:`ssl.SSLSocket.getpeercert` (``None`` or ``{}``
   when there is none); the subject's commonName is the user name, each
   organizationName a group. ``client_cert_issuers``, if given, restricts the issuer
   commonNames accepted (for a server whose trust store holds more than the user CA).
2. ``Authorization: Bearer <token>`` against the static token file in Kubernetes'
   format: CSV lines ``token,user,uid[,"group1,group2"]``. Each token is compared with
   :func:`hmac.compare_digest` over SHA-256 digests against every entry (no early exit,
   no length leak). The file is re-read when its mtime, size or inode changes (checked
   at most once a second); a bad reload keeps the previous table and logs why.
3. any other bearer token, by the ``token_authenticators`` in turn (the API server's
   service-account tokens, :mod:`hatchway.apiserver.serviceaccounts`).

Anything else gives ``None``. Every authenticated user gets the group
``system:authenticated``. Tokens are never logged, and errors name only file and line.
A bad token file at start raises :class:`~hatchway.errors.ConfigError` (like Kubernetes,
which refuses to start): a typo must not silently lock anyone in or out.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hatchway.errors import ConfigError
from hatchway.transport import tls

__all__ = [
    "AUTHENTICATED_GROUP",
    "MASTERS_GROUP",
    "Authenticator",
    "TokenEntry",
    "UserInfo",
    "bearer_token",
    "parse_token_file",
    "user_from_peercert",
]

log = logging.getLogger(__name__)

AUTHENTICATED_GROUP = "system:authenticated"
MASTERS_GROUP = "system:masters"
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity, as Kubernetes' user.Info."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))


@dataclass(frozen=True)
class TokenEntry:
    """One line of the token file; ``digest`` is SHA-256 of the token."""

    digest: bytes
    user: UserInfo
    line: int


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED_GROUP in user.groups:
        return user
    return UserInfo(user.name, (*user.groups, AUTHENTICATED_GROUP), user.uid, user.extra)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def parse_token_file(text: str, source: str = "token file") -> list[TokenEntry]:
    """Parse Kubernetes' static token CSV. Raises ConfigError naming the line (never the
    token). Empty tokens are skipped with a warning, as Kubernetes does; duplicate tokens
    keep the first entry. Lines starting with ``#`` are comments (a Hatchway extension)."""
    entries: list[TokenEntry] = []
    seen: set[bytes] = set()
    reader = csv.reader(io.StringIO(text), skipinitialspace=True, strict=True)
    try:
        for record in reader:
            line = reader.line_num
            if not record or (record[0].startswith("#")):
                continue
            entry = _parse_record(record, line, source)
            if entry is None:
                continue
            if entry.digest in seen:
                log.warning("%s line %d: duplicate token ignored", source, line)
                continue
            seen.add(entry.digest)
            entries.append(entry)
    except csv.Error as exc:
        raise ConfigError(f"{source} line {reader.line_num}: malformed CSV") from exc
    return entries


def _parse_record(record: list[str], line: int, source: str) -> TokenEntry | None:
    if len(record) < 3:
        raise ConfigError(
            f"{source} line {line}: needs at least 3 columns (token, user name, user uid),"
            f" found {len(record)}"
        )
    token, name, uid = (record[0].strip(), record[1].strip(), record[2].strip())
    if not token:
        log.warning("%s line %d: empty token ignored", source, line)
        return None
    if not name:
        raise ConfigError(f"{source} line {line}: empty user name")
    groups: tuple[str, ...] = ()
    if len(record) >= 4:
        groups = tuple(g.strip() for g in record[3].split(",") if g.strip())
    user = _with_authenticated(UserInfo(name, groups, uid))
    return TokenEntry(_digest(token), user, line)


def user_from_peercert(
    peercert: Mapping[str, Any] | None, issuers: Collection[str] | None = None
) -> UserInfo | None:
    """The identity in a verified client certificate: CN user, each O a group. ``None``
    unless the subject has exactly one non-empty CN (:func:`tls.peer_identity`)."""
    identity = tls.peer_identity(peercert)
    if identity is None:
        return None
    if issuers is not None:
        issuer_cn = [value for key, value in tls.peer_issuer(peercert) if key == "commonName"]
        if not any(cn in issuers for cn in issuer_cn):
            return None
    name, groups = identity
    return _with_authenticated(UserInfo(name, tuple(groups)))


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive), else None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


class Authenticator:
    """Client-certificate and token-file authentication; see the module docstring."""

    def __init__(
        self,
        token_file: str | os.PathLike[str] | None = None,
        *,
        client_cert_issuers: Collection[str] | None = None,
        reload_interval: float = RELOAD_INTERVAL,
        token_authenticators: Sequence[Callable[[str], UserInfo | None]] = (),
    ) -> None:
        #: Asked in turn for a bearer token the token file does not hold (service
        #: account tokens); each answers None for a token that is not its own.
        self.token_authenticators = tuple(token_authenticators)
        self._token_file = os.fspath(token_file) if token_file is not None else None
        self._issuers = frozenset(client_cert_issuers) if client_cert_issuers else None
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._entries: tuple[TokenEntry, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if self._token_file is not None:
            self._load(initial=True)

    def authenticate(
        self, peercert: Mapping[str, Any] | None, authorization_header: str | None
    ) -> UserInfo | None:
        """The user behind a request, or None (answer 401)."""
        user = user_from_peercert(peercert, self._issuers)
        if user is not None:
            return user
        token = bearer_token(authorization_header)
        if token is None:
            return None
        return self.authenticate_token(token)

    def authenticate_token(self, token: str) -> UserInfo | None:
        """The token file's user for ``token``, else the first token authenticator's."""
        found = self._from_file(token) if self._token_file is not None else None
        for other in self.token_authenticators:
            if found is not None:
                break
            found = other(token)
        return found

    def _from_file(self, token: str) -> UserInfo | None:
        """Look a bearer token up in constant time over the whole table."""
        self._maybe_reload()
        digest = _digest(token)
        found: UserInfo | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.user
        return found

    @property
    def token_count(self) -> int:
        return len(self._entries)

    def _file_stamp(self) -> tuple[int, int, int]:
        assert self._token_file is not None
        st = os.stat(self._token_file)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        if self._token_file is None:
            return
        now = time.monotonic()
        if now - self._checked < self._reload_interval:
            return
        with self._lock:
            if now - self._checked < self._reload_interval:
                return
            self._checked = now
            try:
                self._load(initial=False)
            except (OSError, ConfigError) as exc:
                log.warning(
                    "token file %s not reloaded, keeping the old one: %s", self._token_file, exc
                )

    def _load(self, *, initial: bool) -> None:
        assert self._token_file is not None
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            with open(self._token_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            if initial:
                raise ConfigError(f"cannot read token file {self._token_file}: {exc}") from exc
            raise
        entries = parse_token_file(text, self._token_file)
        self._entries = tuple(entries)
        self._stamp = stamp
        self._checked = time.monotonic()
        if not initial:
            log.info("token file %s reloaded: %d tokens", self._token_file, len(entries))
