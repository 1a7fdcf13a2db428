"""Who may call the node endpoint, over real mutual TLS (no runtime: lookups and starts
are stubs that record whether they were reached): exactly the API server's identity --
one CN, issued by the node-client CA -- and every refusal is logged."""

from __future__ import annotations

import logging
import os
import pathlib
import ssl
from collections.abc import AsyncIterator

import pytest

from forge import forge_client_cert
from hatchway import pki
from hatchway.errors import ConnectionClosedError, HatchwayError
from hatchway.node.identity import CallerIdentity
from hatchway.node.server import NodeEndpoint
from hatchway.transport import httpclient, tls
from hatchway.transport.http import HttpServer

T = 10 * float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
EXEC = "/exec/default/p/main?command=id&output=1"
TLS_REFUSED = (ssl.SSLError, ConnectionError, ConnectionClosedError, HatchwayError)


class Endpoint:
    """A node endpoint on loopback whose stubs note each request that got through."""

    def __init__(self, paths: pki.Pki) -> None:
        self.paths = paths
        self.reached: list[str] = []
        self.server: HttpServer | None = None

    async def lookup(self, namespace: str, pod: str, uid: str, container: str) -> tuple[str, bool]:
        self.reached.append(f"{namespace}/{pod}/{container}")
        return ("cid", True)

    def start(self, container_id: str, options: object) -> object:
        raise AssertionError("nothing may start: no test upgrades")

    async def serve(self, client_ca: pathlib.Path) -> int:
        endpoint = NodeEndpoint(
            caller=CallerIdentity.from_ca(str(self.paths.node_client_ca.cert)),
            lookup=self.lookup,
            start=self.start,
        )
        self.server = HttpServer(endpoint)
        ctx = tls.server_context(self.paths.node.cert, self.paths.node.key, client_ca=client_ca)
        await self.server.start("127.0.0.1", 0, ssl=ctx)
        return self.server.port

    async def get(self, port: int, cert: pki.CertPaths | None) -> httpclient.ClientResponse:
        ctx = tls.client_context(
            ca_file=self.paths.ca.cert,
            cert_file=cert.cert if cert else None,
            key_file=cert.key if cert else None,
        )
        return await httpclient.request(
            "GET", f"https://127.0.0.1:{port}{EXEC}", ssl=ctx, timeout=T
        )


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.ensure_pki(tmp_path_factory.mktemp("data"), node_name="n1")


@pytest.fixture
async def endpoint(paths: pki.Pki) -> AsyncIterator[Endpoint]:
    found = Endpoint(paths)
    yield found
    if found.server is not None:
        await found.server.close()


@pytest.fixture
def bundle(paths: pki.Pki, tmp_path: pathlib.Path) -> pathlib.Path:
    """Both CAs in one trust file, as an operator's CA bundle might be: the issuer check
    must then keep cluster-CA certificates out on its own."""
    path = tmp_path / "bundle.crt"
    path.write_bytes(paths.node_client_ca.cert.read_bytes() + paths.ca.cert.read_bytes())
    return path


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hatchway.node.identity" and r.levelno == logging.WARNING
    ]


async def test_the_api_server_gets_through(endpoint: Endpoint, paths: pki.Pki, caplog) -> None:
    port = await endpoint.serve(paths.node_client_ca.cert)
    response = await endpoint.get(port, paths.apiserver_kubelet_client)
    assert (response.status, response.body) == (400, b"Upgrade request required\n")
    assert endpoint.reached == ["default/p/main"]
    assert _refusals(caplog) == []


async def test_no_certificate_is_401_and_logged(endpoint: Endpoint, paths: pki.Pki, caplog) -> None:
    port = await endpoint.serve(paths.node_client_ca.cert)
    with caplog.at_level(logging.WARNING, "hatchway.node.identity"):
        response = await endpoint.get(port, None)
    assert (response.status, response.body) == (401, b"Unauthorized\n")
    assert endpoint.reached == []
    [line] = _refusals(caplog)
    assert line.startswith("refused a direct call from 127.0.0.1:")
    assert "to '/exec/default/p/main': no client certificate (status 401" in line
    assert "command=id" not in line  # the query (exec arguments) is never logged


