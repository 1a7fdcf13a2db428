"""kubeconfig, read as kubectl (client-go ``clientcmd``) reads it.

Loading: an explicit path, else every file of ``KUBECONFIG`` (``os.pathsep``-separated,
duplicates dropped, missing files skipped unless all are missing), else
``~/.kube/config``. Files merge as client-go merges them: for clusters, users and
contexts the first file to define a name wins, and the first non-empty
``current-context`` wins. Relative file references (``certificate-authority``,
``client-certificate``, ``client-key``, ``tokenFile``, an ``exec`` plugin's command
with a ``/`` in it) are resolved against the directory of the file that holds them, at
load time. A user whose credential comes from an ``exec`` plugin gets it when its context
is loaded (client/credential_plugin.py).

Nothing secret appears in an error message or a ``repr``: YAML errors carry only the line
and column, never the offending text.

This module is the public face; file reading and merging live in ``kubeconfig_file``,
writing (``merge_context``, ``remove_context``, ``use_context``) in ``kubeconfig_write``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from hatchway.client.kubeconfig_file import (
    MergedConfig,
    dump_document,
    encode_data,
    home_dir,
    kubeconfig_paths,
    load_merged,
    read_document,
    to_document,
)
from hatchway.errors import ConfigError
from hatchway.transport.httpurl import split_url
from hatchway.types import named_tuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hatchway.client.kubeconfig_write import (
        default_write_path,
        merge_context,
        remove_context,
        use_context,
    )

#: Re-exported from kubeconfig_write on first use: reading (every exec) needs none of it.
_WRITERS = frozenset({"default_write_path", "merge_context", "remove_context", "use_context"})


def __getattr__(name: str) -> Any:
    if name in _WRITERS:
        from hatchway.client import kubeconfig_write

        return getattr(kubeconfig_write, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DATA_OMITTED = "DATA+OMITTED"
REDACTED = "REDACTED"


@named_tuple
class ClientConfig:
    """Everything a client needs to reach one API server as one user (immutable; a
    named tuple rather than a frozen dataclass, which costs ~1 ms more to build at import,
    on every ``hatchway exec``)."""

    server: str
    namespace: str = "default"
    ca_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    context_name: str = ""
    cluster_name: str = ""
    user_name: str = ""

    def __repr__(self) -> str:
        def shown(value: object) -> str:
            return REDACTED if value else repr(value)

        def size(value: bytes | None) -> str:
            return f"<{len(value)} bytes>" if value else repr(value)

        return (
            f"ClientConfig(server={self.server!r}, namespace={self.namespace!r}, "
            f"context_name={self.context_name!r}, cluster_name={self.cluster_name!r}, "
            f"user_name={self.user_name!r}, ca_data={size(self.ca_data)}, "
            f"insecure_skip_tls_verify={self.insecure_skip_tls_verify!r}, "
            f"tls_server_name={self.tls_server_name!r}, "
            f"client_cert_data={size(self.client_cert_data)}, "
            f"client_key_data={shown(self.client_key_data)}, token={shown(self.token)}, "
            f"username={self.username!r}, password={shown(self.password)})"
        )

    def __str__(self) -> str:
        return self.__repr__()


# ------------------------------------------------------------------ client config


def load_kubeconfig(
    path: str | None = None,
    *,
    context: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> ClientConfig:
    """The client configuration of ``context`` (default: the current context)."""
    return client_config(load_merged(path, env=env), context)


def client_config(merged: MergedConfig, context: str | None = None) -> ClientConfig:
    ctx_name = context or merged.current_context
    if not ctx_name:
        raise ConfigError(
            "no current context is set in the kubeconfig "
            f"({os.pathsep.join(merged.files)}); choose one with --context"
        )
    ctx = merged.contexts.get(ctx_name)
    if ctx is None:
        raise ConfigError(f'context "{ctx_name}" not found in the kubeconfig')
    cluster_name = _str(ctx.get("cluster"))
    if not cluster_name:
        raise ConfigError(f'context "{ctx_name}" names no cluster')
    if cluster_name not in merged.clusters:
        raise ConfigError(f'cluster "{cluster_name}" was not found for context "{ctx_name}"')
    user_name = _str(ctx.get("user"))
    if user_name and user_name not in merged.users:
        raise ConfigError(f'user "{user_name}" was not found for context "{ctx_name}"')
    cluster = merged.clusters[cluster_name]
    user = merged.users.get(user_name, {})
    tls = _cluster_tls(cluster_name, cluster)
    auth = _user_auth(user_name, user)
    if user.get("exec") and not (auth["token"] or auth["client_cert_data"] or auth["username"]):
        # A static credential comes first, as in client-go (its plugin round tripper
        # leaves a request that already has an Authorization header alone).
        from hatchway.client import credential_plugin

        auth.update(credential_plugin.run(user["exec"], cluster, f'user "{user_name}"'))
    has_tls = bool(
        tls["ca_data"] or auth["client_cert_data"] or tls["insecure_skip_tls_verify"]
    ) or bool(tls["tls_server_name"])
    return ClientConfig(
        server=_server_url(cluster_name, cluster, has_tls),
        namespace=_str(ctx.get("namespace")) or "default",
        context_name=ctx_name,
        cluster_name=cluster_name,
        user_name=user_name,
        **tls,
        **auth,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _server_url(cluster_name: str, cluster: dict[str, Any], has_tls: bool) -> str:
    server = _str(cluster.get("server")).strip()
    if not server:
        raise ConfigError(f'no server found for cluster "{cluster_name}"')
    if "://" not in server:
        # rest.DefaultServerURL: a bare host:port gets https when TLS is configured.
        server = ("https://" if has_tls else "http://") + server
    try:
        parts = split_url(server)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.host:
        raise ConfigError(f'cluster "{cluster_name}" has an invalid server URL')
    return server.rstrip("/")


_SERVER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")


def _cluster_tls(name: str, cluster: dict[str, Any]) -> dict[str, Any]:
    ca = _data_or_file(cluster, "certificate-authority", f'cluster "{name}"')
    insecure = cluster.get("insecure-skip-tls-verify") is True
    if insecure and ca:
        raise ConfigError(
            f'cluster "{name}": specifying a root certificates file with the insecure '
            "flag is not allowed"
        )
    if _str(cluster.get("proxy-url")):
        # kubectl would tunnel through it; connecting around a proxy the file names is
        # not what its author asked for, so say so instead.
        raise ConfigError(
            f'cluster "{name}" sets proxy-url, which hatchway does not support: '
            "remove it to connect to the server directly"
        )
    server_name = _str(cluster.get("tls-server-name")) or None
    if server_name is not None and not set(server_name) <= _SERVER_NAME_CHARS:
        # A DNS name or an IP address: SNI and the certificate check take nothing else.
        raise ConfigError(f'cluster "{name}" has an invalid tls-server-name {server_name!r}')
    return {
        "ca_data": ca,
        "insecure_skip_tls_verify": insecure,
        "tls_server_name": server_name,
    }


def _user_auth(name: str, user: dict[str, Any]) -> dict[str, Any]:
    where = f'user "{name}"'
    cert = _data_or_file(user, "client-certificate", where)
    key = _data_or_file(user, "client-key", where)
    if bool(cert) != bool(key):
        missing = "client-key" if cert else "client-certificate"
        missing = f"{missing}-data or {missing}"
        raise ConfigError(f"{missing} must be specified for {where} to use a client certificate")
    token = _str(user.get("token")) or None
    if not token and _str(user.get("tokenFile")):
        token = _token_file(user["tokenFile"], where)
    username = _str(user.get("username")) or None
    password = _str(user.get("password")) or None
    if token and (username or password):
        raise ConfigError(
            f"more than one authentication method found for {where}; "
            "found [token basicAuth], only one is allowed"
        )
    if user.get("exec") and user.get("auth-provider"):
        raise ConfigError(f"{where}: exec and auth-provider cannot be used together")
    if user.get("exec"):
        from hatchway.client import credential_plugin

        credential_plugin.check(user["exec"], where)  # run by client_config if needed
    elif user.get("auth-provider") and not (cert or token or username):
        # kubectl's removed gcp/azure providers, or oidc: sending the requests without a
        # credential would only come back as "You must be logged in", no reason given.
        raise ConfigError(
            f"{where} gets its credential from an auth-provider, which hatchway does not "
            "run: give it an exec plugin, a token or a client certificate "
            "(kubectl config set-credentials NAME --token=... or --client-certificate=...)"
        )
    return {
        "client_cert_data": cert,
        "client_key_data": key,
        "token": token,
        "username": username,
        "password": password,
    }


def _token_file(path: str, where: str) -> str | None:
    try:
        return _read_ref(path, "tokenFile", where).decode("ascii").strip() or None
    except UnicodeDecodeError:
        raise ConfigError(f"tokenFile {path} for {where} does not hold a token") from None


def _data_or_file(section: dict[str, Any], key: str, where: str) -> bytes | None:
    """``<key>-data`` (base64) or the file ``<key>``; both at once is an error, as in
    client-go's validation."""
    data = _str(section.get(f"{key}-data"))
    ref = _str(section.get(key))
    if data and ref:
        raise ConfigError(f"{key}-data and {key} are both specified for {where}")
    if data:
        return decode_data(data, f"{key}-data of {where}")
    if ref:
        return _read_ref(ref, key, where)
    return None


