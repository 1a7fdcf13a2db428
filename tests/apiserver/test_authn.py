from __future__ import annotations

import datetime
import hmac
import logging
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway.apiserver import authn
from hatchway.apiserver.authn import (
    AUTHENTICATED_GROUP,
    Authenticator,
    UserInfo,
    bearer_token,
    parse_token_file,
    user_from_peercert,
)
from hatchway.errors import ConfigError

TOKENS = """\
s3cret-admin,admin,uid-1,"system:masters,ops"
tok-alice,alice,uid-2
tok-bob , bob , uid-3 , "dev, qa"
tok-carol,carol,uid-4,single
"""


def write(tmp_path, text, name="tokens.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_token_file_quoted_groups_and_trimming() -> None:
    entries = parse_token_file(TOKENS)
    users = {e.user.name: e.user for e in entries}
    assert users["admin"] == UserInfo(
        "admin", ("system:masters", "ops", AUTHENTICATED_GROUP), "uid-1"
    )
    assert users["alice"].groups == (AUTHENTICATED_GROUP,)
    assert users["bob"].groups == ("dev", "qa", AUTHENTICATED_GROUP)
    assert users["bob"].uid == "uid-3"
    assert users["carol"].groups == ("single", AUTHENTICATED_GROUP)
    assert [e.line for e in entries] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("tok,alice\n", 1),
        ("tok-a,a,1\nonlytoken\n", 2),
        ('tok-a,a,1\ntok-b,b,2,"unterminated\n', 2),
        ("tok-a,,1\n", 1),
    ],
)
def test_bad_lines_raise_config_error_without_the_token(text, line) -> None:
    with pytest.raises(ConfigError) as info:
        parse_token_file(text, "tokens.csv")
    message = str(info.value)
    assert f"line {line}" in message or "malformed" in message
    assert "tok-a" not in message and "tok-b" not in message and "onlytoken" not in message


def test_empty_tokens_blank_lines_comments_duplicates(caplog) -> None:
    caplog.set_level(logging.WARNING)
    text = "\n# comment,x,y\n,nobody,0\ndup,first,1\ndup,second,2\n"
    entries = parse_token_file(text, "tokens.csv")
    assert [e.user.name for e in entries] == ["first"]
    assert "empty token" in caplog.text and "duplicate token" in caplog.text
    assert "dup" not in caplog.text.replace("duplicate", "")


def test_token_authentication(tmp_path) -> None:
    auth = Authenticator(write(tmp_path, TOKENS))
    assert auth.token_count == 4
    user = auth.authenticate(None, "Bearer tok-alice")
    assert user is not None and user.name == "alice" and user.uid == "uid-2"
    assert auth.authenticate(None, "bearer   tok-bob  ").name == "bob"
    assert auth.authenticate(None, "Bearer tok-alicE") is None
    assert auth.authenticate(None, "Bearer tok-alic") is None
    assert auth.authenticate(None, "Bearer tok-alice2") is None
    assert auth.authenticate(None, "Basic dG9rLWFsaWNlOg==") is None
    assert auth.authenticate(None, "Bearer") is None
    assert auth.authenticate(None, "Bearer tok-alice extra") is None
    assert auth.authenticate(None, "") is None
    assert auth.authenticate(None, None) is None


def test_no_anonymous_access_and_no_token_file() -> None:
    auth = Authenticator()
    assert auth.authenticate(None, None) is None
    assert auth.authenticate({}, "Bearer anything") is None


def test_constant_time_compare_is_used_over_every_entry(tmp_path, monkeypatch) -> None:
    auth = Authenticator(write(tmp_path, TOKENS))
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(authn.hmac, "compare_digest", spy)
    assert auth.authenticate(None, "Bearer tok-alice").name == "alice"
    # every entry compared (no early exit), always equal-length digests
    assert calls == [(32, 32)] * 4
    calls.clear()
    assert auth.authenticate(None, "Bearer x") is None
    assert calls == [(32, 32)] * 4


