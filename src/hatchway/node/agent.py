"""``hatchway node``: the node agent (the kubelet's role).

It registers its Node with the API server and heartbeats it (Node status, and its Lease
in ``kube-node-lease``: :mod:`hatchway.node.lease`), watches the pods bound to
it and runs them in runc containers through :class:`~hatchway.node.pods.PodManager`,
reports their status, finishes graceful deletions, and serves exec/attach/logs to the
API server alone (mutual TLS, :mod:`hatchway.node.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hatchway import pki as pki_module
from hatchway.errors import ApiError, HatchwayError
from hatchway.node.attach import attach
from hatchway.node.events import NodeEvents
from hatchway.node.identity import CallerIdentity
from hatchway.node.lease import NodeLease
from hatchway.node.logs import LogOptions
from hatchway.node.pods import PodManager
from hatchway.node.runtime import DEFAULT_LOG_MAX_BYTES, RuncRuntime
from hatchway.node.runtime_exec import start_exec_helper
from hatchway.node.server import LookupRefusedError, NodeEndpoint, Target
from hatchway.rest import RestClient
from hatchway.session import heap
from hatchway.transport import tls, tlsbuffer
from hatchway.transport.http import HttpLimits, HttpServer
from hatchway.types import ExecOptions

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.32.4-hatchway"


@dataclass
class NodeConfig:
    data_dir: str
    apiserver: str
    node_name: str
    host: str = "127.0.0.1"
    port: int = 10250
    #: The address the API server dials (InternalIP).
    address: str = "127.0.0.1"
    cert: str | None = None
    key: str | None = None
    #: The cluster CA: verifies the API server's serving certificate.
    ca: str | None = None
    #: The node-client CA: the only CA trusted for callers of the node's endpoint.
    client_ca: str | None = None
    #: The one CN the node serves (issued by ``client_ca``).
    apiserver_client_name: str = pki_module.APISERVER_CLIENT_CN
    heartbeat_interval: float = 10.0
    #: The node Lease's renewal period and duration (the kubelet's 10 s and 40 s).
    lease_interval: float = 10.0
    lease_duration: int = 40
    resync_interval: float = 30.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    #: Reaching the API server again after a failure: exponential, with full jitter
    #: (many nodes losing one API server do not all come back at once).
    retry_initial: float = 0.2
    retry_max: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)
    #: One container instance's log file at most (the shim keeps no more, and says so
    #: in the log); the kubelet's containerLogMaxSize, without rotation.
    container_log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    #: The HTTPS endpoint's bounds and timeouts. Every connection comes from the API
    #: server: no per-source cap below the total.
    http_limits: HttpLimits = field(
        default_factory=lambda: HttpLimits(max_connections_per_source=HttpLimits.max_connections)
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class NodeAgent:
    """One node: runtime, pod manager, HTTPS endpoint and the API server loops."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        root = os.path.join(config.data_dir, "node")
        self.runtime = RuncRuntime(root, log_max_bytes=config.container_log_max_bytes)
        self.images = self.runtime.images
        self.manager = PodManager(
            self.runtime,
            self.images,
            on_status=self._report_status,
            on_event=self._emit_event,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            host_ip=config.address,
        )
        self.server: HttpServer | None = None
        self._endpoint: NodeEndpoint | None = None
        self.rest: RestClient | None = None
        self.events: NodeEvents | None = None
        self.lease: NodeLease | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pods: dict[str, dict[str, Any]] = {}  # the API server's view, by uid
        self._dirty = asyncio.Event()
        self._finishing: set[str] = set()
        self._started = time.time()
        self._watch_rv = ""  # the pod watch's last resourceVersion ("" lists again)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Runtime, endpoint, then the API server loops (registration, watch, status)."""
        cfg = self.config
        cert, key, ca, _ = self._credentials()
        await self.start_runtime()
        await self.start_server()
        self.rest = RestClient(
            cfg.apiserver,
            ssl_context=tls.client_context(ca_file=ca, cert_file=cert, key_file=key),
            user_agent=f"hatchway-node/{KUBELET_VERSION}",
        )
        self.events = NodeEvents(self.rest, cfg.node_name)
        self.lease = NodeLease(
            self.rest, cfg.node_name, duration=cfg.lease_duration, interval=cfg.lease_interval
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.events.run()),
            loop.create_task(self.lease.run()),
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._watch_loop()),
            loop.create_task(self._reconcile_loop()),
        ]

    def _emit_event(
        self, pod: dict[str, Any], reason: str, message: str, type_: str, field_path: str
    ) -> None:
        if self.events is not None:  # before start(): nobody to tell yet
            self.events.emit(pod, reason, message, type_=type_, field_path=field_path)

    def _credentials(self) -> tuple[str, str, str, str]:
        """``(cert, key, ca, client_ca)``: the node's own certificate, the cluster CA and
        the node-client CA, from the config or the data directory's PKI."""
        cfg = self.config
        if cfg.cert and cfg.key and cfg.ca and cfg.client_ca:
            # All given (a node of a cluster on several machines): no CA of its own.
            return cfg.cert, cfg.key, cfg.ca, cfg.client_ca
        paths = pki_module.ensure_pki(cfg.data_dir, node_name=cfg.node_name)
        cert = cfg.cert or str(paths.node.cert)
        key = cfg.key or str(paths.node.key)
        ca = cfg.ca or str(paths.ca.cert)
        client_ca = cfg.client_ca or str(paths.node_client_ca.cert)
        return cert, key, ca, client_ca

    async def start_runtime(self) -> None:
        """The built-in image and the pod manager (re-adopts the pods of a previous run)."""
        self.images.ensure_busybox()
        # Exec'd processes an earlier agent left (its exec helper died with it) belong to
        # sessions nobody holds any more: kill them before serving new ones.
        left = await self.runtime.kill_leftover_execs()
        if left:
            log.warning("killed %d exec process tree(s) left by an earlier node agent", left)
        # The first exec should not pay for starting the exec helper (~50 ms).
        start_exec_helper()
        await self.manager.start()

    def endpoint(self, client_ca: str) -> NodeEndpoint:
        """The HTTPS application: exec, attach and logs for the API server's identity,
        as issued by the CA in the file ``client_ca``."""
        return NodeEndpoint(
            caller=CallerIdentity.from_ca(client_ca, self.config.apiserver_client_name),
            lookup=self._lookup,
            start=self._start_process,
            logs=self._logs,
            netns=self._netns,
        )

    async def start_server(self) -> None:
        """Serve :meth:`endpoint` with mutual TLS on the configured address. Client
        certificates are verified against the node-client CA alone: a certificate of the
        cluster CA (every user can get one) fails the handshake. Optional, so that a
        caller without one gets the kubelet's 401 (and a log line) rather than a reset.
        Handshakes refused are logged too."""
        cert, key, _, client_ca = self._credentials()
        # One TLS connection per exec session: no 256 KiB receive buffer each (issue 10).
        # On uvloop the TLS protocol is uvloop's (its buffer malloc'd, only the touched
        # pages resident). No fixed mmap threshold here, unlike the API server: each 256
        # KiB read of a pipe would be an mmap, twice the node's CPU per GiB stdout-ward.
        tlsbuffer.share_receive_buffers()
        self._endpoint = self.endpoint(client_ca)
        self.server = HttpServer(self._endpoint, limits=self.config.http_limits, name="node")
        # No TLS 1.3 session tickets: the API server, the only client, never resumes a
        # session (it keeps connections alive instead), and would hold the two tickets
        # for as long as each exec session's connection lives (~9 KiB each; issue 13).
        ssl = tls.server_context(
            cert, key, client_ca=client_ca, log_refusals="node", session_tickets=0
        )
        await self.server.start(self.config.host, self.config.port, ssl=ssl)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.close()
        if self._endpoint is not None:
            await self._endpoint.trimmer.aclose()
        await self.manager.close()

    async def __aenter__(self) -> NodeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- endpoint callbacks ---------------------------------------------------------------
    def _pod_uid(self, namespace: str, pod: str, uid: str) -> str | None:
        """The uid of the pod a request means (see :mod:`.server`): ``uid`` itself when
        a pod of that name has it, None when the node knows no pod of that name."""
        named = set(self.manager.pods_named(namespace, pod))
        named |= {u for u, p in self._pods.items() if _name(p) == (namespace, pod)}
        if uid:
            if uid in named:
                return uid
            if not named:
                return None
            raise LookupRefusedError(
                409, f"pod {namespace}/{pod} with uid {uid} is not on this node (uid mismatch)"
            )
        if len(named) > 1:
            raise LookupRefusedError(
                409,
                f"{len(named)} pods named {namespace}/{pod} on this node:"
                " the request must name the pod's uid",
            )
        return next(iter(named), None)

    async def _lookup(
        self, namespace: str, pod: str, uid: str, container: str
    ) -> tuple[str | None, bool] | None:
        found = self._pod_uid(namespace, pod, uid)
        if found is None:
            return None
        cid = self.manager.find_container(namespace, pod, container, found)
        if cid is None:
            return (None, False)
        return (cid, await self.manager.container_running(namespace, pod, container, found))

    async def _netns(self, namespace: str, pod: str, uid: str) -> str | None:
        """The pod's network namespace for port-forward (see :class:`NodeEndpoint`)."""
        found = self._pod_uid(namespace, pod, uid)
        if found is None:
            return None
        pid = await self.manager.sandbox_pid(namespace, pod, found)
        return f"/proc/{pid}/ns/net" if pid else ""

    async def _start_process(self, container_id: str, options: ExecOptions) -> Any:
        if options.action == "attach":
            return await attach(self.runtime, container_id, options)
        return await self.runtime.exec(container_id, options)

    async def _logs(self, target: Target, options: LogOptions) -> AsyncIterator[bytes]:
        """The log the target names (raises LogUnavailableError: the kubelet's 400)."""
        uid = self._pod_uid(target.namespace, target.pod, target.uid) or target.uid
        cid, path = await self.manager.log_source(
            target.namespace, target.pod, target.container, uid, previous=options.previous
        )
        return self.runtime.read_logs(
            cid,
            follow=options.follow,
            tail_lines=options.tail_lines,
            limit_bytes=options.limit_bytes,
            since=options.since,
            timestamps=options.timestamps,
            path=path or None,
        )

    # -- API server loops -----------------------------------------------------------------
    def _node_object(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": cfg.node_name,
                "labels": {
                    "kubernetes.io/hostname": cfg.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": platform.machine(),
                    **cfg.labels,
                },
            },
            "spec": {},
            "status": self._node_status(),
        }

    def _node_status(self) -> dict[str, Any]:
        cfg = self.config
        now = _now()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._started))
        return {
            "addresses": [
                {"type": "InternalIP", "address": cfg.address},
                {"type": "Hostname", "address": cfg.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "hatchway node agent is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": started,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "runc",
                "operatingSystem": "linux",
                "architecture": platform.machine(),
                "osImage": platform.platform(),
                "kernelVersion": platform.release(),
            },
            "capacity": {"cpu": str(os.cpu_count() or 1), "pods": "110"},
            "allocatable": {"cpu": str(os.cpu_count() or 1), "pods": "110"},
        }

    async def _register(self) -> None:
        assert self.rest is not None
        name = self.config.node_name
        try:
            await self.rest.create("/api/v1/nodes", self._node_object())
        except ApiError as exc:
            if exc.code != 409:
                raise
        await self._post_heartbeat()
        log.info("node %s registered", name)

    async def _post_heartbeat(self) -> None:
        assert self.rest is not None
        name = self.config.node_name
        await self.rest.patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status()})

    async def _heartbeat_loop(self) -> None:
        registered = False
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            try:
                if not registered:
                    await self._register()
                    registered = True
                else:
                    await self._post_heartbeat()
                backoff.reset()
            except (HatchwayError, OSError) as exc:
                # The API server behind the load balancer died, or the load balancer
                # did: the next try reaches another (a new connection each call;
                # protocol.md 12.3).
                log.warning("heartbeat failed: %s", exc)
                registered = False
            await asyncio.sleep(self.config.heartbeat_interval if registered else backoff.next())

    async def _watch_loop(self) -> None:
        """List the node's pods, then watch from the list's resourceVersion. A watch
        that ends (its API server died behind the load balancer, a timeout) is resumed
        from the last resourceVersion seen, as client-go's reflector does, so no event
        is lost and nothing is listed again; 410 Gone lists again (protocol.md 12.3)."""
        assert self.rest is not None
        selector = {"fieldSelector": f"spec.nodeName={self.config.node_name}"}
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        self._watch_rv = ""
        while True:
            events = 0
            try:
                if not self._watch_rv:
                    self._watch_rv = await self._relist(selector)
                    backoff.reset()
                events = await self._watch_from(selector)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pod watch failed: %s", exc)
                if isinstance(exc, ApiError) and exc.code == 410:
                    self._watch_rv = ""
            if events:
                backoff.reset()
            else:  # failed or ended at once: no tight loop against a failing server
                await asyncio.sleep(backoff.next())

    async def _relist(self, selector: dict[str, str]) -> str:
        assert self.rest is not None
        listing = await self.rest.get("/api/v1/pods", selector)
        self._pods = {_uid(p): p for p in listing.get("items", [])}
        self._dirty.set()
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def _watch_from(self, selector: dict[str, str]) -> int:
        """Watch from ``self._watch_rv`` until the stream ends, moving it on with every
        event (so a cut resumes after the last one); how many events came. An ERROR
        410 clears it: list again."""
        assert self.rest is not None
        events = 0
        params = {**selector, "resourceVersion": self._watch_rv, "allowWatchBookmarks": "true"}
        async for event in self.rest.watch("/api/v1/pods", params):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.warning("pod watch ended: %s", obj.get("message") or obj)
                if obj.get("code") == 410:
                    self._watch_rv = ""
                return events
            events += 1
            self._watch_rv = str(obj.get("metadata", {}).get("resourceVersion") or self._watch_rv)
            if kind == "DELETED":
                self._pods.pop(_uid(obj), None)
            elif kind in ("ADDED", "MODIFIED"):
                self._pods[_uid(obj)] = obj
            else:
                continue  # BOOKMARK: only the resourceVersion
            self._dirty.set()
        return events

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.config.resync_interval)
            self._dirty.clear()
            pods = list(self._pods.values())
            try:
                # Stopping runs in the background: one pod slow to stop (SIGTERM
                # ignored, long grace) must not hold up the others (issue 9).
                await self.manager.reconcile(pods, wait=False)
            except Exception:
                log.exception("reconcile failed")
            for pod in pods:
                meta = pod.get("metadata", {})
                if meta.get("deletionTimestamp") and meta.get("uid") not in self._finishing:
                    self._finishing.add(meta.get("uid", ""))
                    asyncio.get_running_loop().create_task(self._finish_delete(pod))

    async def _finish_delete(self, pod: dict[str, Any]) -> None:
        """Once the containers are gone, remove the pod object for good."""
        assert self.rest is not None
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta.get('namespace', 'default')}/pods/{meta['name']}"
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta.get("uid")},
        }
        try:
            await self.manager.wait_stopped(_uid(pod))
            await self.rest.delete(path, {"gracePeriodSeconds": "0"}, body)
        except ApiError as exc:
            if exc.code not in (404, 409):
                log.warning("final delete of %s failed: %s", path, exc)
        finally:
            self._finishing.discard(meta.get("uid", ""))

    async def _report_status(self, pod: dict[str, Any]) -> None:
        if self.rest is None:
            return
        current = self._pods.get(_uid(pod))
        if current is None:
            return  # deleted, or a new pod of the same name: not this one's status
        key = _name(current)
        path = f"/api/v1/namespaces/{key[0]}/pods/{key[1]}/status"
        body = {"metadata": {"name": key[1], "namespace": key[0]}, "status": pod["status"]}
        try:
            await self.rest.replace(path, body)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("status update of %s/%s failed: %s", *key, exc)
        except (HatchwayError, OSError) as exc:
            log.warning("status update of %s/%s failed: %s", *key, exc)


