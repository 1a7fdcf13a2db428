"""Issue 9, part 5: whatever pod a namespace user runs, the node runs it hardened: the
default seccomp profile and no_new_privs (for the container and for ``kubectl exec``),
no namespace or mount escape, a cgroup namespace, its memory and pids limits enforced.
Driven through the real cluster with the real kubectl as the ``edit`` attacker;
privileged and Unconfined pods are the cluster administrator's."""

from __future__ import annotations

import re
import uuid

import pytest

from cluster import Cluster
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc


def started(attacker: Attacker, **container: object) -> str:
    name = f"h-{uuid.uuid4().hex[:6]}"
    created = attacker.create(pod_manifest(name, attacker.namespace, **container))
    assert created.returncode == 0, created.stderr.decode()
    attacker.cluster.wait_phase(name, namespace=attacker.namespace)
    return name


def run(who: Attacker | Cluster, pod: str, script: str, *ns: str) -> tuple[int, str]:
    result = who.kubectl("exec", *ns, pod, "--", "sh", "-c", f"{{ {script}\n}} 2>&1")
    return result.returncode, result.stdout.decode(errors="replace")


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.fixture(scope="module")
def plain(attacker: Attacker) -> str:
    """A pod as a namespace user writes it: no securityContext at all."""
    return started(attacker)


def test_container_and_exec_are_filtered_and_cannot_gain_privileges(attacker, plain):
    for path in ("/proc/1/status", "/proc/self/status"):  # the main process, the exec'd one
        code, out = run(attacker, plain, f"cat {path}")
        fields = status_fields(out)
        assert code == 0 and (fields["Seccomp"], fields["NoNewPrivs"]) == ("2", "1"), path


def test_no_namespace_or_mount_escape(attacker, plain):
    code, out = run(attacker, plain, "unshare -Urm true")
    assert code != 0 and "Operation not permitted" in out
    code, out = run(attacker, plain, "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m")
    assert code != 0 and "permission denied" in out.lower()


def test_the_cgroup_tree_is_the_containers_own(attacker, plain):
    code, out = run(attacker, plain, "cat /proc/self/cgroup")
    # The container's own root; the pids line may name the exec's own cgroup inside it.
    assert code == 0 and out, out
    assert all(
        re.match(r"^\d+:[^:]*:/$|^\d+:pids:/exec-[0-9a-f]{16}$", line) for line in out.splitlines()
    ), out


def test_memory_limit_is_enforced_and_reported_as_oomkilled(attacker):
    limits = {"resources": {"limits": {"memory": "32Mi"}}}
    capped = started(attacker, **limits)
    code, out = run(attacker, capped, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert (code, out.strip()) == (0, "33554432")
    name = f"h-{uuid.uuid4().hex[:6]}"
    hog = pod_manifest(
        name, attacker.namespace, {"restartPolicy": "Never"},
        command=["sh", "-c", "head -c 64m /dev/zero | tail"], **limits,
    )  # fmt: skip
    assert attacker.create(hog).returncode == 0
    pod = attacker.cluster.wait_phase(name, ("Failed",), namespace=attacker.namespace)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_node_stays_healthy(attacker, plain):
    bomb = started(attacker)
    # Bounded (5000 > the 4096 limit), so that without a limit the test fails, not the node.
    script = "i=0; while [ $i -lt 5000 ]; do sleep 1000 & i=$((i+1)); done"
    code, out = run(attacker, bomb, script)
    assert code != 0 and "can't fork" in out
    code, out = run(attacker, plain, "cat /sys/fs/cgroup/pids/pids.max")
    assert (code, out.strip()) == (0, "4096")
    assert run(attacker, plain, "echo alive") == (0, "alive\n")
    node = attacker.cluster.get("node", attacker.cluster.node_name)
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    attacker.kubectl("delete", "pod", bomb, "--wait=false")


def test_privileged_and_unconfined_pods_of_the_admin_are_not_filtered(cluster, attacker):
    privileged = cluster.pod(containers=[{"name": "main", "image": "busybox",
        "command": ["sleep", "86400"], "securityContext": {"privileged": True}}])  # fmt: skip
    unconfined = cluster.pod(containers=[{"name": "main", "image": "busybox",
        "command": ["sleep", "86400"],
        "securityContext": {"seccompProfile": {"type": "Unconfined"}}}])  # fmt: skip
    code, out = run(cluster, privileged, "cat /proc/self/status")
    fields = status_fields(out)
    assert code == 0 and (fields["Seccomp"], fields["NoNewPrivs"]) == ("0", "0")
    assert fields["CapEff"] == node_bounding_set()  # every capability the node holds
    code, out = run(cluster, unconfined, "grep Seccomp: /proc/self/status")
    assert code == 0 and out.split()[:2] == ["Seccomp:", "0"]
    for name in (privileged, unconfined):
        cluster.kubectl("delete", "pod", name, "--wait=false")


def node_bounding_set() -> str:
    """The node agent runs on this machine as we do, with our bounding set."""
    with open("/proc/self/status") as f:
        return status_fields(f.read())["CapBnd"]
