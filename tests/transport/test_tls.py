"""TLS contexts over real handshakes on loopback: ALPN, mutual TLS, identities."""

from __future__ import annotations

import logging
import os
import pathlib
import ssl

import pytest

from forge import forge_client_cert
from hatchway import pki
from hatchway.errors import ConfigError, ConnectionClosedError, HatchwayError
from hatchway.transport import tls, tls_core
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.http import HttpServer, Request, Response, request

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 10 * SCALE


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.ensure_pki(tmp_path_factory.mktemp("data"), node_name="node-a")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CertPaths:
    """A CA the servers do not trust, and a client certificate it issued."""
    directory = tmp_path_factory.mktemp("other")
    ca = pki.create_ca(directory, name="evil-ca")
    pki.issue_certificate(
        ca, directory / "intruder", common_name="admin", organizations=["system:masters"]
    )
    return ca


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, req: Request) -> Response:
        self.requests.append(req)
        ident = tls.peer_identity(req.peercert)
        return Response(200, body=repr(ident).encode())


@pytest.fixture
async def mtls_server(certs: pki.Pki):
    started: list[HttpServer] = []

    async def start(
        *, require: bool = False, client_ca=None, log_refusals=None
    ) -> tuple[int, Recorder]:
        app = Recorder()
        server = HttpServer(app)
        ctx = tls.server_context(
            certs.node.cert,
            certs.node.key,
            client_ca=client_ca or certs.ca.cert,
            require_client_cert=require,
            log_refusals=log_refusals,
        )
        await server.start("127.0.0.1", 0, ssl=ctx)
        started.append(server)
        return server.port, app

    yield start
    for server in started:
        await server.close()


async def test_client_without_certificate_is_anonymous_on_optional(mtls_server, certs) -> None:
    port, app = await mtls_server()
    ctx = tls.client_context(ca_file=certs.ca.cert)
    resp = await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert resp.status == 200 and resp.body == b"None"
    assert app.requests[0].peercert is None


async def test_client_certificate_identity(mtls_server, certs) -> None:
    port, app = await mtls_server(require=True, client_ca=certs.node_client_ca.cert)
    ctx = tls.client_context(
        ca_file=certs.ca.cert, cert_file=certs.apiserver_kubelet_client.cert,
        key_file=certs.apiserver_kubelet_client.key,
    )  # fmt: skip
    resp = await request("GET", f"https://localhost:{port}/", ssl=ctx, timeout=T)
    assert resp.body == repr(("hatchway-apiserver", ["hatchway:apiservers"])).encode()
    assert tls.peer_identity(app.requests[0].peercert) == (
        "hatchway-apiserver",
        ["hatchway:apiservers"],
    )


async def test_minted_user_cert_as_data(mtls_server, certs) -> None:
    port, _ = await mtls_server(require=True)
    cert_pem, key_pem = pki.mint_user_cert(certs.ca, "alice", ["devs", "ops"])
    ctx = tls.client_context(
        ca_data=pki.pem_bytes(certs.ca.cert), cert_data=cert_pem, key_data=key_pem
    )
    resp = await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx)
    assert resp.body == repr(("alice", ["devs", "ops"])).encode()


async def test_wrong_ca_client_certificate_fails_handshake(mtls_server, certs, other_ca) -> None:
    port, app = await mtls_server()
    intruder = other_ca.cert.parent / "intruder"
    ctx = tls.client_context(
        ca_file=certs.ca.cert,
        cert_file=intruder.with_suffix(".crt"),
        key_file=intruder.with_suffix(".key"),
    )
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosedError, HatchwayError)):
        await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert app.requests == []


async def test_required_client_certificate_missing_fails(mtls_server, certs) -> None:
    port, app = await mtls_server(require=True)
    ctx = tls.client_context(ca_file=certs.ca.cert)
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosedError, HatchwayError)):
        await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert app.requests == []


async def test_server_certificate_from_other_ca_is_rejected(mtls_server, other_ca) -> None:
    port, app = await mtls_server()
    ctx = tls.client_context(ca_file=other_ca.cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert app.requests == []
    insecure = tls.client_context(insecure=True)
    resp = await request("GET", f"https://127.0.0.1:{port}/", ssl=insecure, timeout=T)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("offered", "selected"),
    [(["h2", "http/1.1"], "http/1.1"), (None, None), (["h2"], None)],
    ids=["h2-and-http11", "no-alpn", "h2-only"],
)
async def test_alpn(mtls_server, certs, offered, selected) -> None:
    port, _ = await mtls_server()
    ctx = tls.client_context(ca_file=certs.ca.cert, alpn=offered)
    stream = await ByteStream.connect("127.0.0.1", port, ssl=ctx, timeout=T)
    try:
        assert tls.negotiated_alpn(stream.get_extra_info("ssl_object")) == selected
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := await stream.read():
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        stream.abort()