class Backoff:
    """Delays for retries: a bound doubling from ``initial`` up to ``maximum``, each
    delay drawn uniformly between ``initial / 2`` and the bound (jitter), the bound back
    to ``initial`` on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._bound = initial

    def next(self) -> float:
        delay = random.uniform(self.initial / 2, self._bound)
        self._bound = min(self._bound * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._bound = self.initial


def _uid(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("uid") or "")


def _name(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata", {})
    return (meta.get("namespace", "default"), meta.get("name", ""))


async def cleanup(data_dir: str) -> int:
    """Delete every container of the node in ``data_dir`` (``hatchway down``)."""
    runtime = RuncRuntime(os.path.join(data_dir, "node"))
    count = 0
    for state in await runtime.list():
        with contextlib.suppress(HatchwayError):
            await runtime.delete(state.id, force=True)
            count += 1
    _forget_pods(os.path.join(data_dir, "node", "pods"))
    return count


def _forget_pods(pods_dir: str) -> None:
    if os.path.isdir(pods_dir):
        for name in os.listdir(pods_dir):
            if name.endswith(".json"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(pods_dir, name))


async def run_node(config: NodeConfig, ready: asyncio.Event | None = None) -> None:
    agent = NodeAgent(config)
    await agent.start()
    heap.freeze_startup()  # collections after each session skip start-up's objects
    log.info("node agent %s serving on %s:%d", config.node_name, config.host, agent.port)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await agent.close()
