"""client-go credential plugins: a kubeconfig user's ``exec`` section, run as kubectl runs
it, for a token or a client certificate (``client.authentication.k8s.io`` v1 and v1beta1;
what EKS, GKE and AKS kubeconfigs use).

The command runs with the process's environment plus the section's ``env``, its
``args``, and ``KUBERNETES_EXEC_INFO`` (an ``ExecCredential`` with ``spec.interactive``
and, with ``provideClusterInfo``, ``spec.cluster``); its stderr is ours, its stdin ours
only when the session is interactive (stdin a terminal and ``interactiveMode`` not
``Never``). What it prints must be an ``ExecCredential`` of the same version whose
``status`` holds a token or a certificate and key pair. The command comes from the
user's own kubeconfig, as for kubectl; what it prints is bounded (:data:`MAX_OUTPUT`) and
never shown in an error (it holds the credential). One run per process, as kubectl:
nothing is cached on disk.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping

from hatchway.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
MODES = ("Never", "IfAvailable", "Always")
#: The cluster extension whose content a plugin gets as ``spec.cluster.config``.
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
#: What a plugin may print: a credential is a few KiB (a certificate chain at most).
MAX_OUTPUT = 1024 * 1024
DOCS = (
    "https://kubernetes.io/docs/reference/access-authn-authz/authentication/"
    "#client-go-credential-plugins"
)


def check(spec: Any, where: str) -> None:
    """Refuse an ``exec`` section client-go would refuse, before anything runs."""
    if not isinstance(spec, dict):
        raise ConfigError(f"exec plugin of {where}: not a mapping")
    version = spec.get("apiVersion")
    if version not in VERSIONS:
        raise ConfigError(
            f"exec plugin of {where}: apiVersion {version!r} is not supported "
            f"(want one of {', '.join(VERSIONS)})"
        )
    if not isinstance(spec.get("command"), str) or not spec["command"]:
        raise ConfigError(f"exec plugin of {where}: no command")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"exec plugin of {where}: args must be a list of strings")
    env = spec.get("env") or []
    ok = isinstance(env, list) and all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"]
        and isinstance(e.get("value"), str) for e in env
    )  # fmt: skip
    if not ok:
        raise ConfigError(f"exec plugin of {where}: env must be a list of {{name, value}}")
    mode = spec.get("interactiveMode")
    if mode is None and version.endswith("/v1"):
        raise ConfigError(f"exec plugin of {where}: interactiveMode must be specified for v1")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"exec plugin of {where}: invalid interactiveMode {mode!r}")


def run(spec: dict[str, Any], cluster: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Run the plugin of a checked ``spec``; ``{"token": …}`` or ``{"client_cert_data": …,
    "client_key_data": …}`` (PEM bytes). ``cluster`` is the kubeconfig cluster, for
    ``provideClusterInfo``."""
    import subprocess  # only for a user with a plugin (~3 ms of imports)

    version = spec["apiVersion"]
    mode = spec.get("interactiveMode") or "IfAvailable"
    interactive = mode != "Never" and os.isatty(0)
    if mode == "Always" and not interactive:
        raise ConfigError(
            f"exec plugin of {where} needs a terminal (interactiveMode Always): "
            "standard input is not one"
        )
    request: dict[str, Any] = {"interactive": interactive}
    if spec.get("provideClusterInfo"):
        request["cluster"] = _cluster_info(cluster)
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in spec.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": version, "kind": "ExecCredential", "spec": request}
    )
    command = spec["command"]
    try:
        proc = subprocess.Popen(
            [command, *(spec.get("args") or [])],
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        hint = spec.get("installHint") or ""
        raise ConfigError(
            f"exec: executable {command} not found ({exc.strerror or exc})\n\n"
            "It looks like you are trying to use a client-go credential plugin that is not "
            f"installed.\n\nTo learn more about this feature, consult the documentation "
            f"available at:\n      {DOCS}" + (f"\n\n{hint}" if hint else "")
        ) from None
    assert proc.stdout is not None
    with proc:
        out = proc.stdout.read(MAX_OUTPUT + 1)
        if len(out) > MAX_OUTPUT:
            proc.kill()
        proc.stdout.close()
        code = proc.wait()
    if len(out) > MAX_OUTPUT:
        raise ConfigError(f"exec plugin of {where} printed more than {MAX_OUTPUT} bytes")
    if code != 0:
        raise ConfigError(f"exec: executable {command} failed with exit code {code}")
    return _credential(out, version, where)


def _credential(out: bytes, version: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(out)
    except ValueError:
        raise ConfigError(f"exec plugin of {where} printed no ExecCredential (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise ConfigError(f"exec plugin of {where} printed no ExecCredential")
    if doc.get("apiVersion") != version:
        raise ConfigError(
            f"exec plugin of {where} is configured to use API version {version}, "
            f"plugin returned version {str(doc.get('apiVersion'))[:80]}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise ConfigError(f"exec plugin of {where} didn't return a status field")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    for value in (token, cert, key):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"exec plugin of {where} returned a credential that is not text")
    if bool(cert) != bool(key):
        raise ConfigError(f"exec plugin of {where} returned only certificate or key, not both")
    if token:
        if any(c <= " " or c == "\x7f" for c in token):
            # It goes into an Authorization header: a CR or LF there would end the header.
            raise ConfigError(
                f"exec plugin of {where} returned a token with a space or control character"
            )
        return {"token": token}
    if cert and key:
        return {"client_cert_data": cert.encode(), "client_key_data": key.encode()}
    raise ConfigError(f"exec plugin of {where} didn't return a token or cert/key pair")


def _cluster_info(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.cluster``: the kubeconfig cluster as client-go passes it (the CA as base64
    data, whether it was a file or data)."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression"):
        if cluster.get(key):
            info[key] = cluster[key]
    ca = cluster.get("certificate-authority-data")
    if not ca and isinstance(cluster.get("certificate-authority"), str):
        try:
            with open(cluster["certificate-authority"], "rb") as f:
                ca = base64.b64encode(f.read()).decode("ascii")
        except OSError:
            ca = None
    if ca:
        info["certificate-authority-data"] = ca
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info
