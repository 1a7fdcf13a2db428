"""The Pod Security Standards checks, one function per check of Kubernetes'
``k8s.io/pod-security-admission/policy/check_*.go``, with their texts byte for byte.

Each check takes the pod's ``metadata`` and ``spec`` (plain core/v1 dicts) and returns
``None`` when the pod passes, else a :class:`Violation` (``reason``, ``detail``). The
registry that picks checks by level and version is :mod:`.pod_security`.

Where Go can trust its types and we cannot, the reading is the node's, so that nothing
the node would act on slips through: a "must not be true" field counts when truthy
(the node runs ``bool(spec.get("hostPID"))``), a volume counts as hostPath when it has
the key (the node tests ``"hostPath" in volume``), a scalar where a list belongs counts
as a one-item list, and a volume is restricted if it names any source outside the
allowed ones (Kubernetes' validation forbids two sources; ours does not). For every
value a real Kubernetes would accept, the outcome and the text are upstream's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Meta = Mapping[str, Any]
Spec = Mapping[str, Any]


@dataclass(frozen=True)
class Violation:
    """A failed check: ``reason`` always shows, ``detail`` (may be "") in parentheses."""

    reason: str
    detail: str = ""


Check = Callable[[Meta, Spec], "Violation | None"]

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

CAPABILITIES_BASELINE = frozenset(
    "AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL MKNOD NET_BIND_SERVICE SETFCAP SETGID"
    " SETPCAP SETUID SYS_CHROOT".split()
)
SYSCTLS_1_0 = frozenset(
    "kernel.shm_rmid_forced net.ipv4.ip_local_port_range net.ipv4.tcp_syncookies"
    " net.ipv4.ping_group_range net.ipv4.ip_unprivileged_port_start".split()
)
SYSCTLS_1_27 = SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
SYSCTLS_1_29 = SYSCTLS_1_27 | set(
    "net.ipv4.tcp_keepalive_time net.ipv4.tcp_fin_timeout net.ipv4.tcp_keepalive_intvl"
    " net.ipv4.tcp_keepalive_probes".split()
)
SYSCTLS_1_32 = SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
SYSCTLS_1_37 = SYSCTLS_1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}
SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SELINUX_TYPES_1_31 = SELINUX_TYPES_1_0 | {"container_engine_t"}
ALLOWED_VOLUMES = frozenset(
    "configMap csi downwardAPI emptyDir ephemeral image persistentVolumeClaim projected"
    " secret".split()
)
#: The order in which restrictedVolumes names a bad volume's type.
RESTRICTED_VOLUMES = tuple(
    "hostPath gcePersistentDisk awsElasticBlockStore gitRepo nfs iscsi glusterfs rbd"
    " flexVolume cinder cephfs flocker fc azureFile vsphereVolume quobyte azureDisk"
    " photonPersistentDisk portworxVolume scaleIO storageos".split()
)
SECCOMP_ANNOTATION_POD = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


# -- helpers: Go's joinQuote, pluralize, %q, and a defensive reading of the dicts -------
def join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def plural(singular: str, many: str, count: int) -> str:
    return singular if count == 1 else many


def go_quote(text: str) -> str:
    """Go's ``%q`` for printable text (the same escaping as JSON there)."""
    return json.dumps(text, ensure_ascii=False)


def as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def containers(spec: Spec) -> Iterator[Mapping[str, Any]]:
    """Every container, in visitContainers' order: init, regular, ephemeral."""
    for key in CONTAINER_LISTS:
        for container in as_list(spec.get(key)):
            yield as_dict(container)


def context_of(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_dict(container.get("securityContext"))


def pod_context(spec: Spec) -> Mapping[str, Any]:
    return as_dict(spec.get("securityContext"))


def name_of(container: Mapping[str, Any]) -> str:
    return text(container.get("name"))


def is_set(mapping: Mapping[str, Any], key: str) -> bool:
    """Go's ``!= nil`` on a pointer field."""
    return mapping.get(key) is not None


def _containers_phrase(names: list[str]) -> str:
    return f"{plural('container', 'containers', len(names))} {join_quote(names)}"


def _setters(pod_bad: bool, names: list[str]) -> list[str]:
    setters = ["pod"] if pod_bad else []
    if names:
        setters.append(_containers_phrase(names))
    return setters


def is_windows(spec: Spec) -> bool:
    return as_dict(spec.get("os")).get("name") == "windows"


def user_namespaced(spec: Spec) -> bool:
    """``hostUsers: false``: the relaxations of 1.35 apply."""
    return spec.get("hostUsers") is False


# -- baseline ------------------------------------------------------------------------
def app_armor_profile(meta: Meta, spec: Spec) -> Violation | None:
    allowed = ("RuntimeDefault", "Localhost")
    bad_values: set[str] = set()
    pod_profile = pod_context(spec).get("appArmorProfile")
    pod_bad = pod_profile is not None and as_dict(pod_profile).get("type") not in allowed
    if pod_bad:
        bad_values.add(text(as_dict(pod_profile).get("type")))
    names = []
    for c in containers(spec):
        profile = context_of(c).get("appArmorProfile")
        if profile is not None and as_dict(profile).get("type") not in allowed:
            names.append(name_of(c))
            bad_values.add(text(as_dict(profile).get("type")))
    setters = _setters(pod_bad, names)
    annotations = sorted(
        f"{k}={go_quote(text(v))}"
        for k, v in as_dict(meta.get("annotations")).items()
        if str(k).startswith(APPARMOR_ANNOTATION_PREFIX) and not _apparmor_annotation_ok(text(v))
    )
    values = sorted(bad_values) + annotations
    if annotations:
        setters.append(plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    reason = plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values))
    detail = f"{' and '.join(setters)} must not set AppArmor profile type to {join_quote(values)}"
    return Violation(reason, detail)


