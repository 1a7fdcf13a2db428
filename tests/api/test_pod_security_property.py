"""Properties of Pod Security evaluation over generated pods: a pod is refused at a level
exactly when it breaks a rule of the Pod Security Standards for that level (an oracle
written here from the standards' tables, not from the checks), the levels nest, and exec
admission refuses a non-administrator exactly the pods create would refuse.

Strategies: :func:`pods` draws every field a check reads (see :mod:`pod_security_checks`),
from values on both sides of each rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.api import pod_security as pss
from hatchway.api.pod_security import LevelVersion
from hatchway.apiserver.admission import exec_admission, pod_escalation_reason
from hatchway.apiserver.authn import UserInfo

MALLORY = UserInfo("mallory", ("system:authenticated",))
CAPS = ["CHOWN", "NET_BIND_SERVICE", "KILL", "SYS_ADMIN", "NET_RAW", "SYS_PTRACE", "ALL"]
PROFILE = st.sampled_from(["RuntimeDefault", "Localhost", "Unconfined", "Bogus"])
SAFE_SYSCTLS = ["kernel.shm_rmid_forced", "net.ipv4.tcp_rmem", "net.ipv4.ip_local_port_range"]
SYSCTLS = [*SAFE_SYSCTLS, "kernel.msgmax", "net.ipv4.tcp_slow_start_after_idle"]
SELINUX_TYPES = ["", "container_t", "container_engine_t", "spc_t"]
VOLUME_SOURCES = ["emptyDir", "configMap", "secret", "hostPath", "nfs", "gitRepo"]
LEVELS = [LevelVersion(level) for level in pss.LEVELS]


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def sparse(max_set: int = 2, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    """A dict setting at most ``max_set`` of ``fields``: most pods are near a boundary
    (one or two rules in play), where a wrong check shows."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        keys = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=max_set))
        return {k: draw(fields[k]) for k in keys}

    return build()


