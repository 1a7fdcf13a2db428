"""Pod Security Standards: levels, versions, namespace labels, evaluation and messages,
as Kubernetes' ``k8s.io/pod-security-admission`` (``api/`` and ``policy/``) defines them.

    policy, errors = policy_from_labels(namespace_labels, DEFAULT_POLICY)
    found = evaluate(policy.enforce, pod)          # [] when the pod passes
    if found:
        text = violates(policy.enforce, found)
        # 'violates PodSecurity "baseline:latest": hostPath volumes (volume "p")'

Levels are ``privileged`` (nothing checked), ``baseline`` and ``restricted`` (baseline's
checks, less those a restricted check overrides, plus the restricted checks). A check
has versions; ``v1.N`` picks, for each check, the newest version not newer than ``N``.
``latest`` and anything newer than :data:`EMULATED_MINOR` mean the policy of the
Kubernetes minor this server reports (``/version``), as PSA does when it emulates a
version: a 1.32 server does not run the checks and relaxations of 1.34+. The checks run
in upstream's order (baseline IDs sorted, then restricted IDs sorted), and each failed
check reads ``reason (detail)``, joined with ``, `` (PSA's ForbiddenDetail; the ``; ``
inside some details, e.g. ``unrestricted capabilities``, is the check's own).

Labels (``pod-security.kubernetes.io/enforce|audit|warn`` and ``-version``): a bad
enforce level means ``restricted``, a bad audit or warn level means ``privileged``
(fail open), a bad version means ``latest``, each with an error for the namespace's
validation (``metadata.labels[...]: Invalid value: "x": must be one of privileged,
baseline, restricted``); without a warn label, warn follows an explicit enforce label
that is stricter. The checks themselves are in :mod:`.pod_security_checks`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.api import pod_security_checks as c
from hatchway.api.pod_security_checks import Check, Violation
from hatchway.api.status import FieldError, invalid_value

__all__ = [
    "AUDIT_LABEL",
    "AUDIT_VIOLATIONS_ANNOTATION",
    "DEFAULT_POLICY",
    "EMULATED_MINOR",
    "ENFORCED_POLICY_ANNOTATION",
    "ENFORCE_LABEL",
    "LEVELS",
    "WARN_LABEL",
    "LevelVersion",
    "Policy",
    "Violation",
    "evaluate",
    "forbidden_detail",
    "forbidden_reason",
    "is_significant_update",
    "policy_from_labels",
    "violates",
]

PRIVILEGED, BASELINE, RESTRICTED = LEVELS = ("privileged", "baseline", "restricted")
#: The Kubernetes minor this server reports (api.resources.version_info): "latest".
EMULATED_MINOR = 32

PREFIX = "pod-security.kubernetes.io/"
ENFORCE_LABEL = PREFIX + "enforce"
AUDIT_LABEL = PREFIX + "audit"
WARN_LABEL = PREFIX + "warn"
ENFORCED_POLICY_ANNOTATION = PREFIX + "enforce-policy"
AUDIT_VIOLATIONS_ANNOTATION = PREFIX + "audit-violations"
_VERSION = re.compile(r"v1\.(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class LevelVersion:
    """A level at a version; ``minor`` None is ``latest``."""

    level: str
    minor: int | None = None

    def __str__(self) -> str:
        version = "latest" if self.minor is None else f"v1.{self.minor}"
        return f"{self.level}:{version}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion = field(default_factory=lambda: LevelVersion(PRIVILEGED))
    audit: LevelVersion = field(default_factory=lambda: LevelVersion(PRIVILEGED))
    warn: LevelVersion = field(default_factory=lambda: LevelVersion(PRIVILEGED))

    @property
    def fully_privileged(self) -> bool:
        return all(lv.level == PRIVILEGED for lv in (self.enforce, self.audit, self.warn))


#: What a non-administrator gets where the namespace says nothing: baseline enforced.
DEFAULT_POLICY = Policy(enforce=LevelVersion(BASELINE))


@dataclass(frozen=True)
class _Registered:
    id: str
    level: str
    #: (minimum minor, check, baseline check IDs this version overrides), oldest first.
    versions: tuple[tuple[int, Check, tuple[str, ...]], ...]


def _b(check_id: str, *versions: tuple[int, Check]) -> _Registered:
    return _Registered(check_id, BASELINE, tuple((v, f, ()) for v, f in versions))


def _r(check_id: str, overrides: tuple[str, ...], *versions: tuple[int, Check]) -> _Registered:
    return _Registered(check_id, RESTRICTED, tuple((v, f, overrides) for v, f in versions))


CHECKS: tuple[_Registered, ...] = (
    _b("appArmorProfile", (0, c.app_armor_profile)),
    _b("capabilities_baseline", (0, c.capabilities_baseline)),
    _b("hostNamespaces", (0, c.host_namespaces)),
    _b("hostPathVolumes", (0, c.host_path_volumes)),
    _b("hostPorts", (0, c.host_ports)),
    _b("hostProbesAndHostLifecycle", (34, c.host_probes_and_lifecycle)),
    _b("privileged", (0, c.privileged)),
    _b("procMount", (0, c.proc_mount), (35, c.proc_mount_1_35)),
    _b("seLinuxOptions", (0, c.se_linux_options_1_0), (31, c.se_linux_options_1_31)),
    _b("seccompProfile_baseline", (0, c.seccomp_baseline_1_0), (19, c.seccomp_baseline_1_19)),
    _b(
        "sysctls",
        (0, c.sysctls_1_0),
        (27, c.sysctls_1_27),
        (29, c.sysctls_1_29),
        (32, c.sysctls_1_32),
        (37, c.sysctls_1_37),
    ),
    _b("windowsHostProcess", (0, c.windows_host_process)),
    _r(
        "allowPrivilegeEscalation",
        (),
        (8, c.allow_privilege_escalation_1_8),
        (25, c.allow_privilege_escalation_1_25),
    ),
    _r(
        "capabilities_restricted",
        ("capabilities_baseline",),
        (22, c.capabilities_restricted_1_22),
        (25, c.capabilities_restricted_1_25),
    ),
    _r("procMount_restricted", ("procMount",), (35, c.proc_mount)),
    _r("restrictedVolumes", ("hostPathVolumes",), (0, c.restricted_volumes)),
    _r("runAsNonRoot", (), (0, c.run_as_non_root_1_0), (35, c.run_as_non_root_1_35)),
    _r("runAsUser", (), (23, c.run_as_user_1_23), (35, c.run_as_user_1_35)),
    _r(
        "seccompProfile_restricted",
        ("seccompProfile_baseline",),
        (19, c.seccomp_restricted_1_19),
        (25, c.seccomp_restricted_1_25),
    ),
)
#: Upstream's order: baseline IDs sorted, then restricted IDs sorted (byte order).
_ORDERED = sorted(CHECKS, key=lambda r: (r.level != BASELINE, r.id))


def _version_of(check: _Registered, minor: int) -> tuple[Check, tuple[str, ...]] | None:
    chosen = None
    for since, fn, overrides in check.versions:
        if since <= minor:
            chosen = (fn, overrides)
    return chosen


def checks_for(lv: LevelVersion, max_minor: int = EMULATED_MINOR) -> list[tuple[str, Check]]:
    """The (ID, check) pairs ``lv`` runs, in order."""
    if lv.level == PRIVILEGED:
        return []
    minor = max_minor if lv.minor is None else min(lv.minor, max_minor)
    active = [(r, _version_of(r, minor)) for r in _ORDERED]
    found = [(r, v) for r, v in active if v is not None]
    if lv.level == BASELINE:
        return [(r.id, v[0]) for r, v in found if r.level == BASELINE]
    overridden = {o for r, v in found if r.level == RESTRICTED for o in v[1]}
    return [(r.id, v[0]) for r, v in found if r.id not in overridden]


def evaluate(
    lv: LevelVersion, pod: Mapping[str, Any], max_minor: int = EMULATED_MINOR
) -> list[Violation]:
    """The violations of ``pod`` (a core/v1 Pod dict) against ``lv``; [] if it passes."""
    meta = c.as_dict(pod.get("metadata"))
    spec = c.as_dict(pod.get("spec"))
    results = (check(meta, spec) for _, check in checks_for(lv, max_minor))
    return [v for v in results if v is not None]


def forbidden_detail(violations: list[Violation]) -> str:
    """``reason (detail), reason, ...``: PSA's AggregateCheckResult.ForbiddenDetail."""
    return ", ".join(f"{v.reason} ({v.detail})" if v.detail else v.reason for v in violations)