def test_server_context_settings(certs) -> None:
    ctx = tls.server_context(certs.apiserver.cert, certs.apiserver.key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    optional = tls.server_context(certs.node.cert, certs.node.key, client_ca=certs.ca.cert)
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    with pytest.raises(ConfigError):
        tls.server_context(certs.node.cert, certs.node.key, require_client_cert=True)
    with pytest.raises(ConfigError):
        tls.server_context(certs.node.cert, certs.ca.key)  # key does not match


def test_client_context_data_files_are_removed(certs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    cert_pem, key_pem = pki.mint_user_cert(certs.ca, "bob")
    ctx = tls.client_context(cert_data=cert_pem, key_data=key_pem, insecure=True)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        tls.client_context(cert_data=cert_pem, key_data=b"not a key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux's")
def test_private_file_is_an_anonymous_memory_file() -> None:
    """On Linux the PEM text never reaches a file system: a memfd, gone once loaded."""
    with tls_core._private_file(b"pem text") as path:
        assert path.startswith("/proc/self/fd/")
        assert pathlib.Path(path).read_bytes() == b"pem text"
        target = os.readlink(path)
        assert target.startswith("/memfd:hatchway-pem"), target
    assert not os.path.exists(path) or os.readlink(path) != target


def test_peer_identity_shapes() -> None:
    cert = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("organizationName", "devs"),),
            (("commonName", "admin"),),
        )
    }
    assert tls.peer_identity(cert) == ("admin", ["system:masters", "devs"])
    assert tls.peer_identity(None) is None
    assert tls.peer_identity({}) is None
    assert tls.peer_identity({"subject": ((("organizationName", "x"),),)}) is None


def test_peer_identity_refuses_several_or_empty_common_names() -> None:
    """Go's crypto/x509 (Kubernetes) reads the last CN, OpenSSL lists the first: with two
    a certificate names two users, so it names none."""
    two = {"subject": ((("commonName", "hatchway-apiserver"),), (("commonName", "eve"),))}
    assert tls.peer_identity(two) is None
    multi_valued = {"subject": ((("commonName", "eve"), ("commonName", "hatchway-apiserver")),)}
    assert tls.peer_identity(multi_valued) is None
    assert tls.peer_identity({"subject": ((("commonName", ""),),)}) is None
    orgs = {"subject": ((("organizationName", "a"),), (("organizationName", "b"),))}
    assert tls.peer_identity({"subject": (*orgs["subject"], (("commonName", "u"),))}) == (
        "u",
        ["a", "b"],
    )
    assert tls.peer_issuer({"issuer": ((("commonName", "hatchway-ca"),),)}) == (
        ("commonName", "hatchway-ca"),
    )
    assert tls.peer_issuer(None) == () and tls.peer_issuer({"issuer": "junk"}) == ()


async def test_a_verified_certificate_with_two_cns_has_no_identity(
    mtls_server, certs, tmp_path
) -> None:
    port, app = await mtls_server(require=True)
    two = forge_client_cert(certs.ca, tmp_path / "two", ["hatchway-apiserver", "eve"])
    ctx = tls.client_context(ca_file=certs.ca.cert, cert_file=two.cert, key_file=two.key)
    resp = await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert resp.body == b"None"
    cns = [v for rdn in app.requests[0].peercert["subject"] for k, v in rdn if k == "commonName"]
    assert cns == ["hatchway-apiserver", "eve"]  # the handshake did verify it


async def test_a_user_certificate_fails_against_the_node_client_ca(mtls_server, certs) -> None:
    port, app = await mtls_server(client_ca=certs.node_client_ca.cert)
    cert_pem, key_pem = pki.mint_component_cert(certs.ca, pki.APISERVER_CLIENT_CN)
    ctx = tls.client_context(ca_file=certs.ca.cert, cert_data=cert_pem, key_data=key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosedError, HatchwayError)):
        await request("GET", f"https://127.0.0.1:{port}/", ssl=ctx, timeout=T)
    assert app.requests == []


async def test_refused_handshakes_are_logged_when_asked(mtls_server, certs, caplog) -> None:
    port, _ = await mtls_server(client_ca=certs.node_client_ca.cert, log_refusals="node")
    user_pem, user_key = pki.mint_user_cert(certs.ca, "carol")
    refused = tls.client_context(ca_file=certs.ca.cert, cert_data=user_pem, key_data=user_key)
    with caplog.at_level(logging.WARNING, "hatchway.transport.tls"):
        with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosedError, HatchwayError)):
            await request("GET", f"https://127.0.0.1:{port}/", ssl=refused, timeout=T)
        accepted = tls.client_context(
            ca_file=certs.ca.cert,
            cert_file=certs.apiserver_kubelet_client.cert,
            key_file=certs.apiserver_kubelet_client.key,
        )
        resp = await request("GET", f"https://127.0.0.1:{port}/", ssl=accepted, timeout=T)
    assert resp.body == repr(("hatchway-apiserver", ["hatchway:apiservers"])).encode()
    lines = [r.getMessage() for r in caplog.records if r.name == "hatchway.transport.tls"]
    # OpenSSL's verify message: the client sends the cluster CA along (auto-chaining from
    # its trust store), so it says "self-signed certificate in certificate chain".
    assert len(lines) == 1 and lines[0].startswith("node: refused a TLS client in the handshake: ")
    assert "certificate" in lines[0].rpartition(": ")[2]


def _tickets_after_a_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """A real TLS 1.3 handshake over memory BIOs and one byte each way: whether the
    client's session holds a ticket afterwards (tickets follow the handshake)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(8):
        for end in (cli, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    srv.write(b"x")
    c_in.write(s_out.read())
    assert cli.read(1) == b"x" and cli.version() == "TLSv1.3"
    assert cli.session is not None
    return cli.session.has_ticket


def test_session_tickets_can_be_turned_off(certs) -> None:
    client = tls.client_context(ca_file=certs.ca.cert)
    default = tls.server_context(certs.apiserver.cert, certs.apiserver.key)
    assert _tickets_after_a_handshake(default, client)
    none = tls.server_context(certs.apiserver.cert, certs.apiserver.key, session_tickets=0)
    assert none.num_tickets == 0
    assert not _tickets_after_a_handshake(none, client)
