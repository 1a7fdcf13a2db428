"""What ``hatchway up --ha`` would run, and ``hatchway pki``, without starting anything
(tests/ha starts the real cluster)."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hatchway import pki
from hatchway.cli import ha, pki_cmd
from hatchway.cli.up import ClusterState
from hatchway.errors import ConfigError


def test_plan_gives_every_component_its_own_test_address() -> None:
    components = ha.plan(2)
    assert [c.role for c in components].count("etcd") == 3
    assert [c.role for c in components].count("apiserver") == 3
    assert [c.name for c in components if c.role == "node"] == ["node-1", "node-2"]
    addresses = [c.address for c in components]
    assert len(set(addresses)) == len(addresses)
    net = ipaddress.ip_network("198.18.0.0/24")
    for address in addresses:
        assert ipaddress.ip_address(address) in net
        assert address != "198.18.0.1"  # the host's side of the bridge
    assert ha.server_url(components) == "https://198.18.0.10:6443"
    assert len({c.address for c in ha.plan(ha.MAX_NODES)}) == len(ha.plan(ha.MAX_NODES))


@pytest.mark.parametrize("nodes", [0, ha.MAX_NODES + 1])
def test_plan_bounds_the_nodes(nodes: int) -> None:
    with pytest.raises(ConfigError, match="--nodes"):
        ha.plan(nodes)


def test_haproxy_config_is_the_ha_guides(tmp_path: pathlib.Path) -> None:
    components = ha.plan(1)
    layout = ha.Layout(tmp_path)
    lb = next(c for c in components if c.role == "loadbalancer")
    apis = [c for c in components if c.role == "apiserver"]
    text = ha.haproxy_config(layout, lb, apis)
    assert "mode tcp" in text
    assert "bind 198.18.0.10:6443" in text
    assert "option httpchk" in text and "uri /readyz" in text
    assert "http-check expect status 200" in text
    assert f"check check-ssl verify required ca-file {tmp_path / 'pki' / 'ca.crt'}" in text
    assert "inter 1s fall 2 rise 2" in text
    for api in apis:
        assert f"server {api.name} {api.address}:6443" in text


def test_each_apiserver_prefers_its_etcd_member_and_nodes_use_the_balancer(
    tmp_path: pathlib.Path,
) -> None:
    components = ha.plan(2)
    layout = ha.Layout(tmp_path)
    by_name = {c.name: c for c in components}
    argv = ha.argv_of(layout, by_name["apiserver-2"], components, {})
    servers = argv[argv.index("--etcd-servers") + 1].split(",")
    assert servers == [
        "https://198.18.0.12:2379",
        "https://198.18.0.13:2379",
        "https://198.18.0.11:2379",
    ]
    assert argv[argv.index("--service-account-key-file") + 1] == str(
        tmp_path / "pki" / "service-account.key"
    )
    node = ha.argv_of(layout, by_name["node-2"], components, {"node": ["--timeout-scale=2"]})
    assert node[node.index("--apiserver") + 1] == "https://198.18.0.10:6443"
    assert node[node.index("--data-dir") + 1] == str(tmp_path / "node-2")
    assert node[-1] == "--timeout-scale=2"
    etcd = ha.argv_of(layout, by_name["etcd-3"], components, {})
    assert "--peer-client-cert-auth" in etcd and "--client-cert-auth" in etcd
    initial = etcd[etcd.index("--initial-cluster") + 1]
    assert initial.count("https://") == 3


def _usages(path: pathlib.Path) -> set[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _ips(path: pathlib.Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_pki_commands_issue_what_each_machine_needs(tmp_path: pathlib.Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hatchway", "pki", "--data-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
        )

    assert run("node", "n1", "--address", "10.0.0.5").returncode == 1  # no CA yet
    done = run("init", "--apiserver-host", "10.0.0.1", "--apiserver-host", "api.example")
    assert done.returncode == 0, done.stderr
    d = tmp_path / "pki"
    assert "10.0.0.1" in _ips(d / "apiserver.crt")
    for name in ("ca", "node-client-ca", "apiserver-kubelet-client", "admin"):
        assert (d / f"{name}.crt").exists()
    assert (d / "service-account.key").exists()
    assert run("etcd-member", "etcd-a", "--address", "10.0.0.2").returncode == 0
    assert run("node", "n1", "--address", "10.0.0.5").returncode == 0
    member = d / "etcd" / "etcd-a.crt"
    assert _usages(member) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert "10.0.0.2" in _ips(member)
    x509.load_pem_x509_certificate(member.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate((d / "etcd" / "ca.crt").read_bytes())
    )
    assert pki.certificate_identity(d / "etcd" / "apiserver-etcd-client.crt")[0] == (
        pki_cmd.ETCD_CLIENT_CN
    )
    node = d / "nodes" / "n1.crt"
    assert pki.certificate_identity(node) == ("system:node:n1", ["system:nodes"])
    assert _ips(node) == ["10.0.0.5"]
    x509.load_pem_x509_certificate(node.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    )
    assert run("loadbalancer").returncode == 0
    pem = (d / "loadbalancer.pem").read_bytes()
    assert b"BEGIN CERTIFICATE" in pem and b"PRIVATE KEY" in pem
    assert (d / "loadbalancer.pem").stat().st_mode & 0o077 == 0
    lb_cert = x509.load_pem_x509_certificate(pem)
    assert lb_cert.subject.rfc4514_string() == f"CN={pki_cmd.LOADBALANCER_CN}"
    # init again keeps the CA
    before = (d / "ca.crt").read_bytes()
    assert run("init").returncode == 0
    assert (d / "ca.crt").read_bytes() == before


def test_one_node_cluster_json_lists_its_components(tmp_path: pathlib.Path) -> None:
    state = ClusterState(6443, 10250, 11, 12, "host")
    state.save(tmp_path)
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert doc["apiserver_pid"] == 11 and doc["node_port"] == 10250
    assert doc["components"] == [
        {"role": "apiserver", "name": "apiserver", "pid": 11, "address": "127.0.0.1", "port": 6443},
        {"role": "node", "name": "host", "pid": 12, "address": "127.0.0.1", "port": 10250},
    ]
    loaded = ClusterState.load(tmp_path)
    assert loaded is not None and loaded.server_url == "https://127.0.0.1:6443"
