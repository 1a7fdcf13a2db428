"""The PKI of a data directory: what ensure_pki creates, idempotence, key modes, names."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hatchway import pki
from hatchway.errors import ConfigError


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.pem_bytes(path))


def usages(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return dns, ips


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.ensure_pki(tmp_path_factory.mktemp("data"), node_name="worker-1")


def test_layout_and_modes(made: pki.Pki) -> None:
    assert made.directory.name == "pki"
    assert stat.S_IMODE(made.directory.stat().st_mode) == 0o700
    for paths in (made.ca, made.apiserver, made.apiserver_kubelet_client, made.node, made.admin):
        assert paths.cert.parent == made.directory
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
        assert pki.pem_bytes(paths.cert).startswith(b"-----BEGIN CERTIFICATE-----")
    assert made.ca.cert.name == "ca.crt" and made.ca.key.name == "ca.key"
    assert made.apiserver_kubelet_client.cert.name == "apiserver-kubelet-client.crt"


def test_identities_and_usages(made: pki.Pki) -> None:
    ca = load(made.ca.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    expected = {
        "apiserver": ("hatchway-apiserver", [], {ExtendedKeyUsageOID.SERVER_AUTH}),
        "apiserver_kubelet_client": (
            "hatchway-apiserver",
            ["hatchway:apiservers"],
            {ExtendedKeyUsageOID.CLIENT_AUTH},
        ),
        "node": (
            "system:node:worker-1",
            ["system:nodes"],
            {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
        ),
        "admin": ("admin", ["system:masters"], {ExtendedKeyUsageOID.CLIENT_AUTH}),
    }
    for attr, (cn, orgs, eku) in expected.items():
        paths: pki.CertPaths = getattr(made, attr)
        assert pki.certificate_identity(paths.cert) == (cn, orgs), attr
        cert = load(paths.cert)
        cert.verify_directly_issued_by(ca)
        assert usages(cert) == eku, attr
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_names(made: pki.Pki) -> None:
    dns, ips = sans(load(made.apiserver.cert))
    assert dns == ["localhost"]
    assert {ipaddress.ip_address(ip) for ip in ips} == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    node_dns, _ = sans(load(made.node.cert))
    assert "worker-1" in node_dns


def test_ensure_pki_is_idempotent(tmp_path) -> None:
    first = pki.ensure_pki(tmp_path, node_name="n1")
    before = {p: p.read_bytes() for p in first.directory.iterdir()}
    second = pki.ensure_pki(tmp_path, node_name="n1")
    assert second == first
    assert {p: p.read_bytes() for p in second.directory.iterdir()} == before


def test_missing_file_is_recreated_and_node_rename_reissues(tmp_path) -> None:
    first = pki.ensure_pki(tmp_path, node_name="n1")
    ca_before = first.ca.cert.read_bytes()
    admin_before = first.admin.cert.read_bytes()
    first.admin.key.unlink()
    again = pki.ensure_pki(tmp_path, node_name="n2")
    assert again.ca.cert.read_bytes() == ca_before
    assert again.admin.cert.read_bytes() != admin_before
    assert pki.certificate_identity(again.node.cert)[0] == "system:node:n2"


def test_issue_and_mint(tmp_path) -> None:
    ca = pki.create_ca(tmp_path / "ca", name="test-ca")
    assert load(ca.cert).subject.rfc4514_string() == "CN=test-ca"
    paths = pki.issue_certificate(
        tmp_path / "ca",
        tmp_path / "out" / "web",
        common_name="web",
        dns_names=["web.example"],
        ip_addresses=["10.0.0.1"],
        client=False,
        server=True,
        days=2,
    )
    assert paths.cert == tmp_path / "out" / "web.crt"
    cert = load(paths.cert)
    assert sans(cert) == (["web.example"], ["10.0.0.1"])
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 2
    cert_pem, key_pem = pki.mint_user_cert(ca, "carol", ["a", "b"])
    user = x509.load_pem_x509_certificate(cert_pem)
    assert user.subject.rfc4514_string() == "CN=carol,O=b,O=a"
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError):
        pki.issue_certificate(ca, tmp_path / "x", common_name="x", client=False, server=False)


def test_load_ca_errors(tmp_path) -> None:
    with pytest.raises(ConfigError):
        pki.load_ca(tmp_path / "nothing")
