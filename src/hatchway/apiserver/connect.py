"""Exec and attach requests before any byte goes to a node: options, validation, target.

Everything here is decided *before* dialing the node, and answered with a Status and
the right code (protocol.md 2.1, 2.2 and 7):

* options come from the query (:func:`hatchway.protocol.exec_options.decode`) the API
  server way or, for the legacy ``/proxy/minions/{node}/exec/{ns}/{pod}/{container}``
  path, in either spelling (:func:`~hatchway.protocol.exec_options.decode_legacy`);
* :func:`validate` checks, in this order: the pod has a node (400 ``pod NAME does not
  have a host assigned``), the container (defaulting when the pod has exactly one;
  400 ``a container name must be specified for pod NAME[, choose one of: [a b]]``;
  400 ``container NAME is not valid for pod POD``), that the pod and container can
  still run something (400), a command for exec, at least one stream;
* :func:`kubelet_target` is the node's URL for it: ``/exec/{ns}/{pod}/{uid}/{container}``
  (the kubelet's 5-part form: the node answers only from the pod with that uid, never
  from another pod that reuses the name, issue 9) with the query in the kubelet's
  spelling (``command=...`` repeated, ``error``/``input``/``output``/``tty`` = ``1``
  when on, keys sorted as Go's ``url.Values.Encode`` does, :mod:`exec_options`);
  :func:`port_forward_target` is the same for port-forward
  (``/portForward/{ns}/{pod}/{uid}``, protocol.md 6.3; :mod:`.portforward`).

Not running: the Kubernetes API server does not check it and the kubelet answers
``container not found ("NAME")`` (500) for a container that is not running. Hatchway
answers earlier with 400 BadRequest when the pod status already shows it: a completed
pod gets kubectl's text ``cannot exec into a container in a completed pod; current phase
is Succeeded``, a waiting container the kubelet's log text ``container "NAME" in pod
"POD" is waiting to start: REASON``, a terminated one ``container not found ("NAME")``.
A pod whose node has not reported statuses yet goes to the node, which decides.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.protocol import exec_options
from hatchway.types import ExecOptions

NO_COMMAND = "you must specify at least one command for the container"
NO_STREAM = "you must specify at least 1 of stdin, stdout, stderr"
UPGRADE_REQUIRED = "Upgrade request required"
DEFAULT_KUBELET_PORT = 10250


def bad_request(message: str) -> StatusError:
    return StatusError(status.bad_request(message))


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Init, regular, then ephemeral container names (the order of the error text)."""
    spec = pod.get("spec") or {}
    names: list[str] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        names.extend(str(c.get("name") or "") for c in spec.get(key) or () if c.get("name"))
    return names


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def choose_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container to use, or StatusError in Kubernetes' words. Without one asked for:
    the pod's only regular container, whatever its init containers (the API server's
    rule; kubectl's annotation rule is the client's, :mod:`hatchway.client.pods`)."""
    name = _pod_name(pod)
    spec = pod.get("spec") or {}
    if not requested:
        regular = [str(c.get("name") or "") for c in spec.get("containers") or ()]
        if len(regular) == 1:
            return regular[0]
        text = f"a container name must be specified for pod {name}"
        if regular:
            text += f", choose one of: [{' '.join(regular)}]"
            init = [str(c.get("name") or "") for c in spec.get("initContainers") or ()]
            if init:
                text += f" or one of the init containers: [{' '.join(init)}]"
        raise bad_request(text)
    if requested not in container_names(pod):
        raise bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def _check_running(pod: Mapping[str, Any], container: str, action: str) -> None:
    pod_status = pod.get("status") or {}
    phase = pod_status.get("phase")
    if phase in ("Succeeded", "Failed"):
        verb = "exec into" if action == "exec" else "attach"
        raise bad_request(f"cannot {verb} a container in a completed pod; current phase is {phase}")
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in pod_status.get(key) or ():
            if cs.get("name") != container:
                continue
            state = cs.get("state") or {}
            if "running" in state or not state:
                return
            if "waiting" in state:
                why = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
                raise bad_request(
                    f'container "{container}" in pod "{_pod_name(pod)}" is waiting to start: {why}'
                )
            raise bad_request(f'container not found ("{container}")')


def validate(pod: Mapping[str, Any], options: ExecOptions) -> ExecOptions:
    """The options with the container resolved, or StatusError (400) saying why not."""
    name = _pod_name(pod)
    if not (pod.get("spec") or {}).get("nodeName"):
        raise bad_request(f"pod {name} does not have a host assigned")
    container = choose_container(pod, options.container)
    _check_running(pod, container, options.action)
    if options.action == "exec" and not options.command:
        raise bad_request(NO_COMMAND)
    for number, arg in enumerate(options.command if options.action == "exec" else ()):
        if "\0" in arg:  # execve() ends each argument at its first NUL: it cannot be sent
            raise bad_request(f"command argument {number} contains a NUL byte")
    if not options.any_stream:
        raise bad_request(NO_STREAM)
    return options._replace(container=container)


def _segments(*parts: str) -> str:
    quote = urllib.parse.quote
    return "/".join(quote(part, safe="") for part in parts)


def kubelet_target(namespace: str, pod: str, uid: str, options: ExecOptions) -> str:
    """Path and query on the node for this exec/attach of the pod with ``uid``
    (kubelet vocabulary)."""
    path = "/" + _segments(options.action, namespace, pod, uid, options.container)
    query = exec_options.encode(options, exec_options.KUBELET)
    return f"{path}?{query}" if query else path


def port_forward_target(namespace: str, pod: str, uid: str) -> str:
    """The node's path for a port-forward into the pod with ``uid`` (kubelet form)."""
    return "/" + _segments("portForward", namespace, pod, uid)


@dataclass(frozen=True)
class NodeAddress:
    """Where the API server dials a node agent: its kubelet endpoint's host and port."""

    host: str
    port: int

    def url(self, target: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{target}"


def node_address(node: Mapping[str, Any]) -> NodeAddress:
    """Where a node agent listens: ``status.addresses`` (InternalIP, else Hostname) and
    ``status.daemonEndpoints.kubeletEndpoint.Port`` (default 10250)."""
    node_status = node.get("status") or {}
    addresses = node_status.get("addresses") or []
    host = ""
    for wanted in ("InternalIP", "ExternalIP", "Hostname"):
        host = next((a.get("address", "") for a in addresses if a.get("type") == wanted), "")
        if host:
            break
    if not host:
        name = str((node.get("metadata") or {}).get("name") or "")
        raise StatusError(
            status.internal_error(f"node {name!r} has no address in status.addresses")
        )
    endpoints = node_status.get("daemonEndpoints") or {}
    port = (endpoints.get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
    return NodeAddress(str(host), int(port))