def _dict(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return sparse(len(fields), **fields)


SELINUX = _dict(
    type=st.sampled_from(SELINUX_TYPES),
    user=st.sampled_from(["", "u"]),
    role=st.sampled_from(["", "r"]),
)
CONTEXT_FIELDS = {
    "privileged": st.booleans(),
    "allowPrivilegeEscalation": st.booleans(),
    "runAsNonRoot": st.booleans(),
    "runAsUser": st.sampled_from([0, 1000]),
    "capabilities": _dict(
        add=st.lists(st.sampled_from(CAPS), max_size=1),
        drop=st.lists(st.sampled_from(["ALL", "CHOWN"]), max_size=2),
    ),
    "seccompProfile": _dict(type=PROFILE),
    "appArmorProfile": _dict(type=PROFILE),
    "procMount": st.sampled_from(["Default", "Unmasked"]),
    "seLinuxOptions": SELINUX,
    "windowsOptions": _dict(hostProcess=st.booleans()),
}
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@st.composite
def context(draw: st.DrawFn) -> dict[str, Any] | None:
    base = dict(HARDENED) if draw(st.booleans()) else {}
    base.pop(draw(st.sampled_from(["", *HARDENED])), None)  # hardened but for one field
    out = {**base, **draw(sparse(1, **CONTEXT_FIELDS))}
    added = draw(st.sampled_from([None, *CAPS]))
    if added is not None:  # the capability rules are the finest: give them more draws
        out["capabilities"] = {**(out.get("capabilities") or {}), "add": [added]}
    return out or draw(st.sampled_from([None, {}]))


PORTS = st.lists(_dict(containerPort=st.just(80), hostPort=st.sampled_from([0, 8080])))
PROBE = _dict(httpGet=_dict(port=st.just(80), host=st.sampled_from(["", "x"])))


def containers(prefix: str, low: int, high: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.fixed_dictionaries(
        {"image": st.just("busybox"), "securityContext": context()},
        optional={"ports": PORTS, "livenessProbe": PROBE},
    )
    return st.lists(one, min_size=low, max_size=high).map(
        lambda cs: [{"name": f"{prefix}{i}", **c} for i, c in enumerate(cs)]
    )


POD_CONTEXT = sparse(
    2,
    runAsNonRoot=st.booleans(),
    runAsUser=st.sampled_from([0, 1000]),
    seccompProfile=_dict(type=PROFILE),
    appArmorProfile=_dict(type=PROFILE),
    seLinuxOptions=SELINUX,
    sysctls=st.lists(st.sampled_from(SYSCTLS).map(lambda n: {"name": n}), max_size=2),
    windowsOptions=_dict(hostProcess=st.booleans()),
)
VOLUME = st.sampled_from(VOLUME_SOURCES).map(lambda kind: {kind: {"path": "/x"}})
ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            "container.apparmor.security.beta.kubernetes.io/c0",
            "seccomp.security.alpha.kubernetes.io/pod",
        ]
    ),
    st.sampled_from(["runtime/default", "localhost/p", "unconfined"]),
    max_size=1,
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    volumes = draw(st.lists(VOLUME, max_size=1))
    spec = {
        "containers": draw(containers("c", 1, 2)),  # c0 may have the AppArmor annotation
        "initContainers": draw(containers("i", 0, 1)) if draw(st.booleans()) else [],
        "ephemeralContainers": draw(containers("e", 0, 1)) if draw(st.booleans()) else [],
        "volumes": [{"name": f"v{i}", **v} for i, v in enumerate(volumes)],
        **draw(
            sparse(
                1,
                hostNetwork=st.booleans(),
                hostPID=st.booleans(),
                hostIPC=st.booleans(),
                securityContext=POD_CONTEXT,
            )
        ),
    }
    meta = {"name": "p", "namespace": "ns", "annotations": draw(ANNOTATIONS)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


# -- the oracle: the Pod Security Standards' tables, at this server's version (1.32) ----
def _all(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [*spec["initContainers"], *spec["containers"], *spec["ephemeralContainers"]]


def _contexts(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c.get("securityContext") or {} for c in _all(pod)]


def _both(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [pod["spec"].get("securityContext") or {}, *_contexts(pod)]


def _profile_ok(profile: dict[str, Any] | None) -> bool:
    """Unset, or set to the runtime's default or a node-local profile."""
    return profile is None or profile.get("type") in ("RuntimeDefault", "Localhost")


def baseline_ok(pod: dict[str, Any]) -> bool:
    spec, annotations = pod["spec"], pod["metadata"]["annotations"]
    allowed = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD"}
    allowed |= {"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
    sysctls = (spec.get("securityContext") or {}).get("sysctls") or []
    rules = [
        not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")),
        not any(c.get("privileged") for c in _contexts(pod)),
        all(set((c.get("capabilities") or {}).get("add") or []) <= allowed for c in _contexts(pod)),
        not any("hostPath" in v for v in spec["volumes"]),
        not any(p.get("hostPort") for c in _all(pod) for p in c.get("ports") or []),
        all(_profile_ok(c.get("appArmorProfile")) for c in _both(pod)),
        all(
            v != "unconfined" for k, v in annotations.items() if k.startswith("container.apparmor")
        ),
        all(c.get("procMount", "Default") == "Default" for c in _contexts(pod)),
        all(_profile_ok(c.get("seccompProfile")) for c in _both(pod)),
        all(s["name"] in SAFE_SYSCTLS for s in sysctls),
        all(
            o.get("type", "") in SELINUX_TYPES[:3] and not o.get("user") and not o.get("role")
            for o in (c.get("seLinuxOptions") for c in _both(pod))
            if o is not None
        ),
        not any((c.get("windowsOptions") or {}).get("hostProcess") for c in _both(pod)),
    ]
    return all(rules)


def restricted_ok(pod: dict[str, Any]) -> bool:
    spec = pod["spec"]
    pod_ctx = spec.get("securityContext") or {}
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    rules = [
        baseline_ok(pod),
        all(
            {k for k in v if k != "name"} <= {"emptyDir", "configMap", "secret"}
            for v in spec["volumes"]
        ),
        all(c.get("allowPrivilegeEscalation") is False for c in _contexts(pod)),
        all(
            "ALL" in ((c.get("capabilities") or {}).get("drop") or [])
            and set((c.get("capabilities") or {}).get("add") or []) <= {"NET_BIND_SERVICE"}
            for c in _contexts(pod)
        ),
        pod_ctx.get("runAsNonRoot") is not False
        and all(c.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True for c in _contexts(pod)),
        all(c.get("runAsUser") != 0 for c in _both(pod)),
        all(
            (c.get("seccompProfile") or {}).get("type", pod_seccomp)
            in ("RuntimeDefault", "Localhost")
            for c in _contexts(pod)
        ),
    ]
    return all(rules)


ORACLE = {"privileged": lambda pod: True, "baseline": baseline_ok, "restricted": restricted_ok}


def allowed(level: str, pod: dict[str, Any]) -> bool:
    return ORACLE[level](pod)


@settings(max_examples=500, deadline=None)
@given(pods())
def test_refused_exactly_when_a_rule_of_the_level_is_broken(pod: dict[str, Any]) -> None:
    for lv in LEVELS:
        found = pss.evaluate(lv, pod)
        assert (not found) == allowed(lv.level, pod), (lv, found)


@settings(max_examples=300, deadline=None)
@given(pods())
def test_levels_nest(pod: dict[str, Any]) -> None:
    privileged, baseline, restricted = (bool(pss.evaluate(lv, pod)) for lv in LEVELS)
    assert not privileged
    assert restricted or not baseline


@settings(max_examples=300, deadline=None)
@given(pods())
def test_exec_refuses_exactly_what_create_refuses(pod: dict[str, Any]) -> None:
    for lv in LEVELS:
        refused_create = bool(pss.evaluate(lv, pod))
        refused_exec = exec_admission(pod, MALLORY, is_admin=False, enforce=lv) is not None
        if lv.level == "privileged":  # the seed's rule still holds where nothing is checked
            assert refused_exec == (pod_escalation_reason(pod) is not None)
        else:
            assert refused_exec == refused_create
        assert exec_admission(pod, MALLORY, is_admin=True, enforce=lv) is None
