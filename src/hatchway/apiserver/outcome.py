"""A finished session's exit code, asked of the node, for the audit end line.

The API server never parses the stream it splices, so it learns how a session ended
from the node: the upgrade carried the request id (``Audit-ID``), and when the splice
ends :meth:`OutcomeClient.fetch` asks ``GET /sessions/{id}`` on the same node
(:mod:`hatchway.node.sessions`), on a pooled mutual-TLS connection and with a short
deadline: this happens after the session, never on its critical path. The answer is
``(exit_code, "")`` or ``(None, why it is not known)``; nothing here raises.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any

from hatchway.apiserver.connect import NodeAddress
from hatchway.errors import HatchwayError
from hatchway.protocol import peer_json
from hatchway.transport.http import HttpClient

__all__ = ["DEFAULT_TIMEOUT", "OutcomeClient"]

DEFAULT_TIMEOUT = 2.0
#: The node's answer is a small JSON object; anything bigger is not one.
MAX_ANSWER = 4096


def _parse(body: bytes) -> tuple[int | None, str]:
    try:
        answer: Any = peer_json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, "the node's answer is not JSON"
    if not isinstance(answer, dict):
        return None, "the node's answer is not a JSON object"
    code, error = answer.get("exitCode"), answer.get("error")
    if answer.get("finished") is not True:
        return None, "the session had not ended on the node"
    if isinstance(code, int) and not isinstance(code, bool):
        return code, ""
    if isinstance(error, str) and error:
        return None, f"the node reported no exit code: {error[:512]}"
    return None, "the node reported no exit code"


class OutcomeClient:
    """Asks nodes how sessions ended (see module docstring)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: HttpClient | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.timeout = timeout
        #: The pool of kept-alive node connections (shared with the exec proxy, which
        #: sends the next session's upgrade on the connection a fetch left).
        self.http_client = http_client if http_client is not None else HttpClient()
        self._http = self.http_client

    async def fetch(self, endpoint: NodeAddress, request_id: str) -> tuple[int | None, str]:
        """The exit code of the session ``request_id`` on ``endpoint``, or why not."""
        url = endpoint.url("/sessions/" + urllib.parse.quote(request_id, safe=""))
        try:
            answer = await self._http.request(
                "GET",
                url,
                ssl=self.ssl_context,
                timeout=self.timeout,
                max_body=MAX_ANSWER,
            )
        except TimeoutError:
            return None, "the node did not answer in time"
        except (OSError, ssl.SSLError, HatchwayError) as exc:
            return None, f"the node could not be asked: {exc}"
        if answer.status == 404:
            return None, "the node holds no outcome for this session"
        if answer.status != 200:
            return None, f"the node answered {answer.status}"
        return _parse(answer.body)

    async def aclose(self) -> None:
        await self._http.close()