async def test_a_cluster_ca_certificate_fails_the_handshake(
    endpoint: Endpoint, paths: pki.Pki, tmp_path: pathlib.Path
) -> None:
    """Finding 4: a certificate of the cluster CA named like the API server -- what
    ``kubeconfig user hatchway-apiserver`` minted -- is not even a TLS peer of the node."""
    port = await endpoint.serve(paths.node_client_ca.cert)
    forged = forge_client_cert(
        paths.ca, tmp_path / "forged", ["hatchway-apiserver"], ["hatchway:apiservers"]
    )
    for cert in (forged, paths.admin, paths.node):
        with pytest.raises(TLS_REFUSED):
            await endpoint.get(port, cert)
    assert endpoint.reached == []


async def test_right_name_wrong_issuer_is_403_and_logged(
    endpoint: Endpoint, paths: pki.Pki, bundle: pathlib.Path, tmp_path: pathlib.Path, caplog
) -> None:
    port = await endpoint.serve(bundle)
    forged = forge_client_cert(paths.ca, tmp_path / "forged", ["hatchway-apiserver"])
    with caplog.at_level(logging.WARNING, "hatchway.node.identity"):
        response = await endpoint.get(port, forged)
    assert response.status == 403
    assert response.body == (
        b"Forbidden (user=hatchway-apiserver, verb=create, resource=nodes, subresource=proxy)\n"
    )
    assert endpoint.reached == []
    [line] = _refusals(caplog)
    assert "not issued by the node-client CA (status 403" in line
    assert "subject CN ['hatchway-apiserver'], issuer 'CN=hatchway-ca'" in line


@pytest.mark.parametrize(
    ("names", "user", "reason"),
    [
        (["hatchway-apiserver", "eve"], "", "the subject needs exactly one non-empty CN"),
        (["eve", "hatchway-apiserver"], "", "the subject needs exactly one non-empty CN"),
        (["eve"], "eve", "not the API server's identity"),
    ],
    ids=["two-cns", "two-cns-reversed", "other-name"],
)
async def test_node_client_ca_certificates_other_than_the_api_servers_are_403(
    endpoint: Endpoint, paths: pki.Pki, tmp_path: pathlib.Path, caplog, names, user, reason
) -> None:
    """Even from the node-client CA (should it ever sign another leaf), only one CN equal
    to the API server's client name gets through."""
    port = await endpoint.serve(paths.node_client_ca.cert)
    cert = forge_client_cert(paths.node_client_ca, tmp_path / "c", names)
    with caplog.at_level(logging.WARNING, "hatchway.node.identity"):
        response = await endpoint.get(port, cert)
    assert response.status == 403
    assert response.body.decode() == (
        f"Forbidden (user={user}, verb=create, resource=nodes, subresource=proxy)\n"
    )
    assert endpoint.reached == []
    [line] = _refusals(caplog)
    assert f"{reason} (status 403; subject CN {names!r}" in line


def test_check_without_tls(paths: pki.Pki) -> None:
    """The decision alone, on getpeercert() shapes."""
    caller = CallerIdentity.from_ca(str(paths.node_client_ca.cert))
    assert caller == CallerIdentity(
        "hatchway-apiserver", (("commonName", "hatchway-node-client-ca"),)
    )
    issuer = ((("commonName", "hatchway-node-client-ca"),),)
    good = {"subject": ((("commonName", "hatchway-apiserver"),),), "issuer": issuer}
    assert caller.check(good) is None
    assert caller.check(None).status == 401  # type: ignore[union-attr]
    assert caller.check({}).status == 401  # type: ignore[union-attr]
    longer = {**good, "issuer": (*issuer, (("organizationName", "x"),))}
    assert caller.check(longer).status == 403  # type: ignore[union-attr]
    assert caller.check({**good, "issuer": "junk"}).status == 403  # type: ignore[union-attr]
    empty = {**good, "subject": ((("commonName", ""),),)}  # cryptography cannot sign one
    assert caller.check(empty).status == 403  # type: ignore[union-attr]
