"""Issue 9, finding 4 -- component identity -- against the real cluster: no user can get
or forge a certificate the node accepts, the API server accepts no certificate of the
node-client CA nor one with several CNs, the node logs a refused direct call, and the
API server's own exec through the node still works."""

from __future__ import annotations

import pathlib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from cluster import SCALE, Cluster
from forge import forge_client_cert
from hatchway import pki
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc


def _status(cluster: Cluster, port: int, head: str, cert: pki.CertPaths | None) -> int | None:
    """Send one request ``head`` (request line and headers) over TLS to ``port`` of the
    cluster: the HTTP status answered, or None when TLS refused us."""
    ctx = ssl.create_default_context(cafile=str(cluster.data_dir / "pki" / "ca.crt"))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(f"{head}Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
                answer = conn.recv(4096)
        except (ssl.SSLError, ConnectionError):
            return None
    return int(answer.split()[1]) if answer else None


def _direct_exec(cluster: Cluster, pod: str, cert: pki.CertPaths | None) -> int | None:
    """Dial the node port as an attacker would and ask it to upgrade an exec into
    ``default/pod``: the HTTP status it answers, or None when TLS refused us."""
    head = (
        f"POST /exec/default/{pod}/main?command=id&output=1 HTTP/1.1\r\n"
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    )
    return _status(cluster, cluster.node_port, head, cert)


def test_kubeconfig_user_cannot_mint_the_api_servers_identity(cluster: Cluster) -> None:
    """The issue's reproduction, first step: it used to print a kubeconfig."""
    result = cluster.hatchway(
        "kubeconfig", "user", "hatchway-apiserver", "--data-dir", str(cluster.data_dir)
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b'the user name "hatchway-apiserver" is reserved' in result.stderr


@pytest.mark.parametrize("organizations", [[], ["hatchway:apiservers"]])
def test_a_forged_cluster_ca_certificate_is_refused_by_the_node(
    cluster: Cluster, tmp_path: pathlib.Path, organizations: list[str]
) -> None:
    """Whoever holds a certificate -- or the key -- of the cluster CA signs
    CN=hatchway-apiserver and dials the node port directly: no exec as root."""
    pod = cluster.pod()
    before = _handshake_refusals(cluster)
    forged = forge_client_cert(
        cluster.data_dir / "pki", tmp_path / "forged", ["hatchway-apiserver"], organizations
    )
    assert _direct_exec(cluster, pod, forged) is None
    admin = pki.CertPaths(
        cluster.data_dir / "pki" / "admin.crt", cluster.data_dir / "pki" / "admin.key"
    )
    assert _direct_exec(cluster, pod, admin) is None
    _wait_for(lambda: _handshake_refusals(cluster) >= before + 2, "handshake refusals logged")


def _handshake_refusals(cluster: Cluster) -> int:
    log = (cluster.data_dir / "logs" / "node.log").read_text(errors="replace")
    return log.count("node: refused a TLS client in the handshake: ")


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """The node writes its log in its own time."""
    deadline = time.monotonic() + 10 * SCALE
    while not condition():
        assert time.monotonic() < deadline, f"not seen in the node's log: {what}"
        time.sleep(0.1)


def test_a_direct_call_without_certificate_is_401_and_logged(cluster: Cluster) -> None:
    pod = cluster.pod()
    assert _direct_exec(cluster, pod, None) == 401
    log = cluster.data_dir / "logs" / "node.log"
    expected = f"to '/exec/default/{pod}/main': no client certificate (status 401"
    _wait_for(lambda: expected in log.read_text(errors="replace"), expected)


def _kubectl_as(
    cluster: Cluster, tmp_path: pathlib.Path, cert: pki.CertPaths, *args: str
) -> subprocess.CompletedProcess[bytes]:
    empty = tmp_path / "empty.kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    return subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(empty),
            "--server",
            cluster.server,
            "--certificate-authority",
            str(cluster.data_dir / "pki" / "ca.crt"),
            "--client-certificate",
            str(cert.cert),
            "--client-key",
            str(cert.key),
            *args,
        ],
        capture_output=True,
        env=cluster.env,
        timeout=60 * SCALE,
    )


def test_the_api_server_refuses_the_node_client_ca(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    """The API server's own client certificate towards nodes is no identity at the API
    server: its client CA is the cluster CA alone."""
    pki_dir = cluster.data_dir / "pki"
    kubelet_client = pki.CertPaths(
        pki_dir / "apiserver-kubelet-client.crt", pki_dir / "apiserver-kubelet-client.key"
    )
    head = "GET /api/v1/namespaces/default/pods HTTP/1.1\r\n"
    assert _status(cluster, cluster.apiserver_port, head, kubelet_client) is None
    # kubectl words it as it may (TLS 1.3: the client finishes its handshake first, and
    # sees the refusal of its certificate as an alert, a reset or an EOF): just never as
    # an authenticated user's Forbidden.
    result = _kubectl_as(cluster, tmp_path, kubelet_client, "get", "pods")
    assert result.returncode == 1 and result.stdout == b""
    assert b"Forbidden" not in result.stderr, result.stderr


def test_a_certificate_with_two_cns_is_unauthenticated_at_the_api_server(
    cluster: Cluster, attacker: Attacker, tmp_path: pathlib.Path
) -> None:
    """Go reads the last CN, OpenSSL lists the first: neither is taken."""
    for names in (["nobody", attacker.name], [attacker.name, "nobody"]):
        forged = forge_client_cert(cluster.data_dir / "pki", tmp_path / "two", names)
        result = _kubectl_as(cluster, tmp_path, forged, "get", "pods", "-n", attacker.namespace)
        assert result.returncode == 1
        assert b"Unauthorized" in result.stderr, result.stderr


def test_the_api_server_still_execs_through_the_node(attacker: Attacker) -> None:
    name = f"id-{uuid.uuid4().hex[:6]}"
    created = attacker.create(pod_manifest(name, attacker.namespace))
    assert created.returncode == 0, created.stderr
    attacker.cluster.wait_phase(name, namespace=attacker.namespace)
    result = attacker.kubectl("exec", name, "--", "echo", "through the API server")
    assert (result.returncode, result.stdout) == (0, b"through the API server\n"), result.stderr
