"""Hostile peers for the hardening tests: a throwaway CA with a 127.0.0.1 server
certificate (and a client certificate), and a raw SPDY client that writes frames the way
an attacker would -- several in one write, never reading what comes back."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway.protocol import spdy_frame as fr
from hatchway.protocol.spdy import SpdyProtocol
from hatchway.transport.bytestream import ByteStream


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool, ip: bool) -> x509.Certificate:  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Tls:
    """Contexts of one throwaway CA: ``server`` (asks for, does not require, a client
    certificate), ``client`` (no certificate) and ``client_cert`` (CN ``hostile-user``)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    client_cert: ssl.SSLContext


def make_tls(tmp: Path) -> Tls:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile-test-ca")])
    ca = _cert("hostile-test-ca", ca_key, ca_name, ca_key, ca=True, ip=False)
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    for name, cn, ip in (("server", "127.0.0.1", True), ("user", "hostile-user", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca_name, ca_key, ca=False, ip=ip)
        (tmp / f"{name}.pem").write_bytes(cert.public_bytes(pem))
        (tmp / f"{name}-key.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp / "ca.pem"))
    server.load_cert_chain(tmp / "server.pem", tmp / "server-key.pem")
    server.verify_mode = ssl.CERT_OPTIONAL
    client = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    client_cert = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    client_cert.load_cert_chain(tmp / "user.pem", tmp / "user-key.pem")
    return Tls(server, client, client_cert)


class RawSpdyClient:
    """The client side of SPDY as bytes: a sans-I/O protocol to keep the header
    compression in step, and a ByteStream written to directly."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.proto = SpdyProtocol(client=True)

    def syn(self, streamtype: str, fin: bool = False) -> tuple[int, bytes]:
        sid = self.proto.open_stream({"streamtype": streamtype}, fin)
        return sid, self.proto.data_to_send()

    def rst(self, sid: int, status: int = fr.RstStatus.CANCEL) -> bytes:
        return fr.RstStreamFrame(sid, status).serialize()

    @staticmethod
    def ping(ping_id: int) -> bytes:
        return fr.PingFrame(ping_id).serialize()

    def send(self, *frames: bytes) -> None:
        """All of ``frames`` in one write: the peer gets them in one read."""
        self.stream.write(b"".join(frames))