def decode_data(value: str, what: str) -> bytes:
    """Standard base64 as Go's JSON decoder takes it (line breaks ignored)."""
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not valid base64") from None


def _read_ref(path: str, key: str, where: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"unable to read {key} {path} for {where}: {e.strerror or e}") from None


# ------------------------------------------------------------------------- views


def config_view(
    path: str | None = None,
    minify: bool = False,
    raw: bool = False,
    *,
    context: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """What ``kubectl config view`` prints, as a dict: data fields become
    ``DATA+OMITTED`` and tokens (and, beyond kubectl, passwords) ``REDACTED`` unless
    ``raw``; ``minify`` keeps only the current context and what it uses. File
    references are shown as written, as kubectl shows them."""
    merged = load_merged(path, env=env, allow_missing=True, resolve_paths=False)
    if context:
        merged.current_context = context
    if minify:
        _minify(merged)
    doc = to_document(merged)
    if not raw:
        _redact(doc)
    return doc


def _minify(merged: MergedConfig) -> None:
    name = merged.current_context
    if not name:
        raise ConfigError("current-context must exist in order to minify")
    ctx = merged.contexts.get(name)
    if ctx is None:
        raise ConfigError(f"cannot locate context {name}")
    merged.contexts = {name: ctx}
    for key, plural in (("cluster", "clusters"), ("user", "users")):
        ref = _str(ctx.get(key))
        section = merged.section(plural)
        if ref and ref not in section:
            raise ConfigError(f"cannot locate {key} {ref}")
        kept = {ref: section[ref]} if ref else {}
        setattr(merged, plural, kept)


def _redact(doc: dict[str, Any]) -> None:
    for item in doc["clusters"]:
        if item["cluster"].get("certificate-authority-data"):
            item["cluster"]["certificate-authority-data"] = DATA_OMITTED
    for item in doc["users"]:
        user = item["user"]
        for key in ("client-certificate-data", "client-key-data"):
            if user.get(key):
                user[key] = DATA_OMITTED
        for key in ("token", "password"):
            if user.get(key):
                user[key] = REDACTED


def render_kubeconfig(
    name: str,
    server: str,
    ca_pem: bytes | str,
    cert_pem: bytes | str | None = None,
    key_pem: bytes | str | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> str:
    """A self-contained kubeconfig (``*-data`` fields), as ``kubeadm kubeconfig user``
    prints one; cluster, user and context are all called ``name``."""
    user: dict[str, Any] = {}
    if cert_pem is not None:
        user["client-certificate-data"] = encode_data(cert_pem)
    if key_pem is not None:
        user["client-key-data"] = encode_data(key_pem)
    if token:
        user["token"] = token
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "clusters": [
            {
                "cluster": {"certificate-authority-data": encode_data(ca_pem), "server": server},
                "name": name,
            }
        ],
        "contexts": [{"context": context, "name": name}],
        "current-context": name,
        "kind": "Config",
        "preferences": {},
        "users": [{"name": name, "user": user}],
    }
    return dump_document(doc)


__all__ = [
    "DATA_OMITTED",
    "REDACTED",
    "ClientConfig",
    "MergedConfig",
    "client_config",
    "config_view",
    "decode_data",
    "default_write_path",
    "dump_document",
    "encode_data",
    "home_dir",
    "kubeconfig_paths",
    "load_kubeconfig",
    "load_merged",
    "merge_context",
    "read_document",
    "remove_context",
    "render_kubeconfig",
    "to_document",
    "use_context",
]
