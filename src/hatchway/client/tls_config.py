"""The TLS context of a kubeconfig context: what both exec paths connect with, an
``ssl.SSLContext`` for the asyncio client (:func:`hatchway.client.api.rest_client`), the
same settings on the C context under it for the blocking one (:mod:`hatchway.client.blocking`,
transport/tls_core.py: no ``ssl`` module imported). No asyncio here."""

from __future__ import annotations

from hatchway.client.kubeconfig import ClientConfig
from hatchway.transport import tls_core

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any


def ssl_context(config: ClientConfig) -> ssl.SSLContext | None:
    """The client context for ``config``'s server; ``None`` for a plain ``http://`` one."""
    if not config.server.startswith("https://"):
        return None
    from hatchway.transport import tls  # the ssl module: the asyncio paths

    return tls.client_context(**_settings(config))


def core_context(config: ClientConfig) -> Any | None:
    """:func:`ssl_context`'s settings on an ``_ssl._SSLContext`` (transport/tls_core.py),
    for the blocking client's memory BIOs; ``None`` for a plain ``http://`` server."""
    if not config.server.startswith("https://"):
        return None
    return tls_core.client_context(**_settings(config))


def _settings(config: ClientConfig) -> dict[str, Any]:
    """The kubeconfig's TLS material, as both kinds of context take it."""
    return {
        "ca_data": config.ca_data,
        "cert_data": config.client_cert_data,
        "key_data": config.client_key_data,
        "insecure": config.insecure_skip_tls_verify,
    }
