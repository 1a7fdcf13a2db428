"""OCI spec building from Kubernetes pods: pure, many cases."""

from __future__ import annotations

import pytest

from hatchway.node import runtime_spec as rs


def pod(containers=None, **spec):
    return {
        "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1"},
        "spec": {"containers": containers or [{"name": "c", "image": "busybox"}], **spec},
    }


def build(container, p=None, **kw):
    kw.setdefault("sandbox_pid", 42)
    return rs.container_spec(p or pod([container]), container, rootfs="/r", **kw)


@pytest.mark.parametrize(
    ("command", "args", "entry", "cmd", "expected"),
    [
        (None, None, ["/ep"], ["a"], ["/ep", "a"]),
        (["x"], None, ["/ep"], ["a"], ["x"]),
        (["x"], ["y"], ["/ep"], ["a"], ["x", "y"]),
        (None, ["y"], ["/ep"], ["a"], ["/ep", "y"]),
        (None, None, [], ["sh"], ["sh"]),
        (None, ["y"], [], ["sh"], ["y"]),
    ],
)
def test_command_and_args_merge_like_kubernetes(command, args, entry, cmd, expected):
    c = {"name": "c", "image": "i"}
    if command is not None:
        c["command"] = command
    if args is not None:
        c["args"] = args
    spec = build(c, image_entrypoint=entry, image_cmd=cmd)
    assert spec["process"]["args"] == expected


def test_no_command_at_all_is_a_spec_error():
    with pytest.raises(rs.SpecError, match="no command"):
        build({"name": "c", "image": "i"})


def test_env_merges_image_then_container_and_expands_references():
    c = {
        "name": "c",
        "command": ["echo", "$(GREETING)", "$$(GREETING)", "$(MISSING)"],
        "env": [
            {"name": "GREETING", "value": "hi $(WHO)"},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "EMPTY"},
        ],
    }
    spec = build(c, image_env=["WHO=world", "PATH=/custom"])
    env = dict(e.split("=", 1) for e in spec["process"]["env"])
    assert env["GREETING"] == "hi world"
    assert env["PATH"] == "/custom"
    assert env["HOSTNAME"] == "web"
    assert env["EMPTY"] == ""
    assert "FROM_SECRET" not in env
    assert spec["process"]["args"] == ["echo", "hi world", "$(GREETING)", "$(MISSING)"]


def test_default_path_and_working_dir():
    spec = build({"name": "c", "command": ["x"]})
    assert f"PATH={rs.DEFAULT_PATH}" in spec["process"]["env"]
    assert spec["process"]["cwd"] == "/"
    assert build({"name": "c", "command": ["x"]}, image_workdir="/app")["process"]["cwd"] == "/app"
    c = {"name": "c", "command": ["x"], "workingDir": "/w"}
    assert build(c, image_workdir="/app")["process"]["cwd"] == "/w"


def test_default_capabilities_are_dockers_and_nothing_is_privileged():
    spec = build({"name": "c", "command": ["x"]})
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == rs.DEFAULT_CAPS
    assert "CAP_SYS_ADMIN" not in caps["effective"]
    linux = spec["linux"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]
    assert spec["process"]["terminal"] is False


def test_privileged_gets_all_caps_devices_and_no_masks():
    c = {"name": "c", "command": ["x"], "securityContext": {"privileged": True}}
    dev = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
    spec = build(c, host_devices=[dev])
    assert spec["process"]["capabilities"]["bounding"] == rs.ALL_CAPS
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert spec["linux"]["devices"] == [dev]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sysfs["options"]


