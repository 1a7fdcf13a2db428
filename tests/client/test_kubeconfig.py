"""kubeconfig loading, merging, redaction and writing, against files on disk."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import textwrap

import pytest
import yaml

from hatchway.client.kubeconfig import (
    DATA_OMITTED,
    REDACTED,
    config_view,
    default_write_path,
    load_kubeconfig,
    merge_context,
    remove_context,
    render_kubeconfig,
    use_context,
)
from hatchway.errors import ConfigError

CA = b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nSECRETKEY\n-----END EC PRIVATE KEY-----\n"
TOKEN = "s3cr3t-t0ken-value"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def simple(name: str, server: str, *, current: str | None = None, ns: str | None = None) -> str:
    ns_line = f"\n    namespace: {ns}" if ns else ""
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {b64(CA)}
users:
- name: {name}
  user:
    token: {TOKEN}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}{ns_line}
current-context: {current if current is not None else name}
"""


# ------------------------------------------------------------------- loading


def test_explicit_path_data_fields(tmp_path) -> None:
    p = write(tmp_path / "kc", simple("a", "https://127.0.0.1:6443", ns="team"))
    cfg = load_kubeconfig(p, env={})
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.ca_data == CA
    assert cfg.token == TOKEN
    assert cfg.namespace == "team"
    assert (cfg.context_name, cfg.cluster_name, cfg.user_name) == ("a", "a", "a")
    assert cfg.insecure_skip_tls_verify is False


def test_namespace_defaults_to_default(tmp_path) -> None:
    p = write(tmp_path / "kc", simple("a", "https://127.0.0.1:6443"))
    assert load_kubeconfig(p, env={}).namespace == "default"


def test_home_kube_config_used_without_kubeconfig_env(tmp_path) -> None:
    write(tmp_path / ".kube" / "config", simple("home", "https://127.0.0.2:6443"))
    cfg = load_kubeconfig(env={"HOME": str(tmp_path)})
    assert cfg.context_name == "home"


def test_kubeconfig_env_several_files_first_wins(tmp_path) -> None:
    first = write(tmp_path / "one", simple("shared", "https://127.0.0.1:1111", current="shared"))
    second_text = simple("shared", "https://127.0.0.1:2222", current="other")
    second_doc = yaml.safe_load(second_text)
    second_doc["clusters"].append({"name": "only2", "cluster": {"server": "https://127.0.0.1:3"}})
    second_doc["contexts"].append({"name": "other", "context": {"cluster": "only2"}})
    second = tmp_path / "two"
    second.write_text(yaml.safe_dump(second_doc))
    env = {"KUBECONFIG": os.pathsep.join([first, str(second)]), "HOME": str(tmp_path / "no")}
    cfg = load_kubeconfig(env=env)
    # current-context from the first file; cluster "shared" from the first file too.
    assert cfg.context_name == "shared"
    assert cfg.server == "https://127.0.0.1:1111"
    # Entries only the second file defines are still there.
    other = load_kubeconfig(env=env, context="other")
    assert other.server == "https://127.0.0.1:3"
    assert other.user_name == ""
    assert other.token is None
    # Reversed order, reversed precedence.
    env["KUBECONFIG"] = os.pathsep.join([str(second), first])
    cfg = load_kubeconfig(env=env)
    assert cfg.context_name == "other"
    assert load_kubeconfig(env=env, context="shared").server == "https://127.0.0.1:2222"


def test_first_nonempty_current_context_wins(tmp_path) -> None:
    first = write(tmp_path / "one", simple("a", "https://127.0.0.1:1", current='""'))
    second = write(tmp_path / "two", simple("b", "https://127.0.0.1:2"))
    cfg = load_kubeconfig(env={"KUBECONFIG": f"{first}{os.pathsep}{second}"})
    assert cfg.context_name == "b"


def test_missing_files_in_kubeconfig_env_are_skipped(tmp_path) -> None:
    real = write(tmp_path / "real", simple("a", "https://127.0.0.1:6443"))
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "nope"), "", real, real])}
    assert load_kubeconfig(env=env).context_name == "a"


def test_all_missing_is_an_error(tmp_path) -> None:
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "x"), str(tmp_path / "y")])}
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_kubeconfig(env=env)
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_kubeconfig(env={"HOME": str(tmp_path)})