def _apparmor_annotation_ok(value: str) -> bool:
    return value in ("", "runtime/default") or value.startswith("localhost/")


def capabilities_baseline(meta: Meta, spec: Spec) -> Violation | None:
    names, caps = [], set()
    for c in containers(spec):
        added = [text(x) for x in as_list(as_dict(context_of(c).get("capabilities")).get("add"))]
        bad = [x for x in added if x not in CAPABILITIES_BASELINE]
        if bad:
            names.append(name_of(c))
            caps.update(bad)
    if not names:
        return None
    return Violation(
        "non-default capabilities",
        f"{_containers_phrase(names)} must not include {join_quote(sorted(caps))}"
        " in securityContext.capabilities.add",
    )


def host_namespaces(meta: Meta, spec: Spec) -> Violation | None:
    used = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return Violation("host namespaces", ", ".join(used)) if used else None


def host_path_volumes(meta: Meta, spec: Spec) -> Violation | None:
    volumes = [as_dict(v) for v in as_list(spec.get("volumes"))]
    bad = [text(v.get("name")) for v in volumes if "hostPath" in v]
    if not bad:
        return None
    what = plural("volume", "volumes", len(bad))
    return Violation("hostPath volumes", f"{what} {join_quote(bad)}")


def host_ports(meta: Meta, spec: Spec) -> Violation | None:
    names, ports = [], set()
    for c in containers(spec):
        used = [as_dict(p).get("hostPort") for p in as_list(c.get("ports"))]
        used = [p for p in used if p not in (None, 0)]
        if used:
            names.append(name_of(c))
            ports.update(text(p) for p in used)
    if not names:
        return None
    return Violation(
        "hostPort",
        f"{_containers_phrase(names)} {plural('uses', 'use', len(names))}"
        f" {plural('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}",
    )


def _handler_hosts(handler: Any) -> list[str]:
    handler = as_dict(handler)
    hosts = (as_dict(handler.get(k)).get("host") for k in ("httpGet", "tcpSocket"))
    return [text(h) for h in hosts if h not in (None, "")]