def test_capabilities_add_and_drop():
    c = {
        "name": "c",
        "command": ["x"],
        "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["KILL"]}},
    }
    caps = build(c)["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in caps and "CAP_KILL" not in caps and "CAP_CHOWN" in caps
    c["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["CAP_CHOWN"]}
    assert build(c)["process"]["capabilities"]["effective"] == ["CAP_CHOWN"]


def test_read_only_root_and_no_new_privileges():
    c = {"name": "c", "command": ["x"], "securityContext": {"readOnlyRootFilesystem": True}}
    spec = build(c)
    assert spec["root"] == {"path": "/r", "readonly": True}
    # Hardening by default (issue 9): no_new_privs unless escalation is allowed.
    assert spec["process"]["noNewPrivileges"] is True
    c["securityContext"]["allowPrivilegeEscalation"] = False
    assert build(c)["process"]["noNewPrivileges"] is True


def test_user_from_image_pod_and_container_security_context():
    users = {"app": (1000, 1001), "root": (0, 0)}
    c = {"name": "c", "command": ["x"]}
    assert build(c, image_user="app", users=users)["process"]["user"] == {"uid": 1000, "gid": 1001}
    assert build(c, image_user="1000", users=users)["process"]["user"]["gid"] == 1001
    assert build(c, image_user="5:6")["process"]["user"] == {"uid": 5, "gid": 6}
    p = pod([c], securityContext={"runAsUser": 7, "runAsGroup": 8, "supplementalGroups": [9]})
    user = build(c, p, image_user="app", users=users)["process"]["user"]
    assert user == {"uid": 7, "gid": 8, "additionalGids": [9]}
    c2 = {**c, "securityContext": {"runAsUser": 70}}
    assert build(c2, pod([c2], securityContext={"runAsUser": 7}))["process"]["user"]["uid"] == 70
    with pytest.raises(rs.SpecError, match="not found"):
        build(c, image_user="ghost", users=users)


def test_containers_join_the_sandbox_namespaces_and_own_pid_and_mount():
    spec = build({"name": "c", "command": ["x"]}, sandbox_pid=4242)
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {
        "network": "/proc/4242/ns/net",
        "ipc": "/proc/4242/ns/ipc",
        "uts": "/proc/4242/ns/uts",
        "pid": None,
        "mount": None,
        "cgroup": None,
    }
    assert "hostname" not in spec  # set once, in the sandbox's UTS namespace


def test_host_namespaces_are_left_out():
    c = {"name": "c", "command": ["x"]}
    p = pod([c], hostNetwork=True, hostPID=True, hostIPC=True)
    spec = build(c, p, sandbox_pid=None)
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["mount", "cgroup"]
    p = pod([c], hostNetwork=True)
    kinds = {n["type"]: n.get("path") for n in build(c, p)["linux"]["namespaces"]}
    assert kinds == {"mount": None, "ipc": "/proc/42/ns/ipc", "pid": None, "cgroup": None}


def test_joining_needs_a_sandbox_pid():
    with pytest.raises(rs.SpecError, match="sandbox"):
        build({"name": "c", "command": ["x"]}, sandbox_pid=None)


def test_sandbox_spec_owns_namespaces_and_hostname():
    spec = rs.sandbox_spec(pod(), rootfs="/r", cgroups_path="/hatchway/x")
    kinds = [n["type"] for n in spec["linux"]["namespaces"]]
    assert sorted(kinds) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    assert all("path" not in n for n in spec["linux"]["namespaces"])
    assert spec["hostname"] == "web"
    assert spec["process"]["args"] == rs.SANDBOX_COMMAND
    assert spec["process"]["terminal"] is False
    assert spec["linux"]["cgroupsPath"] == "/hatchway/x"
    assert spec["annotations"]["io.hatchway.pod.uid"] == "u-1"
    host = rs.sandbox_spec(pod(hostNetwork=True, hostIPC=True), rootfs="/r", cgroups_path="")
    assert sorted(n["type"] for n in host["linux"]["namespaces"]) == ["cgroup", "mount", "pid"]
    assert "hostname" not in host


def test_hostname_is_pod_name_truncated_or_spec_hostname():
    long = {"metadata": {"name": "x" * 80}, "spec": {}}
    assert rs.hostname_of(long) == "x" * 63
    assert rs.hostname_of({"metadata": {"name": "a"}, "spec": {"hostname": "h"}}) == "h"


def test_volume_mounts_become_bind_mounts():
    c = {
        "name": "c",
        "command": ["x"],
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "cfg", "mountPath": "/cfg", "readOnly": True},
        ],
    }
    spec = build(c, volumes={"data": "/host/data", "cfg": "/host/cfg"})
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert [(m["destination"], m["source"], m["options"]) for m in binds] == [
        ("/data", "/host/data", ["rbind", "rw"]),
        ("/cfg", "/host/cfg", ["rbind", "ro"]),
    ]
    with pytest.raises(rs.SpecError, match="volume"):
        build(c, volumes={})


def test_expand_escapes_and_unknowns():
    assert rs.expand("$(A)-$$(A)-$(B)-$", {"A": "1"}) == "1-$(A)-$(B)-$"


def test_privileged_caps_are_limited_to_what_the_host_holds():
    c = {"name": "c", "command": ["x"], "securityContext": {"privileged": True}}
    held = rs.caps_from_mask(0x1FFFEFFFFFF)  # everything but CAP_SYS_RESOURCE (bit 24)
    assert "CAP_SYS_RESOURCE" not in held and len(held) == 40
    caps = build(c, host_caps=held)["process"]["capabilities"]["bounding"]
    assert caps == held


# --- hardening by default (issue 9) -------------------------------------------------


