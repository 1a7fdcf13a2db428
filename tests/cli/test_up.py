"""``hatchway up`` / ``up`` again / ``down`` on a private cluster: free ports, the
kubeconfig merged next to an unrelated context, reuse with the same pids, and down
leaving no process and no container behind."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from cluster import SCALE, can_run_containers

pytestmark = pytest.mark.skipif(bool(can_run_containers()), reason="needs root and runc")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = pathlib.Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _hatchway(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hatchway", *args],
        env=env,
        capture_output=True,
        timeout=timeout * SCALE,
    )


UNRELATED = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "me", "user": {"token": "secret"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "me"}}],
    "current-context": "prod",
}


def test_up_reuse_down(tmp_path: pathlib.Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(yaml.safe_dump(UNRELATED))
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for key in ("KUBECONFIG", "HATCHWAY_DATA_DIR"):
        env.pop(key, None)
    flags = ("--data-dir", str(data))
    try:
        first = _hatchway(
            env,
            "up",
            *flags,
            "--apiserver-port",
            "0",
            "--node-port",
            "0",
            "--detach",
            f"--timeout-scale={2 * SCALE}",
        )
        assert first.returncode == 0, first.stderr.decode() + _logs(data)
        assert b"cluster ready" in first.stdout
        state = json.loads((data / "cluster.json").read_text())
        assert state["apiserver_port"] not in (0, 6443) and state["node_port"] not in (0, 10250)
        assert _alive(state["apiserver_pid"]) and _alive(state["node_pid"])
        # both daemons were given the timeout scale (their configuration, not a variable)
        for pid in (state["apiserver_pid"], state["node_pid"]):
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert f"--timeout-scale={2 * SCALE}".encode() in argv, argv
        config = yaml.safe_load((home / ".kube" / "config").read_text())
        assert {c["name"] for c in config["contexts"]} == {"prod", "hatchway"}
        assert config["current-context"] == "hatchway"
        assert next(u for u in config["users"] if u["name"] == "me")["user"]["token"] == "secret"
        # the merged context works without KUBECONFIG: a pod runs and can be exec'd into
        run = _hatchway(env, "run", "demo", "--image", "busybox", "--", "sleep", "3600")
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 60 * SCALE
        while time.monotonic() < deadline:
            got = _hatchway(env, "exec", "demo", "--", "echo", "hi")
            if got.returncode == 0:
                break
            time.sleep(0.3)
        assert got.stdout == b"hi\n", got.stderr
        again = _hatchway(
            env, "up", *flags, "--apiserver-port", "0", "--node-port", "0", "--detach"
        )
        assert again.returncode == 0 and b"reusing the running cluster" in again.stderr
        assert json.loads((data / "cluster.json").read_text()) == state
    finally:
        down = _hatchway(env, "down", *flags)
    assert down.returncode == 0, down.stderr
    for pid in (state["apiserver_pid"], state["node_pid"]):
        assert not _alive(pid)
    assert not (data / "cluster.json").exists()
    listing = subprocess.run(
        ["runc", "--root", str(data / "node" / "runc"), "list", "-q"], capture_output=True
    )
    assert listing.stdout.strip() == b""
    leftover = subprocess.run(["pgrep", "-f", str(data)], capture_output=True)
    assert leftover.stdout.strip() == b"", leftover.stdout
    config = yaml.safe_load((home / ".kube" / "config").read_text())
    # down takes back what up merged and restores the context that was current before
    assert {c["name"] for c in config["contexts"]} == {"prod"}
    assert {c["name"] for c in config["clusters"]} == {"prod"}
    assert {u["name"] for u in config["users"]} == {"me"}
    assert config["current-context"] == "prod"
    assert b"current context 'prod'" in down.stdout


@pytest.mark.parametrize("dead", ["apiserver", "node"])
def test_up_restarts_only_what_is_missing(tmp_path: pathlib.Path, dead: str) -> None:
    """One component dead: up brings back that one, on its port; the live one keeps its
    pid, and the kubeconfig is not rewritten."""
    home, data = tmp_path / "home", tmp_path / "data"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(yaml.safe_dump(UNRELATED))
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for key in ("KUBECONFIG", "HATCHWAY_DATA_DIR"):
        env.pop(key, None)
    flags = ("--data-dir", str(data), "--apiserver-port", "0", "--node-port", "0", "--detach")
    try:
        first = _hatchway(env, "up", *flags)
        assert first.returncode == 0, first.stderr.decode() + _logs(data)
        state = json.loads((data / "cluster.json").read_text())
        kubeconfig = (home / ".kube" / "config").read_bytes()
        admin = (data / "admin.kubeconfig").read_bytes()
        os.kill(state[f"{dead}_pid"], 9)
        deadline = time.monotonic() + 10 * SCALE
        while _alive(state[f"{dead}_pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        again = _hatchway(env, "up", *flags)
        assert again.returncode == 0, again.stderr.decode() + _logs(data)
        name = "API server" if dead == "apiserver" else "node agent"
        assert f"restarting the {name}".encode() in again.stderr
        after = json.loads((data / "cluster.json").read_text())
        live = "node" if dead == "apiserver" else "apiserver"
        assert after[f"{live}_pid"] == state[f"{live}_pid"] and _alive(after[f"{live}_pid"])
        assert after[f"{dead}_pid"] != state[f"{dead}_pid"] and _alive(after[f"{dead}_pid"])
        ports = ("apiserver_port", "node_port")
        assert [after[k] for k in ports] == [state[k] for k in ports]
        assert after["previous_context"] == "prod"
        assert (home / ".kube" / "config").read_bytes() == kubeconfig
        assert (data / "admin.kubeconfig").read_bytes() == admin
    finally:
        down = _hatchway(env, "down", "--data-dir", str(data))
    assert down.returncode == 0, down.stderr
    config = yaml.safe_load((home / ".kube" / "config").read_text())
    assert config["current-context"] == "prod"


def _logs(data: pathlib.Path) -> str:
    return "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted((data / "logs").glob("*.log"))
    )


def test_down_without_cluster_and_help(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    result = _hatchway(env, "down", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 0 and b"no cluster" in result.stderr
    result = _hatchway(env, "up", "--help")
    assert result.returncode == 0 and b"--apiserver-port" in result.stdout


def test_up_on_a_data_dir_from_before_the_node_client_ca(tmp_path: pathlib.Path) -> None:
    """An earlier Hatchway signed everything, the API server's client certificate towards
    nodes included, with the one cluster CA. ``up`` again on that data dir adds the
    node-client CA, reissues that certificate from it, and exec works end to end."""
    from cryptography import x509

    from hatchway import pki

    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    ca = pki.create_ca(data / "pki")
    for stem, spec in pki._pki_specs("old-node", ()).items():
        pki.issue_certificate(ca, data / "pki" / stem, **spec)
    old_admin = (data / "pki" / "admin.crt").read_bytes()
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env["KUBECONFIG"] = str(data / "admin.kubeconfig")
    env.pop("HATCHWAY_DATA_DIR", None)
    flags = ("--data-dir", str(data))
    try:
        up = _hatchway(
            env, "up", *flags, "--apiserver-port", "0", "--node-port", "0", "--detach", "--no-merge"
        )
        assert up.returncode == 0, up.stderr.decode() + _logs(data)
        client = x509.load_pem_x509_certificate(
            (data / "pki" / "apiserver-kubelet-client.crt").read_bytes()
        )
        node_ca = x509.load_pem_x509_certificate((data / "pki" / "node-client-ca.crt").read_bytes())
        client.verify_directly_issued_by(node_ca)
        assert (data / "pki" / "admin.crt").read_bytes() == old_admin  # users' CA kept
        run = _hatchway(env, "run", "demo", "--image", "busybox", "--", "sleep", "3600")
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 60 * SCALE
        while time.monotonic() < deadline:
            got = _hatchway(env, "exec", "demo", "--", "echo", "upgraded")
            if got.returncode == 0:
                break
            time.sleep(0.3)
        assert got.stdout == b"upgraded\n", got.stderr.decode() + _logs(data)
    finally:
        _hatchway(env, "down", *flags)


def test_writing_the_kubeconfigs_keeps_the_nodes_certificate(tmp_path: pathlib.Path) -> None:
    """``up`` names the node by the lowercased hostname; writing the admin kubeconfig
    must not reissue the node's certificate under another name meanwhile."""
    from hatchway import pki
    from hatchway.cli.up import write_kubeconfigs

    made = pki.ensure_pki(tmp_path, node_name="n1")
    before = made.node.cert.read_bytes()
    write_kubeconfigs(tmp_path, 6443, False, "n1")
    assert made.node.cert.read_bytes() == before
    assert (tmp_path / "admin.kubeconfig").stat().st_mode & 0o777 == 0o600
