"""Serving ``pods/portforward`` (protocol.md 6.3).

The caller is already authenticated and authorised (``create`` on ``pods/portforward``,
whatever the method and transport, protocol.md 2.6). Here: load the pod (404), require
its node (400 ``pod NAME does not have a host assigned``), read ``?ports=`` when given
(the WebSocket channel form; 400 in the kubelet's words), require an upgrade request;
then :meth:`~.exec_handler.ExecHandler.connect` does what exec does -- exec admission
(privileged and host-namespace pods are for cluster admins only), a session slot, the
node dialled at ``/portForward/{ns}/{pod}/{uid}``, the audit lines (with the ports the
request names) -- and splices. A WebSocket upgrade offering ``SPDY/3.1+portforward.k8s.io``
(kubectl 1.31+) is the tunnel: the node is asked for SPDY and :mod:`.tunnel` carries
the SPDY bytes inside the client's WebSocket.
"""

from __future__ import annotations

import urllib.parse

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.apiserver import connect, tunnel
from hatchway.apiserver.app import Call
from hatchway.apiserver.exec_handler import Dial, ExecHandler, Session
from hatchway.protocol import handshake
from hatchway.protocol.portforward import parse_ports
from hatchway.transport.http import Response
from hatchway.types import ExecOptions

#: What the audit lines say of a port-forward's (absent) command and streams.
_OPTIONS = ExecOptions(stdout=False, stderr=False, action="portforward")


class PortForwardHandler:
    """The handler for ``pods/portforward`` (see module docstring); shares the exec
    handler's admission, session slots, node dial and audit."""

    def __init__(self, connector: ExecHandler) -> None:
        self.connector = connector

    async def __call__(self, call: Call) -> Response:
        info, request = call.info, call.request
        if request.method not in ("GET", "POST"):
            raise StatusError(status.method_not_allowed("pods/portforward", request.method.lower()))
        pod = await self.connector.store.get("pods", info.namespace, info.name)
        if not (pod.get("spec") or {}).get("nodeName"):
            raise connect.bad_request(f"pod {info.name} does not have a host assigned")
        ports: list[int] = []
        if "ports" in request.query:
            try:
                ports = parse_ports(request.query["ports"])
            except ValueError as exc:
                raise connect.bad_request(str(exc)) from None
        if not (request.is_upgrade and request.header("upgrade")):
            raise connect.bad_request(connect.UPGRADE_REQUIRED)
        dial: Dial | None = None
        if tunnel.requested(request.headers):
            try:
                key = handshake.check_websocket_request(request.method, request.headers)
            except handshake.HandshakeRefusedError as exc:
                return Response(exc.status, list(exc.headers), exc.body)
            dial = tunnel.TunnelDial(key, self.connector.proxy.idle_timeout)
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        target = connect.port_forward_target(str(meta.get("namespace")), info.name, uid)
        if ports:
            target += "?" + urllib.parse.urlencode({"ports": ",".join(map(str, ports))})
        session = Session(call, _OPTIONS, uid, tuple(ports))
        return await self.connector.connect(call, pod, target, session, dial)
