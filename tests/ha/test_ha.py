"""``hatchway up --ha``: 3 etcd members, 3 API servers, HAProxy, 2 node agents, each in a
network namespace; losing one API server and the etcd leader (``kill -9``); restarting
them; ``hatchway down``. One cluster for the module, the tests in order (each step builds
on the one before, as an operator's session would).

Needs root, ``ip netns``, runc, etcd and haproxy (scripts/setup.sh installs them): skipped
otherwise, saying which is missing.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ha.support import SCALE, HaCluster, Watcher, start, stop, wait_for
from hatchway.cli import ha, ha_cluster, netns

pytestmark = pytest.mark.runc

NODES = ("node-1", "node-2")


def _pod_manifest(name: str, node: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n"
        "  containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    reason = ha_cluster.why_not()
    if reason:
        pytest.skip(f"hatchway up --ha {reason}")
    data_dir = tmp_path_factory.mktemp("ha")
    env = {**os.environ, "HOME": str(data_dir), "HATCHWAY_DATA_DIR": str(data_dir)}
    env.pop("KUBECONFIG", None)
    started = start(data_dir, env)
    try:
        yield started
    finally:
        # Whatever a test did: no namespace, interface or process left behind.
        stop(started)
        netns.remove(ha.cluster_id(data_dir))


#: The API server the loss test kills: the one leading the controllers, so that every run
#: checks that they move (read by the restart test).
DOOMED: dict[str, str] = {}


def _leader(cluster: HaCluster) -> str:
    """The API server whose identity holds the controllers' Lease ("" if none does): the
    holder's identity as the Lease names it, found in the server's "became leader" log."""
    holder = cluster.kubectl(
        "get", "lease", "-n", "kube-system", "hatchway-controller-manager",
        "-o", "jsonpath={.spec.holderIdentity}",
    ).stdout.decode()  # fmt: skip
    if not holder:
        return ""
    for c in cluster.components("apiserver"):
        log = cluster.data_dir / "logs" / f"{c['name']}.log"
        if log.exists() and f"{holder} became leader" in log.read_text(errors="replace"):
            return str(c["name"])
    return ""


def _running(cluster: HaCluster, pod: str) -> bool:
    out = cluster.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}").stdout
    return out == b"Running"


def _pods(cluster: HaCluster) -> dict[str, tuple[str, str]]:
    out = cluster.kubectl(
        "get", "pods", "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} "
        "{.metadata.resourceVersion}\n{end}",
    ).stdout.decode()  # fmt: skip
    return {n: (u, rv) for n, u, rv in (line.split() for line in out.splitlines() if line)}


def test_every_component_in_its_own_namespace(cluster: HaCluster) -> None:
    comps = cluster.components()
    roles = sorted(c["role"] for c in comps)
    assert roles == sorted(["etcd"] * 3 + ["apiserver"] * 3 + ["loadbalancer"] + ["node"] * 2)
    host_ns = os.readlink("/proc/self/ns/net")
    seen = set()
    for c in comps:
        assert set(c) == {"role", "name", "pid", "address", "port"}
        assert c["address"].startswith("198.18.0.")
        assert ha.ours(c["pid"], cluster.data_dir), c
        ns = os.readlink(f"/proc/{c['pid']}/ns/net")
        assert ns != host_ns, c
        seen.add(ns)
    assert len(seen) == len(comps)
    lb = cluster.component("haproxy")
    assert cluster.state()["server"] == f"https://{lb['address']}:{lb['port']}"
    assert f"https://{lb['address']}:{lb['port']}" in cluster.kubeconfig.read_text()
    assert wait_for(
        "every API server in rotation",
        lambda: set(cluster.haproxy_status().values()) == {"UP"},
        10,
    )


def test_pods_run_on_every_node(cluster: HaCluster) -> None:
    for i, node in enumerate(NODES, 1):
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "-f", "-"],
            input=_pod_manifest(f"p{i}", node).encode(),
            capture_output=True,
            timeout=60 * SCALE,
        )
        assert done.returncode == 0, done.stderr
    for i, node in enumerate(NODES, 1):
        wait_for(f"p{i} Running", lambda i=i: _running(cluster, f"p{i}"), 60)
        got = cluster.kubectl("get", "pod", f"p{i}", "-o", "jsonpath={.spec.nodeName}").stdout
        assert got.decode() == node
        done = cluster.kubectl("exec", f"p{i}", "--", "hostname")
        assert done.returncode == 0 and done.stdout == f"p{i}\n".encode(), done.stderr
        done = cluster.hatchway("exec", f"p{i}", "--", "echo", node)
        assert done.returncode == 0 and done.stdout == f"{node}\n".encode(), done.stderr
        # each node has its own runtime: the container is in its data dir, not the other's
        runc = cluster.data_dir / node / "node" / "runc"
        assert any(runc.iterdir()), f"no container under {runc}"


def _long_exec(
    cluster: HaCluster, kubeconfig: pathlib.Path, lines: int, *, tool: str
) -> subprocess.Popen[bytes]:
    script = f"i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 0.02; done"
    if tool == "kubectl":
        argv = ["kubectl", "--kubeconfig", str(kubeconfig), "exec", "p1", "--", "sh", "-c", script]
    else:
        argv = [sys.executable, "-m", "hatchway", "exec", "p1", "--", "sh", "-c", script]
    env = {**cluster.env, "KUBECONFIG": str(kubeconfig)}
    # unbuffered: readline() takes no more than the line, communicate() gets the rest
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0
    )


def test_losing_an_apiserver_and_the_etcd_leader(cluster: HaCluster) -> None:
    before = _pods(cluster)
    assert set(before) >= {"p1", "p2"}
    # The API server that dies is the controllers' leader: they must move.
    leader = wait_for("a leader of the controllers", lambda: _leader(cluster), 30)
    DOOMED["name"] = leader
    # One watch whose connection is on the API server that will die (as a client's
    # through the load balancer may be), one through the load balancer.
    doomed = cluster.kubeconfig_for(leader)
    watchers = [Watcher(cluster.kubeconfig, first=doomed), Watcher(cluster.kubeconfig)]
    try:
        for watcher in watchers:
            watcher.start()
        _through_the_loss(cluster, watchers, before)
    finally:
        for watcher in watchers:
            watcher.stop()


def _through_the_loss(
    cluster: HaCluster, watchers: list[Watcher], before: dict[str, tuple[str, str]]
) -> None:
    name = DOOMED["name"]
    other = next(c["name"] for c in cluster.components("apiserver") if c["name"] != name)
    survivor = cluster.kubeconfig_for(other)
    doomed = cluster.kubeconfig_for(name)
    assert cluster.kubectl("label", "pod", "p1", "step=before").returncode == 0
    for w in watchers:
        wait_for(
            "the watch sees step=before", lambda w=w: "before" in w.labels_seen("p1", "step"), 10
        )
    cut_watch = watchers[0].restarts
    # ~6 s of output through the survivor, from before the kill to well after it
    streaming = _long_exec(cluster, survivor, 300, tool="kubectl")
    # sessions through the API server that will die: they must end, with an error
    cut = [_long_exec(cluster, doomed, 100_000, tool=t) for t in ("hatchway", "kubectl")]
    # every session is streaming before the kill
    first = streaming.stdout.readline() if streaming.stdout else b""
    for proc in cut:
        assert proc.stdout and proc.stdout.readline() == b"line 0\n", proc.args
    etcd_leader = cluster.etcd_leader()
    victims = [cluster.component(name), cluster.component(etcd_leader)]
    for victim in victims:
        os.kill(victim["pid"], 9)
    killed_at = time.monotonic()

    # within 10 s, new execs through the load balancer succeed (kubectl and hatchway)
    def exec_ok() -> bool:
        done = cluster.kubectl("exec", "p2", "--", "echo", "after", timeout=10)
        return done.returncode == 0 and done.stdout == b"after\n"

    wait_for("an exec through the load balancer", exec_ok, 10)
    assert time.monotonic() - killed_at < 10 * SCALE
    for tool in (cluster.kubectl, cluster.hatchway):
        for pod in ("p1", "p2"):
            done = tool("exec", pod, "--", "echo", "again", timeout=20)
            assert done.returncode == 0 and done.stdout == b"again\n", done.stderr
    # a change made while the watch was cut is not lost
    assert cluster.kubectl("label", "pod", "p1", "step=after", "--overwrite").returncode == 0
    for w in watchers:
        wait_for(
            "the watch sees step=after", lambda w=w: "after" in w.labels_seen("p1", "step"), 15
        )
    # the first watch was cut, and resumed from its resourceVersion (no list again)
    assert watchers[0].restarts > cut_watch and watchers[0].errors, watchers[0].errors
    assert watchers[0].relists == 1
    # every pod is still there, with the same uid and resourceVersion (p1's label aside)
    after = _pods(cluster)
    assert after["p2"] == before["p2"]
    assert after["p1"][0] == before["p1"][0]
    # the session through the survivor: every byte arrived, exit 0
    out, err = streaming.communicate(timeout=60 * SCALE)
    assert streaming.returncode == 0, err
    assert first + out == b"".join(f"line {i}\n".encode() for i in range(300))
    # the sessions through the dead API server ended with an error, not a hang
    for proc in cut:
        try:
            _, err = proc.communicate(timeout=30 * SCALE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"{proc.args[0]} hung after its API server died") from None
        assert proc.returncode != 0, proc.args
        assert err.strip(), f"{proc.args[0]} said nothing about the cut"
        print("CUT", proc.args[0], err[-300:])
    # the dead API server left the rotation; the controllers moved to a survivor (within
    # the Lease's 15 s), so a pod created now is scheduled and runs
    wait_for(f"{name} out of rotation", lambda: cluster.haproxy_status()[name] != "UP", 10)
    moved = wait_for("a new leader", lambda: _leader(cluster).replace(name, ""), 40)
    assert moved.startswith("apiserver-"), moved
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "run", "p3", "--image=busybox",
         "--restart=Never", "--", "sleep", "3600"],
        capture_output=True, timeout=60 * SCALE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for("p3 Running", lambda: _running(cluster, "p3"), 60)
    assert cluster.hatchway("exec", "p3", "--", "true").returncode == 0


def test_restarted_members_rejoin(cluster: HaCluster) -> None:
    dead = [c["name"] for c in cluster.components() if not ha.ours(c["pid"], cluster.data_dir)]
    name = DOOMED.get("name", "apiserver-1")
    assert name in dead and len(dead) == 2, dead
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", "up", "--ha", "--data-dir", str(cluster.data_dir),
         "--no-merge"],
        capture_output=True, env=cluster.env, timeout=180 * SCALE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in dead:
        assert f"restarting {name}".encode() in done.stderr
        assert ha.ours(cluster.component(name)["pid"], cluster.data_dir)
    etcd_member = next(n for n in dead if n.startswith("etcd"))
    status = wait_for(f"{etcd_member} healthy", lambda: cluster.etcd_status(etcd_member), 20)
    assert status.get("leader") not in (None, "0")
    # it is a member again: it serves the writes made while it was down
    wait_for(f"{name} back in rotation", lambda: cluster.haproxy_status()[name] == "UP", 10)
    direct = cluster.kubeconfig_for(name)
    got = cluster.kubectl(
        "get", "pod", "p1", "-o", "jsonpath={.metadata.labels.step}", kubeconfig=direct
    )
    assert got.stdout == b"after", got.stderr
    done = cluster.kubectl("exec", "p1", "--", "echo", "back", kubeconfig=direct)
    assert done.returncode == 0 and done.stdout == b"back\n", done.stderr


def _leftovers(cluster: HaCluster, records: list[dict[str, Any]]) -> list[str]:
    cid = ha.cluster_id(cluster.data_dir)
    found = [f"netns {n}" for n in netns.namespaces(cid)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [
        f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f"hw{cid}" in line
    ]
    found += [f"process {r['name']}" for r in records if ha.ours(r["pid"], cluster.data_dir)]
    # nor any other process of the cluster: shims, runc, exec helpers
    marker = str(cluster.data_dir).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                shown = cmdline.replace(b"\0", b" ")[:200]
                found.append(f"process {entry}: {shown!r}")
    for node in NODES:
        runc = subprocess.run(
            ["runc", "--root", str(cluster.data_dir / node / "node" / "runc"), "list", "-q"],
            capture_output=True, text=True,
        )  # fmt: skip
        found += [f"container {c} of {node}" for c in runc.stdout.split()]
    return found


def test_down_after_a_crash_removes_everything(cluster: HaCluster) -> None:
    records = cluster.components()
    # some components crash first: down still finds and removes all of it
    os.kill(cluster.component("node-2")["pid"], 9)
    os.kill(cluster.component("haproxy")["pid"], 9)
    done = stop(cluster)
    assert done.returncode == 0, done.stderr
    assert _leftovers(cluster, records) == []
    assert not (cluster.data_dir / "cluster.json").exists()
    again = stop(cluster)
    assert again.returncode == 0, again.stderr
