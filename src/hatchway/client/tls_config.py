"""The TLS context of a kubeconfig context: what both exec paths (the asyncio client,
:func:`hatchway.client.api.rest_client`, and the blocking one,
:mod:`hatchway.client.blocking`) connect with. No asyncio here."""

from __future__ import annotations

import ssl

from hatchway.client.kubeconfig import ClientConfig
from hatchway.transport import tls


def ssl_context(config: ClientConfig) -> ssl.SSLContext | None:
    """The client context for ``config``'s server; ``None`` for a plain ``http://`` one."""
    if not config.server.startswith("https://"):
        return None
    return tls.client_context(
        ca_data=config.ca_data,
        cert_data=config.client_cert_data,
        key_data=config.client_key_data,
        insecure=config.insecure_skip_tls_verify,
    )