def host_probes_and_lifecycle(meta: Meta, spec: Spec) -> Violation | None:
    names, hosts = set(), set()
    for c in containers(spec):
        lifecycle = as_dict(c.get("lifecycle"))
        handlers = [c.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
        for handler in handlers:
            found = _handler_hosts(handler)
            if found:
                names.add(name_of(c))
                hosts.update(found)
    if not names:
        return None
    what = plural("probe or lifecycle host", "probe or lifecycle hosts", len(hosts))
    return Violation(
        "probe or lifecycle host",
        f"{_containers_phrase(sorted(names))} {plural('uses', 'use', len(names))}"
        f" {what} {join_quote(sorted(hosts))}",
    )


def privileged(meta: Meta, spec: Spec) -> Violation | None:
    names = [name_of(c) for c in containers(spec) if context_of(c).get("privileged")]
    if not names:
        return None
    return Violation(
        "privileged", f"{_containers_phrase(names)} must not set securityContext.privileged=true"
    )


def proc_mount(meta: Meta, spec: Spec) -> Violation | None:
    names, kinds = [], set()
    for c in containers(spec):
        value = context_of(c).get("procMount")
        if value is not None and value != "Default":
            names.append(name_of(c))
            kinds.add(text(value))
    if not names:
        return None
    return Violation(
        "procMount",
        f"{_containers_phrase(names)} must not set securityContext.procMount to"
        f" {join_quote(sorted(kinds))}",
    )


def proc_mount_1_35(meta: Meta, spec: Spec) -> Violation | None:
    return None if user_namespaced(spec) else proc_mount(meta, spec)


def _se_linux(allowed: frozenset[str]) -> Check:
    def se_linux_options(meta: Meta, spec: Spec) -> Violation | None:
        bad_types: set[str] = set()
        flags = {"user": False, "role": False}

        def bad(options: Any) -> bool:
            if options is None:
                return False
            options = as_dict(options)
            kind = text(options.get("type"))
            if kind not in allowed:
                bad_types.add(kind)
            for key in flags:
                flags[key] = flags[key] or bool(text(options.get(key)))
            return kind not in allowed or any(text(options.get(k)) for k in flags)

        pod_bad = bad(pod_context(spec).get("seLinuxOptions"))
        names = [name_of(c) for c in containers(spec) if bad(context_of(c).get("seLinuxOptions"))]
        setters = _setters(pod_bad, names)
        if not setters:
            return None
        data = [f"{plural('type', 'types', len(bad_types))} {join_quote(sorted(bad_types))}"]
        data = data if bad_types else []
        data += [f"{k} may not be set" for k, was_set in flags.items() if was_set]
        return Violation(
            "seLinuxOptions",
            f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions:"
            f" {'; '.join(data)}",
        )

    return se_linux_options


se_linux_options_1_0 = _se_linux(SELINUX_TYPES_1_0)
se_linux_options_1_31 = _se_linux(SELINUX_TYPES_1_31)


def _seccomp_annotation_ok(value: str) -> bool:
    return value in ("runtime/default", "docker/default") or value.startswith("localhost/")


def seccomp_baseline_1_0(meta: Meta, spec: Spec) -> Violation | None:
    annotations = as_dict(meta.get("annotations"))
    keys = [SECCOMP_ANNOTATION_POD]
    keys += [SECCOMP_ANNOTATION_PREFIX + name_of(c) for c in containers(spec)]
    bad = {
        f"{k}={go_quote(text(annotations[k]))}"
        for k in keys
        if k in annotations and not _seccomp_annotation_ok(text(annotations[k]))
    }
    if not bad:
        return None
    what = plural("annotation", "annotations", len(bad))
    return Violation("seccompProfile", f"forbidden {what} {', '.join(sorted(bad))}")


def _seccomp_type(context: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(set, valid, type) of a securityContext's seccompProfile."""
    profile = context.get("seccompProfile")
    kind = text(as_dict(profile).get("type"))
    return profile is not None, kind in ("RuntimeDefault", "Localhost"), kind


def _seccomp(meta: Meta, spec: Spec, restricted: bool) -> Violation | None:
    bad_values: set[str] = set()
    pod_set, pod_valid, kind = _seccomp_type(pod_context(spec))
    if pod_set and not pod_valid:
        bad_values.add(kind)
    explicit, implicit = [], []
    for c in containers(spec):
        was_set, valid, kind = _seccomp_type(context_of(c))
        if was_set and not valid:
            explicit.append(name_of(c))
            bad_values.add(kind)
        elif not was_set and not (pod_set and pod_valid):
            implicit.append(name_of(c))
    setters = _setters(pod_set and not pod_valid, explicit)
    if setters:
        return Violation(
            "seccompProfile",
            f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to"
            f" {join_quote(sorted(bad_values))}",
        )
    if restricted and implicit:
        return Violation(
            "seccompProfile",
            f"pod or {_containers_phrase(implicit)} must set securityContext.seccompProfile.type"
            ' to "RuntimeDefault" or "Localhost"',
        )
    return None


def seccomp_baseline_1_19(meta: Meta, spec: Spec) -> Violation | None:
    return _seccomp(meta, spec, restricted=False)


def _sysctls(allowed: frozenset[str]) -> Check:
    def sysctls(meta: Meta, spec: Spec) -> Violation | None:
        names = [text(as_dict(s).get("name")) for s in as_list(pod_context(spec).get("sysctls"))]
        bad = [n for n in names if n not in allowed]
        return Violation("forbidden sysctls", ", ".join(bad)) if bad else None

    return sysctls


sysctls_1_0 = _sysctls(SYSCTLS_1_0)
sysctls_1_27 = _sysctls(SYSCTLS_1_27)
sysctls_1_29 = _sysctls(SYSCTLS_1_29)
sysctls_1_32 = _sysctls(SYSCTLS_1_32)
sysctls_1_37 = _sysctls(SYSCTLS_1_37)


def windows_host_process(meta: Meta, spec: Spec) -> Violation | None:
    def host_process(context: Mapping[str, Any]) -> bool:
        return bool(as_dict(context.get("windowsOptions")).get("hostProcess"))

    names = [name_of(c) for c in containers(spec) if host_process(context_of(c))]
    setters = _setters(host_process(pod_context(spec)), names)
    if not setters:
        return None
    return Violation(
        "hostProcess",
        f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true",
    )


# -- restricted ----------------------------------------------------------------------
def allow_privilege_escalation_1_8(meta: Meta, spec: Spec) -> Violation | None:
    names = [
        name_of(c)
        for c in containers(spec)
        if context_of(c).get("allowPrivilegeEscalation") is not False
    ]
    if not names:
        return None
    return Violation(
        "allowPrivilegeEscalation != false",
        f"{_containers_phrase(names)} must set securityContext.allowPrivilegeEscalation=false",
    )


def allow_privilege_escalation_1_25(meta: Meta, spec: Spec) -> Violation | None:
    return None if is_windows(spec) else allow_privilege_escalation_1_8(meta, spec)


def capabilities_restricted_1_22(meta: Meta, spec: Spec) -> Violation | None:
    missing_drop, adding, caps = [], [], set()
    for c in containers(spec):
        capabilities = context_of(c).get("capabilities")
        if capabilities is None:
            missing_drop.append(name_of(c))
            continue
        capabilities = as_dict(capabilities)
        if "ALL" not in [text(x) for x in as_list(capabilities.get("drop"))]:
            missing_drop.append(name_of(c))
        bad = [text(x) for x in as_list(capabilities.get("add"))]
        bad = [x for x in bad if x != "NET_BIND_SERVICE"]
        if bad:
            adding.append(name_of(c))
            caps.update(bad)
    details = []
    if missing_drop:
        details.append(
            f'{_containers_phrase(missing_drop)} must set securityContext.capabilities.drop=["ALL"]'
        )
    if adding:
        details.append(
            f"{_containers_phrase(adding)} must not include {join_quote(sorted(caps))}"
            " in securityContext.capabilities.add"
        )
    return Violation("unrestricted capabilities", "; ".join(details)) if details else None


def capabilities_restricted_1_25(meta: Meta, spec: Spec) -> Violation | None:
    return None if is_windows(spec) else capabilities_restricted_1_22(meta, spec)


def restricted_volumes(meta: Meta, spec: Spec) -> Violation | None:
    names, kinds = [], set()
    for volume in as_list(spec.get("volumes")):
        volume = as_dict(volume)
        sources = {k for k, v in volume.items() if k != "name" and v is not None}
        if "hostPath" in volume:
            sources.add("hostPath")
        if sources <= ALLOWED_VOLUMES:
            continue
        names.append(text(volume.get("name")))
        kinds.add(next((k for k in RESTRICTED_VOLUMES if k in sources), "unknown"))
    if not names:
        return None
    what = plural("restricted volume type", "restricted volume types", len(kinds))
    return Violation(
        "restricted volume types",
        f"{plural('volume', 'volumes', len(names))} {join_quote(names)}"
        f" {plural('uses', 'use', len(names))} {what} {join_quote(sorted(kinds))}",
    )


def run_as_non_root_1_0(meta: Meta, spec: Spec) -> Violation | None:
    pod_value = pod_context(spec).get("runAsNonRoot")
    pod_ok = pod_value is True
    explicit, implicit = [], []
    for c in containers(spec):
        value = context_of(c).get("runAsNonRoot")
        if value is not None and value is not True:
            explicit.append(name_of(c))
        elif value is None and not pod_ok:
            implicit.append(name_of(c))
    setters = _setters(pod_value is not None and not pod_ok, explicit)
    if setters:
        return Violation(
            "runAsNonRoot != true",
            f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false",
        )
    if implicit:
        return Violation(
            "runAsNonRoot != true",
            f"pod or {_containers_phrase(implicit)} must set securityContext.runAsNonRoot=true",
        )
    return None


def run_as_non_root_1_35(meta: Meta, spec: Spec) -> Violation | None:
    return None if user_namespaced(spec) else run_as_non_root_1_0(meta, spec)


def _is_root(context: Mapping[str, Any]) -> bool:
    """runAsUser 0, read as the node reads it (``int(value)``)."""
    value = context.get("runAsUser")
    try:
        return value is not None and int(value) == 0
    except (TypeError, ValueError):
        return False


def run_as_user_1_23(meta: Meta, spec: Spec) -> Violation | None:
    names = [name_of(c) for c in containers(spec) if _is_root(context_of(c))]
    setters = _setters(_is_root(pod_context(spec)), names)
    if not setters:
        return None
    return Violation("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")


def run_as_user_1_35(meta: Meta, spec: Spec) -> Violation | None:
    return None if user_namespaced(spec) else run_as_user_1_23(meta, spec)


def seccomp_restricted_1_19(meta: Meta, spec: Spec) -> Violation | None:
    return _seccomp(meta, spec, restricted=True)


def seccomp_restricted_1_25(meta: Meta, spec: Spec) -> Violation | None:
    return None if is_windows(spec) else seccomp_restricted_1_19(meta, spec)
