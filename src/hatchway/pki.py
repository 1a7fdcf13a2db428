"""The PKI that ``hatchway up`` creates: two CAs, and certificates for the API server,
the API server's client identity towards node agents, a node agent and the administrator.

The cluster CA (``ca.crt``) signs the API server's and the node's serving certificates,
the node's client certificate and every user's. The node-client CA
(``node-client-ca.crt``) signs one leaf only, the API server's client certificate
towards nodes (``apiserver-kubelet-client.crt``), and node agents trust nothing else for
their callers -- Kubernetes' ``--kubelet-client-certificate`` against the kubelet's
``--client-ca-file``. So whoever can get a certificate from the cluster CA (a user of
``hatchway kubeconfig user``) still cannot talk to a node.

Identities follow the Kubernetes convention: the subject's CN is the user, each O a
group. Keys are EC P-256, written with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pathlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway.errors import ConfigError

PathLike = str | os.PathLike[str]

CA_DAYS = 3650
LEAF_DAYS = 365
#: Tolerance for clocks of peers that lag behind ours.
BACKDATE = datetime.timedelta(minutes=5)
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

CLUSTER_CA_NAME = "hatchway-ca"
NODE_CLIENT_CA_NAME = "hatchway-node-client-ca"
APISERVER_CN = "hatchway-apiserver"
APISERVER_CLIENT_CN = "hatchway-apiserver"
APISERVER_CLIENT_GROUP = "hatchway:apiservers"
NODE_GROUP = "system:nodes"
ADMIN_CN = "admin"
ADMIN_GROUP = "system:masters"

#: Names ``hatchway up`` issues to Hatchway's own components: never a user's.
COMPONENT_NAMES = frozenset({APISERVER_CN, APISERVER_CLIENT_CN, ADMIN_CN})
#: Prefixes of names and groups that belong to Kubernetes (``system:``) and Hatchway.
RESERVED_PREFIXES = ("system:", "hatchway:")


class ReservedIdentityError(ConfigError):
    """A user certificate was asked for a name or group reserved to the system."""


@dataclass(frozen=True)
class CertPaths:
    """Where a certificate and its key live."""

    cert: pathlib.Path
    key: pathlib.Path


@dataclass(frozen=True)
class Pki:
    """The files of a data directory's PKI (``DATA_DIR/pki``)."""

    directory: pathlib.Path
    ca: CertPaths
    #: The CA node agents trust for their callers; its only leaf is
    #: ``apiserver_kubelet_client``.
    node_client_ca: CertPaths
    apiserver: CertPaths
    apiserver_kubelet_client: CertPaths
    node: CertPaths
    admin: CertPaths
    node_name: str


# -- files -------------------------------------------------------------------------------
def pem_bytes(path: PathLike) -> bytes:
    """The PEM text of a certificate or key file."""
    return pathlib.Path(path).read_bytes()


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a key."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _save(
    prefix: pathlib.Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertPaths:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        prefix.with_name(prefix.name + ".crt"), prefix.with_name(prefix.name + ".key")
    )
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


