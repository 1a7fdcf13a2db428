"""``hatchway apiserver``, ``hatchway node``, ``hatchway up`` and ``hatchway down``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pathlib
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from hatchway.cli import heapdump
from hatchway.cli.errors import report
from hatchway.errors import HatchwayError


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(coro: Coroutine[Any, Any, None], *, uvloop: bool = True) -> int:
    """Run a server until SIGTERM or SIGINT, then close it cleanly."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        _run_loop(main(), uvloop=uvloop)
    except HatchwayError as exc:
        return report(exc)
    return 0


def node_uvloop() -> bool:
    """Whether the node agent runs on uvloop (when installed): yes unless
    ``HATCHWAY_NODE_UVLOOP=0`` asks for plain asyncio."""
    return os.environ.get("HATCHWAY_NODE_UVLOOP", "1") != "0"


def _run_loop(coro: Coroutine[Any, Any, None], *, uvloop: bool) -> None:
    if uvloop:
        try:
            import uvloop as uvloop_module
        except ImportError:
            pass
        else:
            uvloop_module.run(coro)
            return
    asyncio.run(coro)


def _data_dir_arg(parser: argparse.ArgumentParser) -> None:
    from hatchway.cli.up import default_data_dir

    parser.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=default_data_dir(),
        help="state, PKI, logs (default: %(default)s; env HATCHWAY_DATA_DIR)",
    )


def _timeout_scale_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout-scale",
        type=_positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply the connection and exec timeouts (a slow or loaded machine; %(default)s)",
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _session_limit_args(parser: argparse.ArgumentParser) -> None:
    from hatchway.apiserver.exec_handler import SessionLimits

    parser.add_argument(
        "--max-sessions-per-user",
        type=_positive,
        default=SessionLimits.per_user,
        help="concurrent exec/attach sessions per user (%(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=_positive,
        default=SessionLimits.total,
        help="concurrent exec/attach sessions in total (%(default)s)",
    )


def _connection_limit_args(parser: argparse.ArgumentParser) -> None:
    from hatchway.apiserver.exec_handler import SessionLimits
    from hatchway.transport.http import HttpLimits

    for flag, default, what in (
        ("--max-connections", HttpLimits.max_connections, "open connections (503 beyond)"),
        (
            "--max-connections-per-source",
            HttpLimits.max_connections_per_source,
            "open connections per source address (429 beyond)",
        ),
        ("--max-log-follows-per-user", SessionLimits.per_user, "`logs -f` streams per user"),
        ("--max-log-follows", SessionLimits.total, "`logs -f` streams in total"),
    ):
        parser.add_argument(flag, type=_positive, default=default, help=f"{what} (%(default)s)")


#: The API server limits ``hatchway up`` passes through.
UP_APISERVER_LIMITS = (
    "max_sessions_per_user",
    "max_sessions",
    "max_connections",
    "max_connections_per_source",
    "max_log_follows_per_user",
    "max_log_follows",
)


def _etcd_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage (SQLite in DATA_DIR unless --etcd-servers)")
    group.add_argument("--etcd-servers", metavar="URL[,URL]", help="etcd client URLs")
    group.add_argument("--etcd-cafile", help="CA bundle that signed etcd's certificate")
    group.add_argument("--etcd-certfile", help="client certificate for etcd (mutual TLS)")
    group.add_argument("--etcd-keyfile", help="its private key")
    group.add_argument("--etcd-prefix", default="/registry", help="key prefix (%(default)s)")
    group.add_argument(
        "--etcd-compaction-interval",
        type=float,
        default=300.0,
        help="seconds between compactions of etcd's history, 0 for never (%(default)s)",
    )


