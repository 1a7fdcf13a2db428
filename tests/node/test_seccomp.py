"""The RuntimeDefault seccomp profile: its rules as data, and profile selection."""

from __future__ import annotations

import pytest

from hatchway.node import runtime_spec, seccomp


def rules_for(profile, name):
    return [r for r in profile["syscalls"] if name in r["names"]]


def allowed_unconditionally(profile):
    return {
        n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r
        for n in r["names"]
    }  # fmt: skip


def test_default_action_is_eperm_and_arches_are_native_plus_compat():
    p = seccomp.default_profile(runtime_spec.DEFAULT_CAPS)
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    arm = seccomp.default_profile([], "aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    arm_calls = allowed_unconditionally(arm)
    assert "set_tls" in arm_calls and "arch_prctl" not in arm_calls
    assert "arch_prctl" in allowed_unconditionally(p)
    with pytest.raises(seccomp.SeccompProfileError, match="architecture"):
        seccomp.default_profile([], "mips")


def test_everyday_calls_are_allowed_and_escapes_are_not():
    allowed = allowed_unconditionally(seccomp.default_profile(runtime_spec.DEFAULT_CAPS))
    for name in ("read", "write", "openat", "execve", "wait4", "futex", "mmap", "epoll_wait",
                 "chown", "setuid", "kill", "socketpair", "accept4", "chroot"):  # fmt: skip
        assert name in allowed, name
    for name in ("mount", "umount2", "unshare", "setns", "ptrace", "process_vm_readv",
                 "init_module", "finit_module", "kexec_load", "reboot", "bpf", "keyctl",
                 "add_key", "userfaultfd", "open_by_handle_at", "clock_settime", "swapon",
                 "perf_event_open", "pivot_root", "iopl", "acct", "clone", "clone3"):  # fmt: skip
        assert name not in allowed, name


def test_a_capability_allows_its_calls():
    base = set(runtime_spec.DEFAULT_CAPS)
    for cap, calls in [
        ("CAP_SYS_ADMIN", ["mount", "unshare", "setns", "umount2"]),
        ("CAP_SYS_PTRACE", ["ptrace", "process_vm_readv", "process_vm_writev"]),
        ("CAP_SYS_MODULE", ["init_module", "delete_module"]),
        ("CAP_SYS_BOOT", ["reboot"]),
        ("CAP_SYS_TIME", ["clock_settime", "settimeofday"]),
        ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ]:
        allowed = allowed_unconditionally(seccomp.default_profile(base | {cap}))
        assert set(calls) <= allowed, cap
    assert "chroot" not in allowed_unconditionally(seccomp.default_profile([]))


def test_clone_without_sys_admin_may_not_create_namespaces():
    p = seccomp.default_profile(runtime_spec.DEFAULT_CAPS)
    (clone,) = rules_for(p, "clone")
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    (clone3,) = rules_for(p, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    admin = seccomp.default_profile([*runtime_spec.DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert [r.get("args") for r in rules_for(admin, "clone")] == [None]
    assert [r["action"] for r in rules_for(admin, "clone3")] == ["SCMP_ACT_ALLOW"]


def test_personality_and_socket_rules():
    p = seccomp.default_profile([])
    values = sorted(r["args"][0]["value"] for r in rules_for(p, "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    assert all(r["args"][0]["op"] == "SCMP_CMP_EQ" for r in rules_for(p, "personality"))
    (socket,) = rules_for(p, "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]


def test_no_name_is_listed_twice():
    p = seccomp.default_profile(runtime_spec.ALL_CAPS)
    names = [n for r in p["syscalls"] if "args" not in r for n in r["names"]]
    assert len(names) == len(set(names))


def pod(container_profile=None, pod_profile=None):
    c = {"name": "c"}
    if container_profile is not None:
        c["securityContext"] = {"seccompProfile": container_profile}
    spec = {"containers": [c]}
    if pod_profile is not None:
        spec["securityContext"] = {"seccompProfile": pod_profile}
    return {"spec": spec}, c


@pytest.mark.parametrize(
    ("container", "pod_level", "expected"),
    [
        (None, None, ("RuntimeDefault", "")),
        ({"type": "Unconfined"}, None, ("Unconfined", "")),
        (None, {"type": "Unconfined"}, ("Unconfined", "")),
        ({"type": "RuntimeDefault"}, {"type": "Unconfined"}, ("RuntimeDefault", "")),
        ({"type": "Localhost", "localhostProfile": "a/b.json"}, None, ("Localhost", "a/b.json")),
    ],
)
def test_profile_type_container_over_pod(container, pod_level, expected):
    p, c = pod(container, pod_level)
    assert seccomp.profile_type(p, c) == expected


@pytest.mark.parametrize(
    "profile",
    [
        {"type": "Localhost"},
        {"type": "Localhost", "localhostProfile": "/etc/passwd"},
        {"type": "Localhost", "localhostProfile": "../../etc/x.json"},
        {"type": "Localhost", "localhostProfile": "a/../../x.json"},
        {"type": "Localhost", "localhostProfile": ".."},
        {"type": "Localhost", "localhostProfile": "a\0b"},
        {"type": "Weird"},
    ],
)
def test_bad_profiles_are_refused(profile):
    p, c = pod(profile)
    with pytest.raises(seccomp.SeccompProfileError):
        seccomp.profile_type(p, c)


def test_localhost_profile_keeps_oci_fields_only():
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64"}],
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "x", "includes": {}},
            {"name": "write", "action": "SCMP_ACT_ALLOW"},
        ],
    }
    assert seccomp.localhost_profile(doc) == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    for bad in ([], {"syscalls": []}, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [1]},
                {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"]}]}):  # fmt: skip
        with pytest.raises(seccomp.SeccompProfileError):
            seccomp.localhost_profile(bad)