def test_explicit_missing_path_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_kubeconfig(str(tmp_path / "absent"), env={})


def test_explicit_path_overrides_env(tmp_path) -> None:
    env_file = write(tmp_path / "env", simple("env", "https://127.0.0.1:1"))
    explicit = write(tmp_path / "explicit", simple("explicit", "https://127.0.0.1:2"))
    cfg = load_kubeconfig(explicit, env={"KUBECONFIG": env_file})
    assert cfg.context_name == "explicit"


def test_relative_file_references_resolve_against_the_kubeconfig_dir(tmp_path, monkeypatch) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "pki").mkdir(parents=True)
    (conf_dir / "pki" / "ca.crt").write_bytes(CA)
    (conf_dir / "pki" / "client.crt").write_bytes(CERT)
    (conf_dir / "pki" / "client.key").write_bytes(KEY)
    (conf_dir / "token").write_text(f"  {TOKEN}\n")
    p = write(
        conf_dir / "kc",
        """\
        clusters:
        - name: c
          cluster: {server: "https://127.0.0.1:6443", certificate-authority: pki/ca.crt}
        users:
        - name: cert
          user: {client-certificate: pki/client.crt, client-key: ./pki/client.key}
        - name: tok
          user: {tokenFile: token}
        contexts:
        - {name: cert, context: {cluster: c, user: cert}}
        - {name: tok, context: {cluster: c, user: tok}}
        current-context: cert
        """,
    )
    monkeypatch.chdir(tmp_path)  # somewhere else than the kubeconfig's directory
    cfg = load_kubeconfig(p, env={})
    assert cfg.ca_data == CA
    assert cfg.client_cert_data == CERT
    assert cfg.client_key_data == KEY
    tok = load_kubeconfig(p, context="tok", env={})
    assert tok.token == TOKEN  # trimmed, as client-go does
    # config view shows the references as written, as kubectl does
    view = config_view(p, env={})
    assert view["clusters"][0]["cluster"]["certificate-authority"] == "pki/ca.crt"


def test_token_wins_over_token_file(tmp_path) -> None:
    p = write(
        tmp_path / "kc",
        f"""\
        clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
        users: [{{name: u, user: {{token: {TOKEN}, tokenFile: /nonexistent/file}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
        current-context: x
        """,
    )
    assert load_kubeconfig(p, env={}).token == TOKEN


def test_data_and_file_both_given_is_an_error(tmp_path) -> None:
    (tmp_path / "ca.crt").write_bytes(CA)
    p = write(
        tmp_path / "kc",
        f"""\
        clusters:
        - name: c
          cluster:
            server: https://127.0.0.1:1
            certificate-authority: ca.crt
            certificate-authority-data: {b64(CA)}
        contexts: [{{name: x, context: {{cluster: c}}}}]
        current-context: x
        """,
    )
    with pytest.raises(ConfigError, match="certificate-authority-data and certificate-authority"):
        load_kubeconfig(p, env={})


def test_unreadable_reference_file(tmp_path) -> None:
    p = write(
        tmp_path / "kc",
        """\
        clusters:
        - {name: c, cluster: {server: "https://127.0.0.1:1", certificate-authority: x.crt}}
        contexts: [{name: x, context: {cluster: c}}]
        current-context: x
        """,
    )
    with pytest.raises(ConfigError, match=r"unable to read certificate-authority .*x\.crt"):
        load_kubeconfig(p, env={})


def test_insecure_skip_tls_verify_and_server_name(tmp_path) -> None:
    p = write(
        tmp_path / "kc",
        """\
        clusters:
        - name: c
          cluster: {server: "127.0.0.1:6443", insecure-skip-tls-verify: true, tls-server-name: api}
        users: [{name: u, user: {username: admin, password: hunter2}}]
        contexts: [{name: x, context: {cluster: c, user: u, namespace: ns1}}]
        current-context: x
        """,
    )
    cfg = load_kubeconfig(p, env={})
    assert cfg.insecure_skip_tls_verify is True
    assert cfg.tls_server_name == "api"
    assert cfg.server == "https://127.0.0.1:6443"  # bare host:port + TLS -> https
    assert (cfg.username, cfg.password) == ("admin", "hunter2")
    assert "hunter2" not in repr(cfg)