def forbidden_reason(violations: list[Violation]) -> str:
    return ", ".join(v.reason for v in violations)


def violates(lv: LevelVersion, violations: list[Violation], would: bool = False) -> str:
    """``violates PodSecurity "baseline:latest": ...`` (``would violate`` for warn/audit)."""
    verb = "would violate" if would else "violates"
    return f'{verb} PodSecurity "{lv}": {forbidden_detail(violations)}'


# -- labels ----------------------------------------------------------------------------
def parse_level(value: str) -> tuple[str, str | None]:
    """(level, error): a bad value is ``restricted``, as PSA's ParseLevel answers."""
    if value in LEVELS:
        return value, None
    return RESTRICTED, f"must be one of {', '.join(LEVELS)}"


def parse_version(value: str) -> tuple[int | None, str | None]:
    """(minor or None for latest, error): a bad value is ``latest``."""
    if value == "latest":
        return None, None
    match = _VERSION.fullmatch(value)
    if match is None:
        return None, 'must be "latest" or "v1.x"'
    return int(match.group(1)), None


def _label_error(label: str, value: str, error: str | None) -> list[FieldError]:
    return [] if error is None else [invalid_value(f"metadata.labels[{label}]", value, error)]


def policy_from_labels(
    labels: Mapping[str, Any] | None, defaults: Policy = DEFAULT_POLICY
) -> tuple[Policy, list[FieldError]]:
    """The namespace's policy (PSA's PolicyToEvaluate) and the label errors."""
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    errors: list[FieldError] = []
    modes = {"enforce": defaults.enforce, "audit": defaults.audit, "warn": defaults.warn}
    explicit_enforce = False
    for mode in modes:
        level, minor = modes[mode].level, modes[mode].minor
        label = PREFIX + mode
        if label in labels:
            level, error = parse_level(labels[label])
            errors += _label_error(label, labels[label], error)
            if error is not None and mode != "enforce":
                level = PRIVILEGED  # fail open for audit and warn
            explicit_enforce = explicit_enforce or (mode == "enforce" and error is None)
        if label + "-version" in labels:
            minor, error = parse_version(labels[label + "-version"])
            errors += _label_error(label + "-version", labels[label + "-version"], error)
        modes[mode] = LevelVersion(level, minor)
    enforce, warn = modes["enforce"], modes["warn"]
    stricter = LEVELS.index(enforce.level) > LEVELS.index(warn.level)
    if WARN_LABEL not in labels and explicit_enforce and stricter:
        minor = warn.minor if WARN_LABEL + "-version" in labels else enforce.minor
        modes["warn"] = LevelVersion(enforce.level, minor)
    return Policy(modes["enforce"], modes["audit"], modes["warn"]), errors


