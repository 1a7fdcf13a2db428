"""The PKI of a data directory: what ensure_pki creates, idempotence, key modes, names;
the node-client CA apart from the cluster CA, the upgrade of a data dir made before it,
and the names a user certificate may not carry."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
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
    every = (made.ca, made.node_client_ca, made.apiserver, made.apiserver_kubelet_client)
    for paths in (*every, made.node, made.admin):
        assert paths.cert.parent == made.directory
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
        assert pki.pem_bytes(paths.cert).startswith(b"-----BEGIN CERTIFICATE-----")
    assert made.ca.cert.name == "ca.crt" and made.ca.key.name == "ca.key"
    assert made.apiserver_kubelet_client.cert.name == "apiserver-kubelet-client.crt"
    assert made.node_client_ca.cert.name == "node-client-ca.crt"


def test_identities_and_usages(made: pki.Pki) -> None:
    ca = load(made.ca.cert)
    node_client_ca = load(made.node_client_ca.cert)
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
        cert.verify_directly_issued_by(node_client_ca if attr == "apiserver_kubelet_client" else ca)
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


# -- the node-client CA ------------------------------------------------------------------


def _issued_by(cert_path, ca_path) -> bool:
    try:
        load(cert_path).verify_directly_issued_by(load(ca_path))
    except (ValueError, InvalidSignature):
        return False
    return True


def test_node_client_ca_is_separate_and_signs_only_the_api_server_client(made: pki.Pki) -> None:
    ca, node_ca = load(made.ca.cert), load(made.node_client_ca.cert)
    assert ca.subject.rfc4514_string() == "CN=hatchway-ca"
    assert node_ca.subject.rfc4514_string() == "CN=hatchway-node-client-ca"
    assert node_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert made.ca.key.read_bytes() != made.node_client_ca.key.read_bytes()
    leaves = [p.cert for p in (made.apiserver, made.node, made.admin)]
    signed = [
        c
        for c in [*leaves, made.apiserver_kubelet_client.cert]
        if _issued_by(c, made.node_client_ca.cert)
    ]
    assert signed == [made.apiserver_kubelet_client.cert]
    assert not _issued_by(made.apiserver_kubelet_client.cert, made.ca.cert)
    assert pki.subject_attributes(made.node_client_ca.cert) == (
        ("commonName", "hatchway-node-client-ca"),
    )


def test_a_user_certificate_never_chains_to_the_node_client_ca(made: pki.Pki) -> None:
    """Whatever name it carries, a minted certificate comes from the cluster CA; the
    component minter, given the cluster CA, cannot make a node caller either."""
    user_pem, _ = pki.mint_user_cert(made.directory, "carol")
    component_pem, _ = pki.mint_component_cert(made.ca, pki.APISERVER_CLIENT_CN)
    node_ca = load(made.node_client_ca.cert)
    for pem in (user_pem, component_pem):
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(load(made.ca.cert))
        with pytest.raises(ValueError):  # issuer name is the cluster CA's
            cert.verify_directly_issued_by(node_ca)


def _old_layout(data_dir) -> dict[str, bytes]:
    """A PKI as Hatchway made it before the node-client CA: one CA signing everything."""
    directory = data_dir / "pki"
    ca = pki.create_ca(directory)
    for stem, spec in pki._pki_specs("n1", ()).items():
        pki.issue_certificate(ca, directory / stem, **spec)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_ensure_pki_upgrades_a_data_dir_from_before_the_node_client_ca(tmp_path) -> None:
    before = _old_layout(tmp_path)
    assert "node-client-ca.crt" not in before
    made = pki.ensure_pki(tmp_path, node_name="n1")
    assert _issued_by(made.apiserver_kubelet_client.cert, made.node_client_ca.cert)
    assert pki.certificate_identity(made.apiserver_kubelet_client.cert) == (
        "hatchway-apiserver",
        ["hatchway:apiservers"],
    )
    after = {p.name: p.read_bytes() for p in made.directory.iterdir()}
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"}
    assert set(after) - set(before) == {"node-client-ca.crt", "node-client-ca.key"}
    assert stat.S_IMODE(made.node_client_ca.key.stat().st_mode) == 0o600
    assert pki.ensure_pki(tmp_path, node_name="n1") == made  # and stays put
    assert {p.name: p.read_bytes() for p in made.directory.iterdir()} == after


def test_a_new_node_client_ca_reissues_the_api_server_client(tmp_path) -> None:
    first = pki.ensure_pki(tmp_path, node_name="n1")
    first.node_client_ca.key.unlink()
    again = pki.ensure_pki(tmp_path, node_name="n1")
    assert _issued_by(again.apiserver_kubelet_client.cert, again.node_client_ca.cert)


# -- what a user certificate may carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("user", "groups", "message"),
    [
        (
            "hatchway-apiserver",
            [],
            'the user name "hatchway-apiserver" is reserved for Hatchway\'s own components',
        ),
        ("admin", [], 'the user name "admin" is reserved for Hatchway\'s own components'),
        (
            "system:node:n1",
            ["system:nodes"],
            'the user name "system:node:n1" is reserved: names starting with "system:" or '
            '"hatchway:" belong to the system (nodes get theirs from hatchway up)',
        ),
        (
            "system:kube-proxy",
            [],
            'the user name "system:kube-proxy" is reserved: names starting with "system:" or '
            '"hatchway:" belong to the system (nodes get theirs from hatchway up)',
        ),
        (
            "hatchway:x",
            [],
            'the user name "hatchway:x" is reserved: names starting with "system:" or '
            '"hatchway:" belong to the system (nodes get theirs from hatchway up)',
        ),
        (
            "eve",
            ["devs", "system:masters"],
            'the group "system:masters" makes the user a cluster administrator: '
            "it is given only to an explicit administrator (--admin)",
        ),
        ("eve", ["system:nodes"], 'the group "system:nodes" is reserved for the system'),
        (
            "eve",
            ["hatchway:apiservers"],
            'the group "hatchway:apiservers" is reserved for the system',
        ),
        (
            "eve",
            ["system:authenticated"],
            'the group "system:authenticated" is reserved for the system',
        ),
        ("eve", [" "], "a group name may not be empty"),
        ("  ", [], "the user name may not be empty"),
    ],
)
def test_mint_user_cert_refuses_system_identities(made: pki.Pki, user, groups, message) -> None:
    with pytest.raises(pki.ReservedIdentityError) as info:
        pki.mint_user_cert(made.ca, user, groups)
    assert str(info.value) == message
    assert isinstance(info.value, ConfigError)


def test_admin_allows_system_masters_only(made: pki.Pki) -> None:
    cert_pem, _ = pki.mint_user_cert(made.ca, "root", ["system:masters"], admin=True)
    assert x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string() == (
        "CN=root,O=system:masters"
    )
    for user, groups in (("admin", ["system:masters"]), ("root", ["system:nodes"])):
        with pytest.raises(pki.ReservedIdentityError):
            pki.mint_user_cert(made.ca, user, groups, admin=True)