def test_insecure_with_ca_is_refused(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="insecure"):
        load_kubeconfig(str(p), env={})


def test_client_cert_without_key(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["users"][0]["user"] = {"client-certificate-data": b64(CERT)}
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="client-key-data or client-key must be specified"):
        load_kubeconfig(str(p), env={})


@pytest.mark.parametrize(
    ("mutate", "context", "pattern"),
    [
        (lambda d: d.update({"current-context": ""}), None, "no current context"),
        (lambda d: d.pop("current-context"), None, "no current context"),
        (lambda d: None, "nope", 'context "nope" not found'),
        (lambda d: d.update({"clusters": []}), None, 'cluster "a" was not found for context "a"'),
        (lambda d: d.update({"users": []}), None, 'user "a" was not found for context "a"'),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), None, "no server found"),
        (lambda d: d["contexts"][0]["context"].pop("cluster"), None, "names no cluster"),
        (
            lambda d: d["clusters"].append(d["clusters"][0]),
            None,
            'duplicate name "a" in clusters',
        ),
    ],
)
def test_config_errors(tmp_path, mutate, context, pattern) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    mutate(doc)
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=pattern):
        load_kubeconfig(str(p), context=context, env={})


def test_bad_yaml_does_not_echo_content(tmp_path) -> None:
    p = tmp_path / "kc"
    p.write_text(f"users:\n- name: u\n  user:\n    token: {TOKEN}: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML.*line 4") as info:
        load_kubeconfig(str(p), env={})
    assert TOKEN not in str(info.value)


def test_not_a_mapping(tmp_path) -> None:
    p = tmp_path / "kc"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_kubeconfig(str(p), env={})


