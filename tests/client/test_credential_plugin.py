"""client/credential_plugin.py: a kubeconfig user's ``exec`` plugin, run as client-go runs
it. The plugin here is a real executable script; what it was given (argv, environment,
KUBERNETES_EXEC_INFO, stdin) is recorded and checked."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import stat
import sys

import pytest
import yaml

from hatchway.client.kubeconfig import load_kubeconfig
from hatchway.errors import ConfigError

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"

SCRIPT = f"""#!{sys.executable}
import json, os, sys
record = {{
    "argv": sys.argv[1:],
    "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
    "env": {{k: os.environ.get(k) for k in ("PLUGIN_MODE", "FROM_PARENT")}},
    "stdin_is_null": os.path.samefile("/dev/null", "/proc/self/fd/0"),
}}
with open(os.environ["PLUGIN_RECORD"], "w") as f:
    json.dump(record, f)
mode = os.environ.get("PLUGIN_MODE", "token")
version = record["info"]["apiVersion"]
status = {{"token": "plugin-token-123"}}
if mode == "cert":
    status = {{"clientCertificateData": "CERT PEM", "clientKeyData": "KEY PEM"}}
elif mode == "cert-only":
    status = {{"clientCertificateData": "CERT PEM"}}
elif mode == "empty":
    status = {{}}
elif mode == "fail":
    sys.stderr.write("plugin: no session\\n")
    sys.exit(3)
elif mode == "garbage":
    print("Welcome! plugin-token-123")
    sys.exit(0)
elif mode == "flood":
    sys.stdout.write("x" * (2 * 1024 * 1024))
    sys.exit(0)
elif mode == "crlf":
    status = {{"token": "abc\\r\\nX-Injected: 1"}}
elif mode == "other-version":
    version = "client.authentication.k8s.io/v1alpha1"