# -- building certificates ----------------------------------------------------------------
def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_certificate(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
    )
    return builder.sign(key, hashes.SHA256()), key


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(dns_names: Iterable[str], ip_addresses: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    for ip in ip_addresses:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    return names


def _split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Host names and IP addresses, apart."""
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns.append(host)
        else:
            ips.append(host)
    return dns, ips


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    organizations: Iterable[str],
    dns_names: Iterable[str],
    ip_addresses: Iterable[str],
    client: bool,
    server: bool,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (client or server):
        raise ValueError("a certificate must be for a client, a server, or both")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
    )
    sans = _sans(dns_names, ip_addresses)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


# -- public API ------------------------------------------------------------------------------
def create_ca(directory: PathLike, name: str = CLUSTER_CA_NAME, *, stem: str = "ca") -> CertPaths:
    """Create a new CA as ``directory/<stem>.crt`` and ``.key`` (overwriting)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = _ca_certificate(name)
    return _save(directory / stem, cert, key)


def _ca_paths(ca: PathLike | CertPaths) -> CertPaths:
    if isinstance(ca, CertPaths):
        return ca
    directory = pathlib.Path(ca)
    return CertPaths(directory / "ca.crt", directory / "ca.key")


def load_ca(
    ca: PathLike | CertPaths,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key from a CA directory or :class:`CertPaths`."""
    paths = _ca_paths(ca)
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CA from {paths.cert}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"CA key {paths.key} is not an EC key")
    return cert, key


def issue_certificate(
    ca: PathLike | CertPaths,
    out_prefix: PathLike,
    *,
    common_name: str,
    organizations: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    client: bool = True,
    server: bool = False,
    days: int = LEAF_DAYS,
) -> CertPaths:
    """Issue a certificate signed by ``ca``, written as ``<out_prefix>.crt``/``.key``.

    For Hatchway's own components: no name rules (users get :func:`mint_user_cert`)."""
    ca_cert, ca_key = load_ca(ca)
    cert, key = _leaf_certificate(
        ca_cert,
        ca_key,
        common_name=common_name,
        organizations=organizations,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        client=client,
        server=server,
        days=days,
    )
    return _save(pathlib.Path(out_prefix), cert, key)


def check_user_identity(user: str, groups: Iterable[str] = (), *, admin: bool = False) -> None:
    """Refuse (:class:`ReservedIdentityError`) a user certificate that would carry a
    system identity: a name of Hatchway's own components, a name or group under
    ``system:`` or ``hatchway:`` -- except ``system:masters``, with ``admin`` only."""
    if not user.strip():
        raise ReservedIdentityError("the user name may not be empty")
    if user in COMPONENT_NAMES:
        raise ReservedIdentityError(
            f'the user name "{user}" is reserved for Hatchway\'s own components'
        )
    if user.startswith(RESERVED_PREFIXES):
        raise ReservedIdentityError(
            f'the user name "{user}" is reserved: names starting with "system:" or '
            '"hatchway:" belong to the system (nodes get theirs from hatchway up)'
        )
    for group in groups:
        if not group.strip():
            raise ReservedIdentityError("a group name may not be empty")
        if group == ADMIN_GROUP:
            if not admin:
                raise ReservedIdentityError(
                    f'the group "{ADMIN_GROUP}" makes the user a cluster administrator: '
                    "it is given only to an explicit administrator (--admin)"
                )
        elif group.startswith(RESERVED_PREFIXES):
            raise ReservedIdentityError(f'the group "{group}" is reserved for the system')


def mint_component_cert(
    ca: PathLike | CertPaths,
    common_name: str,
    organizations: Iterable[str] = (),
    *,
    days: int = LEAF_DAYS,
) -> tuple[bytes, bytes]:
    """A client certificate ``(cert_pem, key_pem)`` kept in memory, with no name rules:
    for Hatchway's own components (and tests that stand in for them)."""
    ca_cert, ca_key = load_ca(ca)
    cert, key = _leaf_certificate(
        ca_cert,
        ca_key,
        common_name=common_name,
        organizations=organizations,
        dns_names=(),
        ip_addresses=(),
        client=True,
        server=False,
        days=days,
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def mint_user_cert(
    ca: PathLike | CertPaths,
    user: str,
    groups: Iterable[str] = (),
    *,
    days: int = LEAF_DAYS,
    admin: bool = False,
) -> tuple[bytes, bytes]:
    """A client certificate for ``user`` in ``groups``: ``(cert_pem, key_pem)``, kept in
    memory (for ``client-certificate-data`` in a kubeconfig). System identities are
    refused (:func:`check_user_identity`); ``system:masters`` needs ``admin``."""
    groups = list(groups)
    check_user_identity(user, groups, admin=admin)
    return mint_component_cert(ca, user, groups, days=days)


def certificate_identity(path: PathLike) -> tuple[str, list[str]]:
    """``(CN, [O...])`` of a certificate file."""
    cert = x509.load_pem_x509_certificate(pem_bytes(path))
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cns[0].value) if cns else "", [str(o.value) for o in orgs])


#: The attribute names of :meth:`ssl.SSLSocket.getpeercert` (OpenSSL's long names).
_SSL_ATTRIBUTE_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.DOMAIN_COMPONENT: "domainComponent",
}


