"""``hatchway apiserver``: configuration, wiring, start and stop.

    config = ApiServerConfig(data_dir="/var/lib/hatchway", port=6443)
    server = ApiServer(config)
    await server.start()          # PKI ensured, store opened and seeded, HTTPS listening
    ...server.port...
    await server.close()

or ``await run_apiserver(config, ready)`` to serve until cancelled. Paths left ``None``
default to the data directory's PKI (``DATA_DIR/pki``, created by
:func:`hatchway.pki.ensure_pki` when missing), the SQLite store ``DATA_DIR/hatchway.db``
and the audit log ``DATA_DIR/audit.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import ssl
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hatchway import pki
from hatchway.api.status import StatusError
from hatchway.apiserver.app import ApiApp
from hatchway.apiserver.audit import AuditLogger
from hatchway.apiserver.authn import Authenticator
from hatchway.apiserver.bootstrap import RBAC_RESOURCES, PolicyCache, seed
from hatchway.apiserver.events import COLLECT_INTERVAL as EVENT_EXPIRY_INTERVAL
from hatchway.apiserver.events import EventStore
from hatchway.apiserver.events_v1 import with_events_v1
from hatchway.apiserver.exec_handler import ExecHandler, SessionLimits
from hatchway.apiserver.leader import IdentityLease, LeaderElector, LeaderTimings, process_identity
from hatchway.apiserver.logs import LogHandler
from hatchway.apiserver.namespaces import NamespaceController, is_terminating
from hatchway.apiserver.nodes import NodeMonitor
from hatchway.apiserver.outcome import DEFAULT_TIMEOUT as OUTCOME_TIMEOUT
from hatchway.apiserver.outcome import OutcomeClient
from hatchway.apiserver.pod_security import PodSecurityAdmission
from hatchway.apiserver.portforward import PortForwardHandler
from hatchway.apiserver.proxy import ExecProxy
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.apiserver.rest_handlers import ResourceHandler
from hatchway.apiserver.reviews import ReviewHandler
from hatchway.apiserver.scheduler import Scheduler
from hatchway.apiserver.serviceaccounts import (
    ServiceAccountTokens,
    ensure_default,
    load_or_create_key,
)
from hatchway.apiserver.slots import SlotLedger
from hatchway.session import heap
from hatchway.session.heap import HeapTrimmer
from hatchway.store.base import Store
from hatchway.store.etcd import EtcdStore
from hatchway.store.etcdclient import EtcdClient
from hatchway.store.sqlite import SqliteStore
from hatchway.transport import tls
from hatchway.transport.http import HttpClient, HttpLimits, HttpServer

log = logging.getLogger(__name__)

PathArg = str | os.PathLike[str] | None


@dataclass
class ApiServerConfig:
    """Everything ``hatchway apiserver`` can be told. ``None`` paths use the defaults
    under ``data_dir`` (see module docstring)."""

    data_dir: str | os.PathLike[str]
    host: str = "127.0.0.1"
    port: int = 6443
    tls_cert: PathArg = None
    tls_key: PathArg = None
    client_ca: PathArg = None
    token_file: PathArg = None
    audit_log: PathArg = None
    kubelet_client_cert: PathArg = None
    kubelet_client_key: PathArg = None
    kubelet_ca: PathArg = None
    store_path: PathArg = None
    #: etcd client URLs; empty keeps SQLite in the data directory (protocol.md 9).
    etcd_servers: tuple[str, ...] = ()
    etcd_cafile: PathArg = None
    etcd_certfile: PathArg = None
    etcd_keyfile: PathArg = None
    etcd_prefix: str = "/registry"
    #: Seconds between compactions of etcd's history (0: never), as kube-apiserver's
    #: ``--etcd-compaction-interval``.
    etcd_compaction_interval: float = 300.0
    #: The service-account token signing key (created when missing): default
    #: ``DATA_DIR/pki/service-account.key``.
    service_account_key: PathArg = None
    #: Extra SANs for the API server certificate when it is created here.
    apiserver_hosts: tuple[str, ...] = ()
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    exec_limits: SessionLimits = field(default_factory=SessionLimits)
    #: Concurrent ``logs -f`` streams per user and in total.
    log_follow_limits: SessionLimits = field(default_factory=SessionLimits)
    #: The node's answer to a forwarded exec upgrade must come within this.
    exec_handshake_timeout: float = 30.0
    #: A spliced exec session where nothing moved either way for this long is cut.
    exec_idle_timeout: float = 4 * 3600.0
    #: Asking the node how a session ended (for the audit event), after the splice.
    outcome_timeout: float = OUTCOME_TIMEOUT
    #: Send an exec upgrade on a kept-alive connection to its node when one is pooled
    #: (one the last outcome fetch left), rather than dialling a new one each time.
    reuse_node_connections: bool = True
    #: glibc's mmap threshold for the serving process, fixed (see
    #: :func:`fix_mmap_threshold`); 0 leaves glibc's dynamic default.
    mmap_threshold: int = 128 * 1024
    #: A node whose heartbeat did not change for this long becomes NotReady (Unknown).
    node_monitor_grace: float = 40.0
    node_monitor_interval: float = 5.0
    scheduler_interval: float = 5.0
    #: Leader election of the controllers that run once per cluster (protocol.md 11.2):
    #: client-go's lease duration, renew deadline and retry period.
    leader_timings: LeaderTimings = field(default_factory=LeaderTimings)
    #: This server's identity Lease (protocol.md 11.3): how long it lasts unrenewed (a
    #: crashed server's session slots are free after this), how often it is renewed.
    identity_lease_duration: float = 60.0
    identity_renew_interval: float = 10.0
    #: holderIdentity of this process; empty: ``<hostname>_<uuid>``.
    identity: str = ""
    #: Count session slots across every API server on the store (protocol.md 11.4).
    #: None: on etcd or a store handed in (which others may share), off on the SQLite
    #: file, which only this process opens: there it would cost a write per session.
    cluster_slots: bool | None = None

    def scaled(self, factor: float) -> ApiServerConfig:
        """This configuration with its connection and exec timeouts (``http_limits``'s,
        ``exec_*_timeout``, ``outcome_timeout``) multiplied by ``factor``, for a slow or
        loaded machine (``hatchway apiserver --timeout-scale``). The node monitor and
        scheduler periods are not timeouts and stay."""
        return replace(
            self,
            http_limits=self.http_limits.scaled(factor),
            exec_handshake_timeout=self.exec_handshake_timeout * factor,
            exec_idle_timeout=self.exec_idle_timeout * factor,
            outcome_timeout=self.outcome_timeout * factor,
        )


@dataclass(frozen=True)
class _Paths:
    tls_cert: Path
    tls_key: Path
    client_ca: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    kubelet_ca: Path
    store: Path
    audit: Path | None


def _resolve(config: ApiServerConfig) -> _Paths:
    data = Path(config.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    needed = (
        config.tls_cert,
        config.tls_key,
        config.client_ca,
        config.kubelet_client_cert,
        config.kubelet_client_key,
        config.kubelet_ca,
    )
    bundle = None
    if any(p is None for p in needed):
        bundle = pki.ensure_pki(data, apiserver_hosts=config.apiserver_hosts)

    def pick(given: PathArg, default: Any) -> Path:
        return Path(given) if given is not None else Path(default)

    return _Paths(
        tls_cert=pick(config.tls_cert, bundle and bundle.apiserver.cert),
        tls_key=pick(config.tls_key, bundle and bundle.apiserver.key),
        client_ca=pick(config.client_ca, bundle and bundle.ca.cert),
        kubelet_client_cert=pick(
            config.kubelet_client_cert, bundle and bundle.apiserver_kubelet_client.cert
        ),
        kubelet_client_key=pick(
            config.kubelet_client_key, bundle and bundle.apiserver_kubelet_client.key
        ),
        kubelet_ca=pick(config.kubelet_ca, bundle and bundle.ca.cert),
        store=pick(config.store_path, data / "hatchway.db"),
        audit=Path(config.audit_log) if config.audit_log is not None else data / "audit.log",
    )


def _etcd_store(config: ApiServerConfig) -> EtcdStore:
    """The store on etcd (protocol.md 10.1): mutual TLS when a client cert is given."""
    ctx = None
    if config.etcd_cafile or config.etcd_certfile:
        ctx = tls.client_context(
            ca_file=config.etcd_cafile, cert_file=config.etcd_certfile, key_file=config.etcd_keyfile
        )
    client = EtcdClient(list(config.etcd_servers), HttpClient(), ssl_context=ctx)
    return EtcdStore(
        client, prefix=config.etcd_prefix, compaction_interval=config.etcd_compaction_interval
    )


class ApiServer:
    """One API server: store, handlers, HTTPS listener and background loops."""

    def __init__(self, config: ApiServerConfig, *, store: Store | None = None) -> None:
        self.config = config
        self._given_store = store
        self.store: Store | None = store
        self.http: HttpServer | None = None
        self.outcomes: OutcomeClient | None = None
        self.trimmer = HeapTrimmer()
        self.scheduler: Scheduler | None = None
        self.namespaces: NamespaceController | None = None
        self.tokens: ServiceAccountTokens | None = None
        self.events: EventStore | None = None
        self.node_monitor: NodeMonitor | None = None
        self.identity: IdentityLease | None = None
        self.elector: LeaderElector | None = None
        self.ledger: SlotLedger | None = None
        self.audit: AuditLogger | None = None
        self.paths: _Paths | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        assert self.http is not None, "start() first"
        return self.http.port

    async def start(self) -> None:
        config = self.config
        paths = self.paths = _resolve(config)
        if self.store is None:
            self.store = _etcd_store(config) if config.etcd_servers else SqliteStore(paths.store)
        store = self.store
        await seed(store)
        self.audit = AuditLogger(paths.audit) if paths.audit is not None else None
        server_ctx = tls.server_context(paths.tls_cert, paths.tls_key, client_ca=paths.client_ca)
        kubelet_ctx = tls.client_context(
            ca_file=paths.kubelet_ca,
            cert_file=paths.kubelet_client_cert,
            key_file=paths.kubelet_client_key,
        )
        default_key = Path(config.data_dir) / "pki" / "service-account.key"
        key_path = Path(config.service_account_key or default_key)
        self.tokens = ServiceAccountTokens(load_or_create_key(key_path), store)
        await self.tokens.refresh()
        self.events = EventStore(store)
        identity = config.identity or process_identity()
        self.identity = IdentityLease(
            store,
            identity,
            duration=config.identity_lease_duration,
            renew_interval=config.identity_renew_interval,
        )
        shared = config.cluster_slots
        if shared is None:
            shared = bool(config.etcd_servers) or self._given_store is not None
        if shared:
            self.ledger = SlotLedger(store, self.identity.name, self.identity.live)
            self.identity.on_expired = self.ledger.collect
        await self.identity.renew()  # before any slot is claimed under its name
        app = self._build_app(store, kubelet_ctx)
        self.http = HttpServer(
            app, limits=config.http_limits, check_head=app.check_head, name="apiserver"
        )
        await self.http.start(config.host, config.port, ssl=server_ctx)
        self.scheduler = Scheduler(store, interval=config.scheduler_interval, events=self.events)
        self.node_monitor = NodeMonitor(
            store, grace=config.node_monitor_grace, interval=config.node_monitor_interval
        )
        self.namespaces = NamespaceController(store, interval=config.scheduler_interval)
        self.elector = LeaderElector(
            store,
            identity,
            [self.scheduler.run, self.node_monitor.run, self._namespaces, self._expire_events],
            config.leader_timings,
            sole=not shared,  # after a crash on SQLite: lead at once, not after 15 s
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.elector.run(), name="hatchway-leader-election"),
            loop.create_task(self.identity.run(), name="hatchway-identity-lease"),
            loop.create_task(self.tokens.run(), name="hatchway-service-accounts"),
            loop.create_task(self.events.run(expire=lambda: False), name="hatchway-events"),
        ]
        self.scheduler.kick()  # its first pass as soon as it leads
        log.info("API server listening on https://%s:%d", config.host, self.port)

    async def _namespaces(self) -> None:
        """The namespace controller, once leading: first a pass over what may have become
        Terminating under another leader or before a restart."""
        assert self.namespaces is not None
        self.namespaces.kick()
        await self.namespaces.run()

    async def _expire_events(self) -> None:
        """Event expiry, once leading (every server flushes its own counted events)."""
        assert self.events is not None
        while True:
            try:
                await self.events.collect_once()
            except (StatusError, OSError, RuntimeError):
                log.exception("event expiry pass failed")
            await asyncio.sleep(EVENT_EXPIRY_INTERVAL)

    def _build_app(self, store: Store, kubelet_ctx: ssl.SSLContext) -> ApiApp:
        config = self.config
        policy = PolicyCache(store)
        authorizer = RbacAuthorizer(policy)

        tokens = self.tokens
        assert tokens is not None

        def on_change(resource: str, obj: dict[str, Any]) -> Awaitable[None] | None:
            if resource in ("pods", "namespaces") and self.namespaces is not None:
                self.namespaces.kick()
            if resource == "serviceaccounts":
                return tokens.refresh()  # answered once a deleted account's tokens fail
            if resource == "namespaces" and not is_terminating(obj):
                return ensure_default(store, obj["metadata"]["name"])
            if resource in RBAC_RESOURCES:
                policy.invalidate()
            elif resource in ("pods", "nodes") and self.scheduler is not None:
                self.scheduler.kick()
            return None

        # One pool of kept-alive node connections: an outcome fetch leaves one, the
        # next exec upgrade to that node takes it (:mod:`.proxy`).
        node_pool = HttpClient()
        proxy = ExecProxy(
            kubelet_ctx,
            handshake_timeout=config.exec_handshake_timeout,
            idle_timeout=config.exec_idle_timeout,
            http_client=node_pool if config.reuse_node_connections else None,
        )
        self.outcomes = OutcomeClient(
            kubelet_ctx, timeout=config.outcome_timeout, http_client=node_pool
        )
        exec_handler = ExecHandler(
            store,
            authorizer,
            proxy,
            self.audit,
            config.exec_limits,
            self.outcomes,
            self.trimmer,
            self.events,
            self.ledger,
        )
        return ApiApp(
            authenticator=Authenticator(
                config.token_file, token_authenticators=[tokens.authenticate]
            ),
            authorizer=authorizer,
            audit=self.audit,
            resource_handler=with_events_v1(
                ResourceHandler(store, on_change, PodSecurityAdmission(store, authorizer), tokens),
                store,
            ),
            exec_handler=exec_handler,
            port_forward_handler=PortForwardHandler(exec_handler),
            log_handler=LogHandler(
                store, kubelet_ctx, limits=config.log_follow_limits, ledger=self.ledger
            ),
            review_handler=ReviewHandler(authorizer),
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.outcomes is not None:
            await self.outcomes.aclose()
            self.outcomes = None
        if self.ledger is not None:
            await self.ledger.close()
            self.ledger = None
        if self.identity is not None:
            await self.identity.delete()
            self.identity = None
        await self.trimmer.aclose()
        if self.store is not None and self._given_store is None:
            await self.store.close()
            self.store = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def fix_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``); True if applied.

    Each TLS connection of the event loop mallocs a 256 KiB read buffer (uvloop's
    SSLProtocol; asyncio's is a bytearray). With glibc's dynamic threshold the first
    such buffer freed raises the threshold, later ones come from the heap, often from
    chunks an earlier session already touched, and an idle connection then keeps the
    whole buffer resident. Fixed, each is its own mapping: only the pages a session
    really used are resident, and all of it goes back to the system when it ends.
    Measured with 200 idle exec sessions: 106 -> 97 KiB of API server RSS per session.
    ``MALLOC_MMAP_THRESHOLD_`` in the environment wins (glibc reads it itself)."""
    if threshold <= 0 or not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, threshold))


async def run_apiserver(config: ApiServerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled; ``ready`` is set once the server listens."""
    fix_mmap_threshold(config.mmap_threshold)
    server = ApiServer(config)
    await server.start()
    heap.freeze_startup()  # collections after each session skip start-up's objects
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.close()