print(json.dumps({{"apiVersion": version, "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture
def plugin(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "bin" / "kube-login"
    path.parent.mkdir()
    path.write_text(SCRIPT)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _kubeconfig(
    tmp_path: pathlib.Path, exec_spec: dict, user_extra: dict | None = None, **cluster: object
) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
        "users": [{"name": "u", "user": {"exec": exec_spec, **(user_extra or {})}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _spec(command: str, mode: str = "token", version: str = V1, **extra: object) -> dict:
    spec = {
        "apiVersion": version,
        "command": command,
        "args": ["get-token", "--cluster", "prod"],
        "env": [{"name": "PLUGIN_MODE", "value": mode}],
        "interactiveMode": "Never",
    }
    spec.update(extra)
    return spec


@pytest.fixture
def record(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = tmp_path / "record.json"
    monkeypatch.setenv("PLUGIN_RECORD", str(path))
    monkeypatch.setenv("FROM_PARENT", "inherited")
    return path


def test_a_token_from_the_plugin(tmp_path, plugin, record) -> None:
    cfg = load_kubeconfig(_kubeconfig(tmp_path, _spec(str(plugin))))
    assert cfg.token == "plugin-token-123"
    assert "plugin-token-123" not in repr(cfg)
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["get-token", "--cluster", "prod"]
    assert seen["env"] == {"PLUGIN_MODE": "token", "FROM_PARENT": "inherited"}
    assert seen["info"] == {"apiVersion": V1, "kind": "ExecCredential",
                            "spec": {"interactive": False}}  # fmt: skip
    assert seen["stdin_is_null"]  # not interactive: no stdin


def test_a_certificate_from_a_v1beta1_plugin_with_cluster_info(tmp_path, plugin, record) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CA PEM")
    extension = {"name": "client.authentication.k8s.io/exec", "extension": {"region": "eu"}}
    path = _kubeconfig(
        tmp_path,
        _spec(str(plugin), "cert", V1BETA1, provideClusterInfo=True, interactiveMode=None),
        **{"certificate-authority": str(ca), "tls-server-name": "api.test",
           "extensions": [extension]},
    )  # fmt: skip
    cfg = load_kubeconfig(path)
    assert (cfg.client_cert_data, cfg.client_key_data) == (b"CERT PEM", b"KEY PEM")
    assert cfg.token is None
    cluster = json.loads(record.read_text())["info"]["spec"]["cluster"]
    assert cluster == {
        "server": "https://127.0.0.1:6443",
        "tls-server-name": "api.test",
        "certificate-authority-data": base64.b64encode(b"CA PEM").decode(),
        "config": {"region": "eu"},
    }


def test_a_relative_command_with_a_separator_is_the_kubeconfigs(
    tmp_path, plugin, record, monkeypatch
) -> None:
    # "bin/kube-login" next to the kubeconfig; a bare name is looked up on PATH.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_kubeconfig(_kubeconfig(tmp_path, _spec("bin/kube-login"))).token
    with pytest.raises(ConfigError, match="executable kube-login not found"):
        load_kubeconfig(_kubeconfig(tmp_path, _spec("kube-login")))
    monkeypatch.setenv("PATH", f"{plugin.parent}{os.pathsep}{os.environ['PATH']}")
    assert load_kubeconfig(_kubeconfig(tmp_path, _spec("kube-login"))).token


def test_a_static_token_comes_first(tmp_path, plugin, record) -> None:
    cfg = load_kubeconfig(_kubeconfig(tmp_path, _spec(str(plugin)), {"token": "static"}))
    assert cfg.token == "static"
    assert not record.exists()  # the plugin never ran


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "exec: executable .*kube-login failed with exit code 3"),
        ("garbage", "printed no ExecCredential \\(not JSON\\)"),
        ("flood", "printed more than 1048576 bytes"),
        ("empty", "didn't return a token or cert/key pair"),
        ("cert-only", "returned only certificate or key, not both"),
        ("crlf", "returned a token with a space or control character"),
        ("other-version", "configured to use API version client.authentication.k8s.io/v1, "
                          "plugin returned version client.authentication.k8s.io/v1alpha1"),
    ],
)  # fmt: skip
def test_what_a_plugin_gets_wrong_is_said(tmp_path, plugin, record, mode, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_kubeconfig(_kubeconfig(tmp_path, _spec(str(plugin), mode)))
    assert "plugin-token-123" not in str(info.value)  # what it printed is never shown


def test_a_missing_plugin_names_its_install_hint(tmp_path, record) -> None:
    spec = _spec(str(tmp_path / "nowhere"), installHint="brew install kube-login")
    with pytest.raises(ConfigError, match=r"executable .*nowhere not found") as info:
        load_kubeconfig(_kubeconfig(tmp_path, spec))
    assert "client-go credential plugin that is not installed" in str(info.value)
    assert str(info.value).endswith("brew install kube-login")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "is not supported"),
        ({"command": ""}, "no command"),
        ({"args": "get-token"}, "args must be a list of strings"),
        ({"env": [{"name": "A"}]}, "env must be a list"),
        ({"interactiveMode": None}, "interactiveMode must be specified for v1"),
        ({"interactiveMode": "Sometimes"}, "invalid interactiveMode 'Sometimes'"),
    ],
)
def test_a_bad_exec_section_is_refused_before_anything_runs(
    tmp_path, plugin, record, change, message
) -> None:
    spec = {**_spec(str(plugin)), **change}
    with pytest.raises(ConfigError, match=message):
        load_kubeconfig(_kubeconfig(tmp_path, spec))
    assert not record.exists()


def test_interactive_always_needs_a_terminal(tmp_path, plugin, record, monkeypatch) -> None:
    monkeypatch.setattr(os, "isatty", lambda fd: False)
    with pytest.raises(ConfigError, match="needs a terminal"):
        load_kubeconfig(_kubeconfig(tmp_path, _spec(str(plugin), interactiveMode="Always")))
    assert not record.exists()