def subject_attributes(path: PathLike) -> tuple[tuple[str, str], ...]:
    """The subject of a certificate file as the flat ``(name, value)`` pairs that
    ``getpeercert()`` gives for an issuer, to compare a peer's issuer with a CA."""
    cert = x509.load_pem_x509_certificate(pem_bytes(path))
    pairs: list[tuple[str, str]] = []
    for rdn in cert.subject.rdns:
        for attr in rdn:
            name = _SSL_ATTRIBUTE_NAMES.get(attr.oid)
            if name is None:
                raise ConfigError(f"{path}: unsupported subject attribute {attr.oid.dotted_string}")
            pairs.append((name, str(attr.value)))
    return tuple(pairs)


def _exists(paths: CertPaths) -> bool:
    return paths.cert.exists() and paths.key.exists()


def _pki_specs(node_name: str, apiserver_hosts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What ``ensure_pki`` issues: file stem -> ``issue_certificate`` keywords."""
    api_dns, api_ips = _split_hosts([*LOCAL_NAMES, *apiserver_hosts])
    node_dns, node_ips = _split_hosts([*LOCAL_NAMES, node_name])
    return {
        "apiserver": {
            "common_name": APISERVER_CN,
            "dns_names": api_dns,
            "ip_addresses": api_ips,
            "server": True,
            "client": False,
        },
        "apiserver-kubelet-client": {
            "common_name": APISERVER_CLIENT_CN,
            "organizations": [APISERVER_CLIENT_GROUP],
        },
        "node": {
            "common_name": f"system:node:{node_name}",
            "organizations": [NODE_GROUP],
            "dns_names": node_dns,
            "ip_addresses": node_ips,
            "server": True,
        },
        "admin": {"common_name": ADMIN_CN, "organizations": [ADMIN_GROUP]},
    }


#: The leaves the node-client CA signs; the cluster CA signs the others.
_NODE_CLIENT_LEAVES = frozenset({"apiserver-kubelet-client"})


def _current(paths: CertPaths, common_name: str, ca: CertPaths) -> bool:
    """The certificate exists, names ``common_name`` and was signed by ``ca`` (a data
    dir from before the node-client CA has the API server's client certificate from the
    cluster CA: it must be reissued)."""
    if not _exists(paths) or certificate_identity(paths.cert)[0] != common_name:
        return False
    cert = x509.load_pem_x509_certificate(pem_bytes(paths.cert))
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pem_bytes(ca.cert)))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ensure_ca(directory: pathlib.Path, stem: str, name: str) -> CertPaths:
    paths = CertPaths(directory / f"{stem}.crt", directory / f"{stem}.key")
    if not _exists(paths):
        paths = create_ca(directory, name, stem=stem)
    return paths


def ensure_pki(
    data_dir: PathLike,
    *,
    node_name: str | None = None,
    apiserver_hosts: Iterable[str] = (),
) -> Pki:
    """Create what is missing of ``DATA_DIR/pki``; existing files are kept.

    A certificate is reissued when its name changed (the node's, with ``node_name``) or
    its CA did (a new CA; an older data dir without the node-client CA).
    ``apiserver_hosts`` are extra SANs for the API server certificate (used only when it
    is created).
    """
    directory = pathlib.Path(data_dir) / "pki"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    node_name = node_name or socket.gethostname()
    ca = _ensure_ca(directory, "ca", CLUSTER_CA_NAME)
    node_client_ca = _ensure_ca(directory, "node-client-ca", NODE_CLIENT_CA_NAME)
    paths: dict[str, CertPaths] = {}
    for stem, spec in _pki_specs(node_name, apiserver_hosts).items():
        signer = node_client_ca if stem in _NODE_CLIENT_LEAVES else ca
        current = CertPaths(directory / f"{stem}.crt", directory / f"{stem}.key")
        if not _current(current, spec["common_name"], signer):
            current = issue_certificate(signer, directory / stem, **spec)
        paths[stem] = current
    return Pki(
        directory=directory,
        ca=ca,
        node_client_ca=node_client_ca,
        apiserver=paths["apiserver"],
        apiserver_kubelet_client=paths["apiserver-kubelet-client"],
        node=paths["node"],
        admin=paths["admin"],
        node_name=node_name,
    )
