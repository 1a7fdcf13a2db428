"""``hatchway pki``: the certificates of a cluster spread over several machines.

One directory (``DATA_DIR/pki``, ``--data-dir`` as for ``hatchway up``) holds the CAs;
each command issues what one machine needs, to be copied there (the README's "Scaling
out" says what goes where):

* ``init`` -- the cluster CA, the node-client CA, the API servers' serving certificate
  (``--apiserver-host`` SANs: every API server's and the load balancer's addresses and
  names), their client certificate towards nodes, the service-account signing key, the
  etcd CA, the API servers' etcd client certificate and the administrator's certificate;
  existing files are kept;
* ``etcd-member NAME --address A`` -- ``etcd/NAME.crt``: one etcd member's serving,
  peer and client certificate (etcd's JSON gateway dials etcd with it);
* ``node NAME --address A`` -- ``nodes/NAME.crt``: a node agent's serving and client
  certificate (``system:node:NAME`` in ``system:nodes``);
* ``loadbalancer`` -- ``loadbalancer.pem`` (certificate and key in one file, as HAProxy
  reads them): the load balancer's client identity for its ``/readyz`` checks.

``hatchway up --ha`` issues the same files with the same functions.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Iterable, Sequence

from hatchway import pki

ETCD_CA_NAME = "hatchway-etcd-ca"
ETCD_CLIENT_CN = "hatchway-apiserver-etcd-client"


def init(directory: pathlib.Path, apiserver_hosts: Iterable[str]) -> pki.Pki:
    """The cluster-wide PKI in ``directory`` (what is there is kept)."""
    from hatchway.apiserver.serviceaccounts import load_or_create_key

    # ensure_pki keeps its files in DATA_DIR/pki (this directory).
    bundle = pki.ensure_pki(
        directory.parent, node_name="hatchway-unused", apiserver_hosts=apiserver_hosts
    )
    load_or_create_key(directory / "service-account.key")
    etcd_ca = etcd_ca_paths(directory)
    if not etcd_ca.cert.exists():
        pki.create_ca(directory / "etcd", ETCD_CA_NAME)
    client = directory / "etcd" / "apiserver-etcd-client"
    if not client.with_suffix(".crt").exists():
        pki.issue_certificate(etcd_ca, client, common_name=ETCD_CLIENT_CN)
    return bundle


def etcd_ca_paths(directory: pathlib.Path) -> pki.CertPaths:
    return pki.CertPaths(directory / "etcd" / "ca.crt", directory / "etcd" / "ca.key")


def etcd_member(directory: pathlib.Path, name: str, address: str) -> pki.CertPaths:
    """A member's certificate for its client and peer ports, and as a client (the JSON
    gateway dials the member's own gRPC port with it)."""
    return pki.issue_certificate(
        etcd_ca_paths(directory),
        directory / "etcd" / name,
        common_name=name,
        ip_addresses=[address, "127.0.0.1"],
        dns_names=["localhost", name],
        server=True,
        client=True,
    )


def node(directory: pathlib.Path, name: str, address: str) -> pki.CertPaths:
    """A node agent's certificate: it serves the API server (which dials ``address``) and
    is the node's identity towards the API server."""
    return pki.issue_certificate(
        pki.CertPaths(directory / "ca.crt", directory / "ca.key"),
        directory / "nodes" / name,
        common_name=f"system:node:{name}",
        organizations=[pki.NODE_GROUP],
        ip_addresses=[address],
        dns_names=[name],
        server=True,
        client=True,
    )


#: The load balancer's client identity for its health checks (no group, no role: it
#: reads /readyz, which every authenticated user may).
LOADBALANCER_CN = "hatchway-loadbalancer"


def loadbalancer(directory: pathlib.Path) -> pathlib.Path:
    """``loadbalancer.pem``: a client certificate of the cluster CA and its key."""
    cert, key = pki.mint_component_cert(
        pki.CertPaths(directory / "ca.crt", directory / "ca.key"), LOADBALANCER_CN
    )
    path = directory / "loadbalancer.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert + key)
    return path


def main(argv: Sequence[str]) -> int:
    from hatchway.cli.up import default_data_dir

    parser = argparse.ArgumentParser(
        prog="hatchway pki",
        description="Issue the certificates of a cluster on several machines.",
    )
    parser.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=default_data_dir(),
        help="the PKI is DATA_DIR/pki (%(default)s; env HATCHWAY_DATA_DIR)",
    )
    subs = parser.add_subparsers(dest="sub", required=True)
    first = subs.add_parser("init", help="CAs, API server, etcd client, admin, signing key")
    first.add_argument(
        "--apiserver-host",
        action="append",
        default=[],
        metavar="HOST",
        help="an address or name clients reach an API server by (repeatable): each API "
        "server's and the load balancer's",
    )
    for sub, what in (("etcd-member", "an etcd member"), ("node", "a node agent")):
        one = subs.add_parser(sub, help=f"the certificate of {what}")
        one.add_argument("name", metavar="NAME")
        one.add_argument("--address", required=True, help="its IP address")
    subs.add_parser("loadbalancer", help="the load balancer's health-check certificate")
    args = parser.parse_args(argv)
    directory: pathlib.Path = args.data_dir / "pki"
    if args.sub == "init":
        init(directory, args.apiserver_host)
        print(f"hatchway: cluster PKI in {directory}")
        return 0
    if not (directory / "ca.key").exists():
        print(f"error: no cluster PKI in {directory}: run 'hatchway pki init'", file=sys.stderr)
        return 1
    if args.sub == "loadbalancer":
        print(f"hatchway: {loadbalancer(directory)}")
        return 0
    issue = etcd_member if args.sub == "etcd-member" else node
    paths = issue(directory, args.name, args.address)
    print(f"hatchway: {paths.cert} and {paths.key}")
    return 0