def _leader_args(parser: argparse.ArgumentParser) -> None:
    """kube-controller-manager's flags, in seconds (protocol.md 11.2)."""
    group = parser.add_argument_group("leader election of the controllers that run once")
    for flag, default, what in (
        ("--leader-elect-lease-duration", 15.0, "how long a leader's Lease lasts unrenewed"),
        ("--leader-elect-renew-deadline", 10.0, "a leader gives up when not renewed in this"),
        ("--leader-elect-retry-period", 2.0, "between attempts and renewals"),
    ):
        group.add_argument(flag, type=float, default=default, help=f"{what} (%(default)s s)")


def leader_timings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The :class:`~hatchway.apiserver.leader.LeaderTimings` the flags say; a usage
    error (exit 2) unless 0 < retry period < renew deadline < lease duration."""
    from hatchway.apiserver.leader import LeaderTimings

    try:
        return LeaderTimings(
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
    except ValueError as exc:
        parser.error(f"leader election: {exc}")


def _apiserver_pki_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "certificates (default: DATA_DIR/pki, created when missing; given all, nothing is "
        "created: several API servers share one PKI, see hatchway pki)"
    )
    for flag, what in (
        ("--tls-cert-file", "the serving certificate"),
        ("--tls-private-key-file", "its key"),
        ("--client-ca-file", "the CA of client certificates (the cluster CA)"),
        ("--kubelet-client-certificate", "the client certificate towards node agents"),
        ("--kubelet-client-key", "its key"),
        ("--kubelet-certificate-authority", "the CA of the node agents' certificates"),
        ("--service-account-key-file", "the service-account token signing key"),
    ):
        group.add_argument(flag, help=what)


def apiserver_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hatchway apiserver", description="Run the API server.")
    _data_dir_arg(parser)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (%(default)s)")
    parser.add_argument("--port", type=int, default=6443, help="HTTPS port (%(default)s)")
    parser.add_argument("--token-file", help='static bearer tokens (token,user,uid,"groups")')
    parser.add_argument("--audit-log", help="audit log path (default DATA_DIR/audit.log)")
    _etcd_args(parser)
    _leader_args(parser)

    _apiserver_pki_args(parser)
    _session_limit_args(parser)
    _connection_limit_args(parser)
    _timeout_scale_arg(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _logging(args.verbose)
    timings = leader_timings(parser, args)
    from hatchway.apiserver.exec_handler import SessionLimits
    from hatchway.apiserver.server import ApiServerConfig, run_apiserver
    from hatchway.transport.http import HttpLimits

    config = ApiServerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        token_file=args.token_file,
        audit_log=args.audit_log,
        tls_cert=args.tls_cert_file,
        tls_key=args.tls_private_key_file,
        client_ca=args.client_ca_file,
        kubelet_client_cert=args.kubelet_client_certificate,
        kubelet_client_key=args.kubelet_client_key,
        kubelet_ca=args.kubelet_certificate_authority,
        service_account_key=args.service_account_key_file,
        etcd_servers=tuple(u for u in (args.etcd_servers or "").split(",") if u),
        etcd_cafile=args.etcd_cafile,
        etcd_certfile=args.etcd_certfile,
        etcd_keyfile=args.etcd_keyfile,
        etcd_prefix=args.etcd_prefix,
        etcd_compaction_interval=args.etcd_compaction_interval,
        leader_timings=timings,
        exec_limits=SessionLimits(per_user=args.max_sessions_per_user, total=args.max_sessions),
        http_limits=HttpLimits(
            max_connections=args.max_connections,
            max_connections_per_source=args.max_connections_per_source,
        ),
        log_follow_limits=SessionLimits(
            per_user=args.max_log_follows_per_user, total=args.max_log_follows
        ),
    ).scaled(args.timeout_scale)
    heapdump.install("apiserver")
    return _serve(run_apiserver(config))


def node_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hatchway node", description="Run the node agent.")
    _data_dir_arg(parser)
    parser.add_argument("--apiserver", default="https://127.0.0.1:6443", help="(%(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (%(default)s)")
    parser.add_argument("--port", type=int, default=10250, help="HTTPS port (%(default)s)")
    parser.add_argument("--address", default="127.0.0.1", help="address the API server dials")
    parser.add_argument("--node-name", default=socket.gethostname().lower())
    parser.add_argument(
        "--cleanup", action="store_true", help="delete every container of this node and exit"
    )
    certs = parser.add_argument_group(
        "certificates (default: DATA_DIR/pki, created when missing; given all four, "
        "nothing is created: see hatchway pki node)"
    )
    certs.add_argument("--tls-cert-file", help="serving and client certificate (system:node:NAME)")
    certs.add_argument("--tls-private-key-file", help="its key")
    certs.add_argument("--ca-file", help="the cluster CA (verifies the API server)")
    certs.add_argument(
        "--client-ca-file", help="the node-client CA: the only issuer of callers it accepts"
    )
    parser.add_argument(
        "--container-log-max-bytes",
        type=int,
        default=1 << 30,
        help="bound of one container instance's log; later output is not kept (%(default)s)",
    )
    _timeout_scale_arg(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _logging(args.verbose)
    from hatchway.node.agent import NodeConfig, cleanup, run_node

    if args.cleanup:
        count = asyncio.run(cleanup(str(args.data_dir)))
        print(f"hatchway: removed {count} container(s)")
        return 0
    if os.geteuid() != 0:
        print("error: the node agent runs containers with runc and needs root", file=sys.stderr)
        return 1
    config = NodeConfig(
        data_dir=str(args.data_dir),
        apiserver=args.apiserver,
        node_name=args.node_name,
        host=args.host,
        port=args.port,
        address=args.address,
        cert=args.tls_cert_file,
        key=args.tls_private_key_file,
        ca=args.ca_file,
        client_ca=args.client_ca_file,
        container_log_max_bytes=args.container_log_max_bytes,
    )
    config.http_limits = config.http_limits.scaled(args.timeout_scale)
    heapdump.install("node")
    return _serve(run_node(config), uvloop=node_uvloop())


def up_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hatchway up",
        description="Start a one-machine cluster: PKI, API server on SQLite, one node agent, "
        "and a 'hatchway' context in your kubeconfig.",
    )
    _data_dir_arg(parser)
    parser.add_argument("--apiserver-port", type=int, default=6443, help="0 picks a free port")
    parser.add_argument("--node-port", type=int, default=10250, help="0 picks a free port")
    parser.add_argument(
        "--detach", action="store_true", help="return once Ready, leaving the cluster running"
    )
    parser.add_argument(
        "--no-merge", action="store_true", help="do not touch the user's kubeconfig"
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for Ready")
    parser.add_argument(
        "--ha",
        action="store_true",
        help="3 etcd members, 3 API servers, HAProxy and --nodes node agents, each in a "
        "network namespace on a bridge with 198.18.0.0/24 addresses (root); again: "
        "restarts what died",
    )
    parser.add_argument(
        "--nodes", type=_positive, default=2, help="node agents with --ha (%(default)s)"
    )
    _session_limit_args(parser)
    _connection_limit_args(parser)
    _timeout_scale_arg(parser)
    args = parser.parse_args(argv)
    from hatchway.cli.up import up, up_ha

    limits = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in UP_APISERVER_LIMITS]
    try:
        if args.ha:
            return up_ha(
                args.data_dir,
                nodes=args.nodes,
                merge=not args.no_merge,
                timeout=args.timeout,
                apiserver_args=limits,
                timeout_scale=args.timeout_scale,
            )
        return up(
            args.data_dir,
            apiserver_port=args.apiserver_port,
            node_port=args.node_port,
            detach=args.detach,
            merge=not args.no_merge,
            timeout=args.timeout,
            apiserver_args=limits,
            timeout_scale=args.timeout_scale,
        )
    except HatchwayError as exc:
        return report(exc)


def down_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hatchway down", description="Stop the local cluster.")
    _data_dir_arg(parser)
    args = parser.parse_args(argv)
    from hatchway.cli.up import down

    return down(args.data_dir)