def test_default_container_is_hardened():
    spec = build({"name": "c", "command": ["x"]})
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"type": "cgroup"} in spec["linux"]["namespaces"]
    assert spec["linux"]["resources"]["pids"] == {"limit": rs.DEFAULT_PIDS_LIMIT}
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
    ]
    assert build({"name": "c", "command": ["x"]}, max_nofile=20000)["process"]["rlimits"][0] == {
        "type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("sc", "nnp"),
    [
        ({}, True),
        ({"allowPrivilegeEscalation": False}, True),
        ({"allowPrivilegeEscalation": True}, False),
        ({"privileged": True}, False),
        ({"capabilities": {"add": ["SYS_ADMIN"]}}, False),
        ({"capabilities": {"add": ["NET_ADMIN"]}}, True),
    ],
)
def test_no_new_privileges_unless_escalation_is_allowed(sc, nnp):
    assert (
        build({"name": "c", "command": ["x"], "securityContext": sc})["process"]["noNewPrivileges"]
        is nnp
    )


def test_seccomp_follows_the_capabilities_and_the_profile_type():
    sc = {"capabilities": {"add": ["SYS_PTRACE"]}}
    c = {"name": "c", "command": ["x"], "securityContext": sc}
    names = {n for r in build(c)["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert "ptrace" in names and "mount" not in names
    unconfined = {"name": "c", "command": ["x"], "securityContext": {
        "seccompProfile": {"type": "Unconfined"}}}  # fmt: skip
    assert "seccomp" not in build(unconfined)["linux"]
    p = pod([{"name": "c", "command": ["x"]}], securityContext={"seccompProfile": unconfined[
        "securityContext"]["seccompProfile"]})  # fmt: skip
    assert "seccomp" not in build(p["spec"]["containers"][0], p)["linux"]
    priv = {"name": "c", "command": ["x"], "securityContext": {"privileged": True}}
    assert "seccomp" not in build(priv)["linux"]
    assert {"type": "cgroup"} not in build(priv)["linux"]["namespaces"]


def test_localhost_profile_is_used_and_must_be_loaded():
    c = {"name": "c", "command": ["x"], "securityContext": {
        "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}  # fmt: skip
    loaded = {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}
    assert build(c, localhost_seccomp=loaded)["linux"]["seccomp"] == loaded
    with pytest.raises(rs.SpecError, match="seccomp"):
        build(c)
    c["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "../x"}
    with pytest.raises(rs.SpecError, match="seccomp"):
        build(c, localhost_seccomp=loaded)


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        ({}, {}),
        ({"limits": {"memory": "32Mi"}}, {"memory": {"limit": 33554432, "swap": 33554432}}),
        ({"limits": {"memory": "1G"}}, {"memory": {"limit": 10**9, "swap": 10**9}}),
        ({"limits": {"cpu": "500m"}}, {"cpu": {"quota": 50000, "period": 100000, "shares": 512}}),
        ({"limits": {"cpu": "1.5"}}, {"cpu": {"quota": 150000, "period": 100000, "shares": 1536}}),
        ({"limits": {"cpu": "2e0"}}, {"cpu": {"quota": 200000, "period": 100000, "shares": 2048}}),
        ({"limits": {"cpu": "1m"}}, {"cpu": {"quota": 1000, "period": 100000, "shares": 2}}),
        ({"limits": {"cpu": "2"}, "requests": {"cpu": "250m"}},
         {"cpu": {"quota": 200000, "period": 100000, "shares": 256}}),
        ({"requests": {"cpu": "1", "memory": "1Gi"}}, {"cpu": {"shares": 1024}}),
    ],
)  # fmt: skip
def test_resources_limits_become_cgroup_settings(res, expected):
    got = build({"name": "c", "command": ["x"], "resources": res}, pids_limit=None)
    assert {k: v for k, v in got["linux"]["resources"].items() if k != "devices"} == expected


@pytest.mark.parametrize("bad", ["lots", "12MB", "-1Mi", ""])
def test_bad_quantities_are_spec_errors(bad):
    with pytest.raises(rs.SpecError, match="memory"):
        build({"name": "c", "command": ["x"], "resources": {"limits": {"memory": bad}}})


def test_pids_limit_is_configurable_and_privileged_containers_have_it_too():
    priv = {"name": "c", "command": ["x"], "securityContext": {"privileged": True}}
    assert build(priv, pids_limit=100)["linux"]["resources"]["pids"] == {"limit": 100}
    assert "pids" not in build(priv, pids_limit=0)["linux"]["resources"]


def test_sandbox_is_hardened_and_small():
    spec = rs.sandbox_spec(pod(), rootfs="/r", cgroups_path="/hatchway/x")
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["process"]["capabilities"]["bounding"] == []
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec["linux"]["resources"]["pids"] == {"limit": rs.SANDBOX_PIDS_LIMIT}
    assert spec["linux"]["resources"]["memory"]["limit"] == rs.SANDBOX_MEMORY_LIMIT