def test_reload_on_change_and_bad_reload_keeps_old(tmp_path, caplog) -> None:
    path = write(tmp_path, "tok-a,alice,1\n")
    auth = Authenticator(path, reload_interval=0)
    assert auth.authenticate(None, "Bearer tok-a").name == "alice"
    path.write_text("tok-b,bob,2,devs\n")
    os.utime(path, ns=(1, 10**18))
    assert auth.authenticate(None, "Bearer tok-a") is None
    assert auth.authenticate(None, "Bearer tok-b").groups == ("devs", AUTHENTICATED_GROUP)
    caplog.set_level(logging.WARNING)
    path.write_text("tok-secret-c\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert auth.authenticate(None, "Bearer tok-b").name == "bob"
    assert "not reloaded" in caplog.text and "tok-secret-c" not in caplog.text


def test_reload_is_rate_limited(tmp_path) -> None:
    path = write(tmp_path, "tok-a,alice,1\n")
    auth = Authenticator(path, reload_interval=3600)
    path.write_text("tok-b,bob,2\n")
    assert auth.authenticate(None, "Bearer tok-b") is None


def test_missing_token_file_at_start_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError):
        Authenticator(tmp_path / "nope.csv")


def test_tokens_never_logged(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    path = write(tmp_path, "tok-topsecret,alice,1\n")
    auth = Authenticator(path, reload_interval=0)
    auth.authenticate(None, "Bearer tok-topsecret")
    auth.authenticate(None, "Bearer tok-wrong-guess")
    path.write_text("tok-topsecret,alice,1\ntok-other,bob,2\n")
    auth.authenticate(None, "Bearer tok-topsecret")
    assert "tok-" not in caplog.text


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("  BEARER abc  ") == "abc"
    assert bearer_token("Bearer\tabc") is None
    assert bearer_token("Token abc") is None


PEERCERT = {
    "subject": (
        (("organizationName", "dev"),),
        (("organizationName", "system:masters"),),
        (("commonName", "alice"),),
    ),
    "issuer": ((("commonName", "hatchway-ca"),),),
}


def test_peercert_identity() -> None:
    user = user_from_peercert(PEERCERT)
    assert user == UserInfo("alice", ("dev", "system:masters", AUTHENTICATED_GROUP))
    assert user_from_peercert(PEERCERT, {"hatchway-ca"}) == user
    assert user_from_peercert(PEERCERT, {"other-ca"}) is None
    assert user_from_peercert({}) is None
    assert user_from_peercert(None) is None
    assert user_from_peercert({"subject": ((("organizationName", "x"),),)}) is None
    assert user_from_peercert({"subject": ((("commonName", ""),),)}) is None
    two_cns = {"subject": ((("commonName", "a"),), (("commonName", "b"),))}
    assert user_from_peercert(two_cns) is None
    assert user_from_peercert({"subject": "garbage"}) is None


def test_certificate_wins_over_token(tmp_path) -> None:
    auth = Authenticator(write(tmp_path, TOKENS))
    assert auth.authenticate(PEERCERT, "Bearer tok-bob").name == "alice"
    assert auth.authenticate({}, "Bearer tok-bob").name == "bob"


# ------------------------------------------------------------ real TLS end to end


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, key, sign_key, *, ca=False, san=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(sign_key, hashes.SHA256())


def _pem(tmp_path, name, cert, key):
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_identity_from_a_real_tls_client_certificate(tmp_path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hatchway-ca")
    ca = _cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    ca_path, _ = _pem(tmp_path, "ca", ca, ca_key)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost")])
    srv = _cert(_name("apiserver"), ca_name, srv_key, ca_key, san=san)
    srv_paths = _pem(tmp_path, "srv", srv, srv_key)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert(_name("alice", ("dev", "qa")), ca_name, cli_key, ca_key)
    cli_paths = _pem(tmp_path, "cli", cli, cli_key)

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_path)
    server_ctx.load_cert_chain(*srv_paths)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path)
    client_ctx.load_cert_chain(*cli_paths)

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["peercert"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(2) == b"ok"
    thread.join(10)
    listener.close()
    user = Authenticator(client_cert_issuers={"hatchway-ca"}).authenticate(seen["peercert"], None)
    assert user == UserInfo("alice", ("dev", "qa", AUTHENTICATED_GROUP))