def test_unreadable_kubeconfig(tmp_path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        load_kubeconfig(str(d), env={})


def test_bad_base64_does_not_echo_value(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["users"][0]["user"] = {"client-certificate-data": b64(CERT), "client-key-data": "S3Cr*t"}
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"client-key-data .* not valid base64") as info:
        load_kubeconfig(str(p), env={})
    assert "S3Cr" not in str(info.value)


def test_base64_with_line_breaks_is_accepted(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    wrapped = "\n".join(textwrap.wrap(b64(CA * 3), 20))
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = wrapped
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    assert load_kubeconfig(str(p), env={}).ca_data == CA * 3


def test_repr_redacts_secrets(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["users"][0]["user"]["client-certificate-data"] = b64(CERT)
    doc["users"][0]["user"]["client-key-data"] = b64(KEY)
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    cfg = load_kubeconfig(str(p), env={})
    text = repr(cfg) + str(cfg)
    assert TOKEN not in text
    assert "SECRETKEY" not in text and b64(KEY) not in text
    assert "REDACTED" in text
    assert "https://127.0.0.1:1" in text


# --------------------------------------------------------------------- views


def test_config_view_redacts_like_kubectl(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["users"].append(
        {"name": "c", "user": {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}}
    )
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    view = config_view(str(p), env={})
    users = {u["name"]: u["user"] for u in view["users"]}
    assert view["clusters"][0]["cluster"]["certificate-authority-data"] == DATA_OMITTED
    assert users["a"]["token"] == REDACTED
    assert users["c"] == {"client-certificate-data": DATA_OMITTED, "client-key-data": DATA_OMITTED}
    dumped = yaml.safe_dump(view)
    assert TOKEN not in dumped and b64(KEY) not in dumped
    raw = config_view(str(p), raw=True, env={})
    assert {u["name"]: u["user"] for u in raw["users"]}["a"]["token"] == TOKEN
    assert raw["kind"] == "Config" and raw["current-context"] == "a"


def test_config_view_minify(tmp_path) -> None:
    a = write(tmp_path / "a", simple("a", "https://127.0.0.1:1"))
    b = write(tmp_path / "b", simple("b", "https://127.0.0.1:2"))
    env = {"KUBECONFIG": f"{a}{os.pathsep}{b}"}
    full = config_view(env=env)
    assert [c["name"] for c in full["contexts"]] == ["a", "b"]
    mini = config_view(minify=True, env=env)
    assert [c["name"] for c in mini["contexts"]] == ["a"]
    assert [c["name"] for c in mini["clusters"]] == ["a"]
    assert [u["name"] for u in mini["users"]] == ["a"]
    with pytest.raises(ConfigError, match="current-context must exist"):
        config_view(str(tmp_path / "none"), minify=True, env={})


def test_render_kubeconfig_loads_back(tmp_path) -> None:
    text = render_kubeconfig("hw", "https://127.0.0.1:6443", CA, CERT, KEY, namespace="dev")
    doc = yaml.safe_load(text)
    assert doc["users"][0]["user"]["client-key-data"] == b64(KEY)
    assert list(doc) == [
        "apiVersion",
        "clusters",
        "contexts",
        "current-context",
        "kind",
        "preferences",
        "users",
    ]
    p = tmp_path / "kc"
    p.write_text(text)
    cfg = load_kubeconfig(str(p), env={})
    assert (cfg.ca_data, cfg.client_cert_data, cfg.client_key_data) == (CA, CERT, KEY)
    assert cfg.namespace == "dev" and cfg.context_name == "hw"
    tok = yaml.safe_load(render_kubeconfig("t", "https://h:1", CA.decode(), token=TOKEN))
    assert tok["users"][0]["user"] == {"token": TOKEN}


# ------------------------------------------------------------------- writing


def _cluster(port: int) -> dict:
    return {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": b64(CA)}


def _user() -> dict:
    return {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}


def test_merge_creates_kube_dir_and_file_0600(tmp_path) -> None:
    env = {"HOME": str(tmp_path)}
    path = merge_context(None, "hatchway", _cluster(6443), _user(), namespace="dev", env=env)
    assert path == str(tmp_path / ".kube" / "config")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cfg = load_kubeconfig(env=env)
    assert cfg.context_name == "hatchway" and cfg.namespace == "dev"
    assert cfg.client_key_data == KEY
    assert not os.path.exists(path + ".lock")
    assert [n for n in os.listdir(tmp_path / ".kube") if n != "config"] == []


def test_merge_keeps_other_entries_and_is_idempotent(tmp_path) -> None:
    original = simple("other", "https://127.0.0.1:9")
    original = original.replace("kind: Config\n", "kind: Config\nextensions: [{name: keep}]\n")
    p = write(tmp_path / "kc", original)
    # The untouched entry keeps a relative reference exactly as written.
    doc = yaml.safe_load(open(p))
    doc["users"].append({"name": "rel", "user": {"tokenFile": "rel/token"}})
    open(p, "w").write(yaml.safe_dump(doc, sort_keys=False))
    os.chmod(p, 0o644)

    merge_context(p, "hatchway", _cluster(6443), _user(), set_current=False)
    once = open(p).read()
    merge_context(p, "hatchway", _cluster(6443), _user(), set_current=False)
    assert open(p).read() == once
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600

    after = yaml.safe_load(once)
    assert after["current-context"] == "other"  # set_current=False
    assert after["extensions"] == [{"name": "keep"}]
    assert {c["name"] for c in after["clusters"]} == {"other", "hatchway"}
    assert {"name": "rel", "user": {"tokenFile": "rel/token"}} in after["users"]
    assert load_kubeconfig(p, env={}).server == "https://127.0.0.1:9"
    assert load_kubeconfig(p, context="hatchway", env={}).server == "https://127.0.0.1:6443"

    # Merging again with new values replaces that entry only, and switches context.
    merge_context(p, "hatchway", _cluster(7443), _user())
    again = yaml.safe_load(open(p))
    assert len(again["clusters"]) == 2
    assert load_kubeconfig(p, env={}).server == "https://127.0.0.1:7443"


def test_merge_follows_kubeconfig_env(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    env = {"KUBECONFIG": f"{a}{os.pathsep}{b}", "HOME": str(tmp_path)}
    assert default_write_path(env) == str(b)  # none exist: the last
    write(a, simple("x", "https://127.0.0.1:1"))
    assert default_write_path(env) == str(a)  # the first existing
    merge_context(None, "new", _cluster(2), _user(), env=env)
    assert "new" in open(a).read()
    assert not b.exists()


def test_merge_waits_for_lock_then_fails(tmp_path, monkeypatch) -> None:
    import hatchway.client.kubeconfig_write as kw

    monkeypatch.setattr(kw, "LOCK_WAIT", 0.2)
    p = tmp_path / "kc"
    (tmp_path / "kc.lock").write_text("")
    with pytest.raises(ConfigError, match="locked"):
        merge_context(str(p), "x", _cluster(1), _user())
    assert not p.exists()


def test_use_and_remove_context(tmp_path) -> None:
    p = write(tmp_path / "kc", simple("a", "https://127.0.0.1:1"))
    merge_context(p, "b", _cluster(2), _user(), set_current=False)
    use_context(p, "b")
    assert load_kubeconfig(p, env={}).context_name == "b"
    with pytest.raises(ConfigError, match='no context exists with the name: "zzz"'):
        use_context(p, "zzz")
    assert remove_context(p, "b") is True
    doc = yaml.safe_load(open(p))
    assert doc["current-context"] == ""
    assert [c["name"] for c in doc["clusters"]] == ["a"]
    assert [u["name"] for u in doc["users"]] == ["a"]
    assert remove_context(p, "b") is False
    assert load_kubeconfig(p, context="a", env={}).server == "https://127.0.0.1:1"


def test_remove_keeps_shared_cluster(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:1"))
    doc["contexts"].append({"name": "a2", "context": {"cluster": "a", "user": "a"}})
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    assert remove_context(str(p), "a2") is True
    assert remove_context(str(p), "a") is True
    left = yaml.safe_load(open(p))
    assert left["clusters"] == [] and left["users"] == [] and left["contexts"] == []
    p.write_text(yaml.safe_dump(doc))
    remove_context(str(p), "a")
    left = yaml.safe_load(open(p))
    assert [c["name"] for c in left["clusters"]] == ["a"]  # still used by a2


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("flags", [[], ["--minify"], ["--raw"], ["--minify", "--raw"]])
def test_config_view_matches_kubectl(tmp_path, flags) -> None:
    """The real kubectl reads the same KUBECONFIG list (missing file, relative path,
    a file we merged into) and prints the same view."""
    (tmp_path / "a").write_text(
        render_kubeconfig("a", "https://127.0.0.1:1", CA, CERT, KEY, namespace="na")
    )
    doc = yaml.safe_load(render_kubeconfig("a", "https://127.0.0.1:2", CA, token=TOKEN))
    doc["clusters"].append(
        {"name": "b", "cluster": {"server": "https://127.0.0.1:3", "certificate-authority": "r/c"}}
    )
    doc["contexts"].append({"name": "b", "context": {"cluster": "b", "user": "a"}})
    doc["current-context"] = "b"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_text(yaml.safe_dump(doc))
    merge_context(str(tmp_path / "sub" / "b"), "hw", _cluster(9), {"token": "t"}, "ns")
    files = [tmp_path / "missing", tmp_path / "sub" / "b", tmp_path / "a"]
    env = {"KUBECONFIG": os.pathsep.join(map(str, files)), "HOME": str(tmp_path)}
    out = subprocess.run(
        ["kubectl", "config", "view", "-o", "json", *flags],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    ours = config_view(minify="--minify" in flags, raw="--raw" in flags, env=env)
    assert ours == json.loads(out)


def test_an_auth_provider_alone_is_refused_with_the_reason(tmp_path) -> None:
    # kubectl's removed gcp/azure providers or oidc: hatchway runs none, and the requests
    # would go out anonymous. With a token beside it, the token is used.
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:6443"))
    spec = {"name": "oidc", "config": {"idp-issuer-url": "https://issuer.test"}}
    doc["users"] = [{"name": "u", "user": {"auth-provider": spec}}]
    doc["contexts"][0]["context"]["user"] = "u"
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match='user "u" gets its credential from an auth-provider'):
        load_kubeconfig(str(p), env={})
    doc["users"][0]["user"]["token"] = "abc"
    p.write_text(yaml.safe_dump(doc))
    assert load_kubeconfig(str(p), env={}).token == "abc"


def test_a_proxy_url_is_refused_not_bypassed(tmp_path) -> None:
    doc = yaml.safe_load(simple("a", "https://127.0.0.1:6443"))
    doc["clusters"][0]["cluster"]["proxy-url"] = "http://proxy.test:3128"
    p = tmp_path / "kc"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match='cluster "a" sets proxy-url, which hatchway does not'):
        load_kubeconfig(str(p), env={})
