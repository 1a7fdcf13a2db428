"""The Pod Security Standards checks, levels, versions and labels, with the texts of
k8s.io/pod-security-admission (its policy/*_test.go expectations, byte for byte)."""

from __future__ import annotations

from typing import Any

import pytest

from hatchway.api import pod_security as pss
from hatchway.api import pod_security_checks as c
from hatchway.api.pod_security import LevelVersion, Policy, Violation

BASELINE = LevelVersion("baseline")
RESTRICTED = LevelVersion("restricted")


def ctr(name: str, **context: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "busybox"}
    if context:
        out["securityContext"] = context
    return out


def spec(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"containers": list(containers), **fields}


# (check, metadata, spec, reason, detail): each a failing case with upstream's text.
FAILING: dict[str, tuple[c.Check, dict[str, Any], dict[str, Any], str, str]] = {
    "allowPrivilegeEscalation": (
        c.allow_privilege_escalation_1_25,
        {},
        spec(ctr("a"), ctr("b", allowPrivilegeEscalation=True), ctr("c", privileged=False)),
        "allowPrivilegeEscalation != false",
        'containers "a", "b", "c" must set securityContext.allowPrivilegeEscalation=false',
    ),
    "appArmorProfile pod": (
        c.app_armor_profile,
        {},
        spec(ctr("a"), securityContext={"appArmorProfile": {"type": "Unconfined"}}),
        "forbidden AppArmor profile",
        'pod must not set AppArmor profile type to "Unconfined"',
    ),
    "appArmorProfile container": (
        c.app_armor_profile,
        {},
        spec(ctr("foo", appArmorProfile={"type": "Unconfined"})),
        "forbidden AppArmor profile",
        'container "foo" must not set AppArmor profile type to "Unconfined"',
    ),
    "appArmorProfile annotations": (
        c.app_armor_profile,
        {
            "annotations": {
                "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
                "container.apparmor.security.beta.kubernetes.io/a": "bogus",
                "container.apparmor.security.beta.kubernetes.io/c": "localhost/x",
            }
        },
        spec(ctr("a")),
        "forbidden AppArmor profiles",
        "annotations must not set AppArmor profile type to"
        ' "container.apparmor.security.beta.kubernetes.io/a="bogus"",'
        ' "container.apparmor.security.beta.kubernetes.io/b="unconfined""',
    ),
    "capabilities_baseline": (
        c.capabilities_baseline,
        {},
        spec(
            ctr("a", capabilities={"add": ["FOO", "BAR", "CHOWN"]}),
            ctr("b", capabilities={"add": ["BAZ", "FOO"]}),
            ctr("c", capabilities={"add": ["NET_BIND_SERVICE"]}),
        ),
        "non-default capabilities",
        'containers "a", "b" must not include "BAR", "BAZ", "FOO" in'
        " securityContext.capabilities.add",
    ),
    "capabilities_restricted": (
        c.capabilities_restricted_1_25,
        {},
        spec(
            ctr("a", capabilities={"add": ["FOO", "BAR"]}),
            ctr("b", capabilities={"add": ["BAZ", "CHOWN"]}),
            ctr("c", capabilities={"add": ["FOO"], "drop": ["ALL"]}),
            ctr("d", capabilities={"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}),
        ),
        "unrestricted capabilities",
        'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; containers'
        ' "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in'
        " securityContext.capabilities.add",
    ),
    "capabilities_restricted no context": (
        c.capabilities_restricted_1_25,
        {},
        spec(ctr("a")),
        "unrestricted capabilities",
        'container "a" must set securityContext.capabilities.drop=["ALL"]',
    ),
    "hostNamespaces": (
        c.host_namespaces,
        {},
        spec(ctr("a"), hostIPC=True, hostPID=True, hostNetwork=True),
        "host namespaces",
        "hostNetwork=true, hostPID=true, hostIPC=true",
    ),
    "hostPathVolumes": (
        c.host_path_volumes,
        {},
        spec(
            ctr("a"),
            volumes=[
                {"name": "a", "hostPath": {"path": "/"}},
                {"name": "b", "hostPath": {"path": "/etc"}},
                {"name": "c", "emptyDir": {}},
            ],
        ),
        "hostPath volumes",
        'volumes "a", "b"',
    ),
    "hostPorts one": (
        c.host_ports,
        {},
        spec(ctr("a"), {"name": "b", "ports": [{"containerPort": 1, "hostPort": 20}]}),
        "hostPort",
        'container "b" uses hostPort 20',
    ),
    "hostPorts many": (
        c.host_ports,
        {},
        spec(
            {"name": "a", "ports": [{"containerPort": 1}]},
            {"name": "b", "ports": [{"hostPort": 20}, {"hostPort": 10}]},
            {"name": "c", "ports": [{"hostPort": 30}]},
        ),
        "hostPort",
        'containers "b", "c" use hostPorts 10, 20, 30',
    ),
    "hostProbesAndHostLifecycle": (
        c.host_probes_and_lifecycle,
        {},
        spec(
            {
                "name": "a",
                "livenessProbe": {"httpGet": {"host": "localhost", "port": 80}},
                "readinessProbe": {"tcpSocket": {"host": "127.0.0.1", "port": 80}},
                "lifecycle": {"preStop": {"httpGet": {"host": "::1"}}},
            },
            {"name": "b", "startupProbe": {"httpGet": {"host": "", "port": 80}}},
        ),
        "probe or lifecycle host",
        'container "a" uses probe or lifecycle hosts "127.0.0.1", "::1", "localhost"',
    ),
    "privileged": (
        c.privileged,
        {},
        spec(ctr("a"), ctr("b", privileged=False), ctr("d", privileged=True)),
        "privileged",
        'container "d" must not set securityContext.privileged=true',
    ),
    "procMount": (
        c.proc_mount,
        {},
        spec(
            ctr("a"),
            ctr("c", procMount="Default"),
            ctr("d", procMount="Unmasked"),
            ctr("e", procMount="other"),
        ),
        "procMount",
        'containers "d", "e" must not set securityContext.procMount to "Unmasked", "other"',
    ),
    "restrictedVolumes": (
        c.restricted_volumes,
        {},
        spec(
            ctr("a"),
            volumes=[
                {"name": "ok", "configMap": {"name": "x"}},
                {"name": "b1", "hostPath": {"path": "/"}},
                {"name": "b2", "nfs": {"server": "s", "path": "/"}},
                {"name": "b3", "gitRepo": {"repository": "r"}},
                {"name": "b4", "emptyDir": {}, "hostPath": {"path": "/"}},
            ],
        ),
        "restricted volume types",
        'volumes "b1", "b2", "b3", "b4" use restricted volume types "gitRepo", "hostPath", "nfs"',
    ),
    "runAsNonRoot implicit": (
        c.run_as_non_root_1_0,
        {},
        spec(ctr("a"), ctr("b"), ctr("c", runAsNonRoot=True)),
        "runAsNonRoot != true",
        'pod or containers "a", "b" must set securityContext.runAsNonRoot=true',
    ),
    "runAsNonRoot explicit": (
        c.run_as_non_root_1_0,
        {},
        spec(
            ctr("a"),
            ctr("c", runAsNonRoot=False),
            ctr("d", runAsNonRoot=False),
            securityContext={"runAsNonRoot": True},
        ),
        "runAsNonRoot != true",
        'containers "c", "d" must not set securityContext.runAsNonRoot=false',
    ),
    "runAsNonRoot pod": (
        c.run_as_non_root_1_0,
        {},
        spec(ctr("a", runAsNonRoot=True), securityContext={"runAsNonRoot": False}),
        "runAsNonRoot != true",
        "pod must not set securityContext.runAsNonRoot=false",
    ),
    "runAsUser": (
        c.run_as_user_1_23,
        {},
        spec(ctr("a"), ctr("c", runAsUser=0), ctr("d", runAsUser=0), ctr("e", runAsUser=1)),
        "runAsUser=0",
        'containers "c", "d" must not set runAsUser=0',
    ),
    "runAsUser pod": (
        c.run_as_user_1_23,
        {},
        spec(ctr("a", runAsUser=1000), securityContext={"runAsUser": 0}),
        "runAsUser=0",
        "pod must not set runAsUser=0",
    ),
    "seLinuxOptions": (
        c.se_linux_options_1_31,
        {},
        spec(
            ctr("a", seLinuxOptions={"type": "container_t"}),
            ctr("e", seLinuxOptions={"type": "bar"}),
            ctr("f", seLinuxOptions={"user": "u"}),
            ctr("g", seLinuxOptions={"role": "r", "level": "s0"}),
            securityContext={"seLinuxOptions": {"type": "foo", "user": "u", "role": "r"}},
        ),
        "seLinuxOptions",
        'pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions:'
        ' types "bar", "foo"; user may not be set; role may not be set',
    ),
    "seLinuxOptions user": (
        c.se_linux_options_1_31,
        {},
        spec(ctr("a"), securityContext={"seLinuxOptions": {"user": "u"}}),
        "seLinuxOptions",
        "pod set forbidden securityContext.seLinuxOptions: user may not be set",
    ),
    "seccompProfile_baseline annotations": (
        c.seccomp_baseline_1_0,
        {
            "annotations": {
                "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                "container.seccomp.security.alpha.kubernetes.io/a": "unconfined",
                "container.seccomp.security.alpha.kubernetes.io/b": "unknown",
                "container.seccomp.security.alpha.kubernetes.io/c": "runtime/default",
            }
        },
        spec(ctr("a"), ctr("b"), ctr("c")),
        "seccompProfile",
        "forbidden annotations container.seccomp.security.alpha.kubernetes.io/a="
        '"unconfined", container.seccomp.security.alpha.kubernetes.io/b="unknown",'
        ' seccomp.security.alpha.kubernetes.io/pod="unconfined"',
    ),
    "seccompProfile_baseline": (
        c.seccomp_baseline_1_19,
        {},
        spec(
            ctr("a"),
            ctr("b", seccompProfile={"type": "RuntimeDefault"}),
            ctr("c", seccompProfile={"type": "Unconfined"}),
            ctr("d", seccompProfile={"type": "Unconfined"}),
            securityContext={"seccompProfile": {"type": "Unconfined"}},
        ),
        "seccompProfile",
        'pod and containers "c", "d" must not set securityContext.seccompProfile.type to'
        ' "Unconfined"',
    ),
    "seccompProfile_restricted implicit": (
        c.seccomp_restricted_1_25,
        {},
        spec(ctr("a"), ctr("b"), ctr("c", seccompProfile={"type": "Localhost"})),
        "seccompProfile",
        'pod or containers "a", "b" must set securityContext.seccompProfile.type to'
        ' "RuntimeDefault" or "Localhost"',
    ),
    "sysctls": (
        c.sysctls_1_32,
        {},
        spec(
            ctr("a"),
            securityContext={
                "sysctls": [{"name": "a"}, {"name": "net.ipv4.tcp_rmem"}, {"name": "b"}]
            },
        ),
        "forbidden sysctls",
        "a, b",
    ),
    "windowsHostProcess": (
        c.windows_host_process,
        {},
        spec(
            ctr("a"),
            ctr("e", windowsOptions={"hostProcess": True}),
            ctr("f", windowsOptions={"hostProcess": True}),
            ctr("g", windowsOptions={"hostProcess": False}),
            securityContext={"windowsOptions": {"hostProcess": True}},
        ),
        "hostProcess",
        'pod and containers "e", "f" must not set securityContext.windowsOptions.hostProcess=true',
    ),
}


@pytest.mark.parametrize("case", list(FAILING))
def test_each_check_fails_with_upstreams_text(case: str) -> None:
    check, meta, pod_spec, reason, detail = FAILING[case]
    assert check(meta, pod_spec) == Violation(reason, detail)


HARDENED = spec(
    ctr(
        "a",
        allowPrivilegeEscalation=False,
        capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        seccompProfile={"type": "RuntimeDefault"},
        runAsNonRoot=True,
        runAsUser=1000,
        procMount="Default",
        seLinuxOptions={"type": "container_t", "level": "s0:c1"},
        appArmorProfile={"type": "Localhost", "localhostProfile": "p"},
    ),
    volumes=[{"name": "v", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}],
    securityContext={"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
)


@pytest.mark.parametrize("case", list(FAILING))
def test_each_check_passes_a_hardened_pod(case: str) -> None:
    check = FAILING[case][0]
    assert check({}, HARDENED) is None
    assert check({}, {}) is None or case.startswith(("capabilities_restricted", "allowPriv"))


def test_empty_containers_pass_everything_at_restricted() -> None:
    assert pss.evaluate(RESTRICTED, {"spec": {}}) == []
    assert pss.evaluate(RESTRICTED, {"spec": HARDENED}) == []


def test_the_finding_1_message() -> None:
    pod = {"spec": spec(ctr("main"), volumes=[{"name": "p", "hostPath": {"path": "/pki"}}])}
    found = pss.evaluate(BASELINE, pod)
    assert pss.violates(BASELINE, found) == (
        'violates PodSecurity "baseline:latest": hostPath volumes (volume "p")'
    )


def test_aggregation_order_and_joining_as_upstream() -> None:
    """Baseline IDs sorted, then restricted IDs sorted; ``, `` between checks."""
    pod = {
        "spec": spec(
            ctr("main", privileged=True, capabilities={"add": ["SYS_ADMIN"]}),
            hostPID=True,
            volumes=[{"name": "p", "hostPath": {"path": "/"}}],
        )
    }
    assert pss.violates(BASELINE, pss.evaluate(BASELINE, pod)) == (
        'violates PodSecurity "baseline:latest": non-default capabilities (container "main"'
        ' must not include "SYS_ADMIN" in securityContext.capabilities.add), host namespaces'
        ' (hostPID=true), hostPath volumes (volume "p"), privileged (container "main" must'
        " not set securityContext.privileged=true)"
    )
    restricted = [v.reason for v in pss.evaluate(RESTRICTED, pod)]
    assert restricted == [
        "host namespaces",
        "privileged",
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "restricted volume types",
        "runAsNonRoot != true",
        "seccompProfile",
    ]
    assert pss.forbidden_reason(pss.evaluate(BASELINE, pod)) == (
        "non-default capabilities, host namespaces, hostPath volumes, privileged"
    )
    older = pss.violates(LevelVersion("baseline", 30), pss.evaluate(BASELINE, pod), would=True)
    assert older.startswith('would violate PodSecurity "baseline:v1.30": non-default')


def test_privileged_checks_nothing() -> None:
    pod = {"spec": spec(ctr("a", privileged=True), hostNetwork=True)}
    assert pss.evaluate(LevelVersion("privileged"), pod) == []


def test_restricted_overrides_the_baseline_checks_it_supersedes() -> None:
    ids = [i for i, _ in pss.checks_for(RESTRICTED)]
    for overridden in ("capabilities_baseline", "hostPathVolumes", "seccompProfile_baseline"):
        assert overridden in [i for i, _ in pss.checks_for(BASELINE)]
        assert overridden not in ids
    assert "hostProbesAndHostLifecycle" not in ids  # 1.34+, this server is 1.32


@pytest.mark.parametrize(
    ("minor", "present", "absent"),
    [
        (0, ["seccompProfile_baseline", "restrictedVolumes"], ["allowPrivilegeEscalation"]),
        (18, ["allowPrivilegeEscalation"], ["seccompProfile_restricted", "runAsUser"]),
        (22, ["capabilities_restricted", "seccompProfile_restricted"], ["runAsUser"]),
        (23, ["runAsUser"], ["procMount_restricted"]),
        (99, ["runAsUser"], ["hostProbesAndHostLifecycle"]),  # clamped to the server's 1.32
    ],
)
def test_versions_pick_checks(minor: int, present: list[str], absent: list[str]) -> None:
    ids = [i for i, _ in pss.checks_for(LevelVersion("restricted", minor))]
    assert set(present) <= set(ids) and not set(absent) & set(ids)


def test_versions_change_what_a_check_allows() -> None:
    keepalive = {"spec": spec(securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem"}]})}
    assert pss.evaluate(LevelVersion("baseline", 31), keepalive)
    assert not pss.evaluate(LevelVersion("baseline", 32), keepalive)
    engine = {"spec": spec(ctr("a", seLinuxOptions={"type": "container_engine_t"}))}
    assert pss.evaluate(LevelVersion("baseline", 30), engine)
    assert not pss.evaluate(BASELINE, engine)
    annotated = {
        "metadata": {"annotations": {c.SECCOMP_ANNOTATION_POD: "unconfined"}},
        "spec": spec(ctr("a")),
    }
    assert pss.evaluate(LevelVersion("baseline", 18), annotated)
    assert not pss.evaluate(BASELINE, annotated)
    windows = {"spec": spec(ctr("a"), os={"name": "windows"})}
    reasons = [v.reason for v in pss.evaluate(LevelVersion("restricted", 24), windows)]
    assert "allowPrivilegeEscalation != false" in reasons
    reasons = [v.reason for v in pss.evaluate(RESTRICTED, windows)]
    assert reasons == ["runAsNonRoot != true"]
    probe = {"spec": spec({"name": "a", "livenessProbe": {"httpGet": {"host": "x"}}})}
    assert not pss.evaluate(BASELINE, probe)  # 1.34's check; latest here is 1.32
    assert pss.evaluate(BASELINE, probe, max_minor=34)


def test_user_namespaces_relax_only_from_1_35() -> None:
    pod = {"spec": spec(ctr("a", procMount="Unmasked", runAsUser=0), hostUsers=False)}
    assert [v.reason for v in pss.evaluate(BASELINE, pod)] == ["procMount"]
    assert pss.evaluate(BASELINE, pod, max_minor=35) == []
    restricted = [v.reason for v in pss.evaluate(RESTRICTED, pod, max_minor=35)]
    assert "procMount" in restricted and "runAsUser=0" not in restricted


@pytest.mark.parametrize(
    ("value", "hostile"),
    [
        ({"hostPID": "yes"}, "host namespaces"),
        ({"volumes": [{"name": "p", "hostPath": None}]}, "hostPath volumes"),
        ({"containers": [ctr("a", privileged=1)]}, "privileged"),
        ({"containers": [ctr("a", capabilities={"add": "SYS_ADMIN"})]}, "non-default"),
    ],
)
def test_values_the_node_would_act_on_count(value: dict[str, Any], hostile: str) -> None:
    """Go cannot see these types; the node reads them by truthiness, so they count."""
    found = pss.evaluate(BASELINE, {"spec": {"containers": [ctr("x")], **value}})
    assert found and found[0].reason.startswith(hostile)


def test_root_by_any_spelling_is_root() -> None:
    for value in (0, "0", 0.0):
        pod = {"spec": spec(ctr("a", runAsUser=value))}
        assert c.run_as_user_1_23({}, pod["spec"]) is not None
    assert c.run_as_user_1_23({}, spec(ctr("a", runAsUser="x"))) is None


def test_garbage_shapes_do_not_crash() -> None:
    for pod in (
        {},
        {"spec": None},
        {"spec": {"containers": "x", "volumes": 3, "securityContext": []}},
        {"metadata": {"annotations": None}, "spec": {"containers": [None, 4, {"name": None}]}},
    ):
        for level in pss.LEVELS:
            pss.evaluate(LevelVersion(level), pod)


# -- labels ----------------------------------------------------------------------------
def labels(**modes: str) -> dict[str, str]:
    return {f"pod-security.kubernetes.io/{k.replace('_', '-')}": v for k, v in modes.items()}


def test_no_labels_is_the_default_policy() -> None:
    assert pss.policy_from_labels(None) == (pss.DEFAULT_POLICY, [])
    assert pss.DEFAULT_POLICY.enforce == BASELINE
    assert pss.DEFAULT_POLICY.warn.level == "privileged"


def test_labels_choose_levels_and_versions() -> None:
    policy, errors = pss.policy_from_labels(
        labels(enforce="restricted", enforce_version="v1.30", audit="baseline")
    )
    assert errors == []
    assert str(policy.enforce) == "restricted:v1.30" and str(policy.audit) == "baseline:latest"
    assert str(policy.warn) == "restricted:v1.30"  # warn follows a stricter explicit enforce


def test_warn_does_not_follow_when_given_or_when_not_stricter() -> None:
    given, _ = pss.policy_from_labels(labels(enforce="restricted", warn="baseline"))
    assert given.warn == BASELINE
    version, _ = pss.policy_from_labels(labels(enforce="restricted", warn_version="v1.25"))
    assert str(version.warn) == "restricted:v1.25"
    privileged, _ = pss.policy_from_labels(labels(enforce="privileged"))
    assert privileged.warn.level == "privileged" and privileged.fully_privileged


def test_invalid_labels_fail_closed_for_enforce_open_for_the_rest() -> None:
    policy, errors = pss.policy_from_labels(
        labels(enforce="Baseline", enforce_version="1.30", audit="x", warn="", warn_version="v01")
    )
    assert policy == Policy(
        enforce=LevelVersion("restricted"),
        audit=LevelVersion("privileged"),
        warn=LevelVersion("privileged"),
    )
    assert [str(e) for e in errors] == [
        'metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "Baseline":'
        " must be one of privileged, baseline, restricted",
        "metadata.labels[pod-security.kubernetes.io/enforce-version]: Invalid value:"
        ' "1.30": must be "latest" or "v1.x"',
        'metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: "x": must be one'
        " of privileged, baseline, restricted",
        'metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "": must be one'
        " of privileged, baseline, restricted",
        'metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "v01":'
        ' must be "latest" or "v1.x"',
    ]


# -- updates ---------------------------------------------------------------------------
def test_significant_updates() -> None:
    old = {"metadata": {"labels": {}}, "spec": spec(ctr("a"), nodeName="n")}
    relabelled = {"metadata": {"labels": {"x": "y"}}, "spec": spec(ctr("a"), nodeName="n")}
    assert not pss.is_significant_update(relabelled, old)
    tolerated = {**old, "spec": {**old["spec"], "tolerations": [{"key": "k"}]}}
    assert not pss.is_significant_update(tolerated, old)
    assert not pss.is_significant_update({**old, "status": {"phase": "Running"}}, old)
    image = {**old, "spec": spec({"name": "a", "image": "other"}, nodeName="n")}
    assert pss.is_significant_update(image, old)
    sneaky = {**old, "spec": spec(ctr("a", privileged=True), nodeName="n")}
    assert pss.is_significant_update(sneaky, old)  # upstream trusts validation; we don't
    ephemeral = {**old, "spec": {**old["spec"], "ephemeralContainers": [ctr("dbg")]}}
    assert pss.is_significant_update(ephemeral, old)
    noted = {"metadata": {"annotations": {c.APPARMOR_ANNOTATION_PREFIX + "a": "unconfined"}}}
    assert pss.is_significant_update({**old, **noted}, old)