# -- updates ---------------------------------------------------------------------------
#: Spec fields an update may change (validation's list) that no check reads.
_UNCHECKED_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
_CHECKED_ANNOTATIONS = (c.APPARMOR_ANNOTATION_PREFIX, c.SECCOMP_ANNOTATION_PREFIX)


def _checked_view(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the checks read, minus images: the spec without the fields no check reads,
    and the annotations some check reads."""
    spec = dict(c.as_dict(pod.get("spec")))
    for key in (*_UNCHECKED_MUTABLE, "nodeName"):
        spec.pop(key, None)
    for key in c.CONTAINER_LISTS:
        if isinstance(spec.get(key), list):
            spec[key] = [{**c.as_dict(x), "image": None} for x in spec[key]]
    notes = c.as_dict(c.as_dict(pod.get("metadata")).get("annotations"))
    checked = {
        k: v
        for k, v in notes.items()
        if str(k).startswith(_CHECKED_ANNOTATIONS) or k == c.SECCOMP_ANNOTATION_POD
    }
    return spec, checked


def _images(spec: Mapping[str, Any], key: str) -> list[Any]:
    return [c.as_dict(x).get("image") for x in c.as_list(spec.get(key))]


def is_significant_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether a pod update can change what the checks see. PSA's isSignificantPodUpdate
    compares container counts and images only, trusting validation to keep the rest of
    the spec immutable; this also counts any other change to what a check reads, so a
    looser validation cannot open a hole. Labels, status, tolerations etc. are not."""
    new_spec, old_spec = c.as_dict(new.get("spec")), c.as_dict(old.get("spec"))
    for key in c.CONTAINER_LISTS:
        if _images(new_spec, key) != _images(old_spec, key):
            return True
    return _checked_view(new) != _checked_view(old)
