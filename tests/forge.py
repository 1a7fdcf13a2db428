"""Certificates our PKI never makes, signed with a CA's key the way an attacker holding
that key would: any subject (several CNs, a component's name), straight from
``cryptography``. For the tests that such certificates are refused."""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway import pki


def forge_client_cert(
    ca: pki.CertPaths | pathlib.Path,
    out: pathlib.Path,
    common_names: Sequence[str],
    organizations: Sequence[str] = (),
) -> pki.CertPaths:
    """A client certificate signed by ``ca`` whose subject holds each of
    ``organizations`` then each of ``common_names``; written as ``out.crt``/``out.key``."""
    ca_cert, ca_key = pki.load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs += [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = pki.CertPaths(out.with_name(out.name + ".crt"), out.with_name(out.name + ".key"))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
