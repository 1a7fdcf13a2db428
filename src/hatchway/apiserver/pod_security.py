"""Pod Security admission: every pod create and update, and every namespace create and
update, as Kubernetes' PodSecurity admission plugin decides them.

    admission = PodSecurityAdmission(store, authorizer)
    verdict = await admission.review(user, "pods", new_pod, old_pod)   # old None on create
    await admission.admit(call, "pods", new_pod, old_pod)   # the same, results on call
    # raises AdmissionDeniedError (403) on an enforce violation; else verdict.warnings (texts
    # for ``Warning`` headers) and verdict.annotations (for the audit line)

Pods: cluster administrators (:meth:`RbacAuthorizer.is_cluster_admin`) are exempt, as
PSA's exempt usernames are; everyone else is held to the namespace's labels over
:data:`~hatchway.api.pod_security.DEFAULT_POLICY` (baseline enforced). An update is
evaluated only when it can change what the checks read (PSA skips the rest: labels,
status, deletion), so the node's status writes and a label on an old pod still work.
The status subresource never reaches here: it cannot change the spec. Enforce refuses
with 403 ``pods "x" is forbidden: violates PodSecurity "baseline:latest": ...``; audit
adds ``pod-security.kubernetes.io/audit-violations`` (and ``enforce-policy``) to the
audit line; warn answers ``Warning: 299 - "would violate PodSecurity ..."``.

Namespaces: invalid pod-security label values are refused (422, PSA's invalidResponse),
unless an update leaves the same errors in place; when an update makes the enforce
level stricter, the existing pods that would violate it come back as warnings, worded
and grouped as PSA's EvaluatePodsInNamespace does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.api import pod_security as pss
from hatchway.api import status
from hatchway.api.pod_security import LevelVersion, Policy
from hatchway.api.status import AdmissionDeniedError, StatusError
from hatchway.apiserver.app import Call
from hatchway.apiserver.authn import UserInfo
from hatchway.apiserver.rbac import RbacAuthorizer
from hatchway.store.base import Store

__all__ = ["PodSecurityAdmission", "Verdict", "enforce_level", "warning_header"]

#: PSA's namespaceMaxPodsToCheck.
MAX_PODS_TO_CHECK = 3000


@dataclass
class Verdict:
    """An admitted request's warnings (header texts) and audit annotations."""

    warnings: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


def warning_header(text: str) -> tuple[str, str]:
    """``Warning: 299 - "text"`` as the Kubernetes API server writes it (RFC 7234)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return ("Warning", f'299 - "{escaped}"')


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (obj or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str((meta or {}).get("name") or "") if isinstance(meta, Mapping) else ""


async def namespace_policy(store: Store, namespace: str) -> Policy:
    """The policy of ``namespace`` (the default policy when it has no labels or is gone)."""
    try:
        ns = await store.get("namespaces", "", namespace)
    except StatusError as exc:
        if exc.code != 404:
            raise
        ns = None
    policy, _ = pss.policy_from_labels(_labels(ns))
    return policy


async def enforce_level(store: Store, namespace: str) -> LevelVersion:
    """The enforce level a non-administrator is held to in ``namespace``."""
    return (await namespace_policy(store, namespace)).enforce


class PodSecurityAdmission:
    """The admission step :class:`~.rest_handlers.ResourceHandler` calls on every write."""

    def __init__(self, store: Store, authorizer: RbacAuthorizer) -> None:
        self.store = store
        self.authz = authorizer

    async def admit(
        self, call: Call, resource: str, new: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """:meth:`review` for ``call``'s user; its warnings and annotations go on ``call``."""
        verdict = await self.review(call.user, resource, new, old)
        call.warnings.extend(warning_header(text) for text in verdict.warnings)
        call.annotations.update(verdict.annotations)

    async def review(
        self, user: UserInfo, resource: str, new: dict[str, Any], old: dict[str, Any] | None
    ) -> Verdict:
        """Admit or raise (see module docstring); other resources pass untouched. A
        status write is an update like any other here: merge_for_update keeps the old
        spec, so it is never significant (and would be checked if it were)."""
        if resource == "pods":
            return await self._review_pod(user, new, old)
        if resource == "namespaces":
            return await self._review_namespace(new, old)
        return Verdict()

    async def _review_pod(
        self, user: UserInfo, pod: dict[str, Any], old: dict[str, Any] | None
    ) -> Verdict:
        if old is not None and not pss.is_significant_update(pod, old):
            return Verdict()
        if await self.authz.is_cluster_admin(user):
            return Verdict(annotations={"pod-security.kubernetes.io/exempt": "user"})
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        policy = await namespace_policy(self.store, namespace)
        return evaluate_pod(policy, pod)

    async def _review_namespace(self, ns: dict[str, Any], old: dict[str, Any] | None) -> Verdict:
        policy, errors = pss.policy_from_labels(_labels(ns))
        if errors:
            _, old_errors = pss.policy_from_labels(_labels(old)) if old else (None, [])
            if old is None or not old_errors or old_errors != errors:
                raise StatusError(status.invalid("Namespace", _name(ns), errors))
        if old is None:
            return Verdict()
        before, _ = pss.policy_from_labels(_labels(old))
        if not _stricter(policy.enforce, before.enforce):
            return Verdict()
        pods, _ = await self.store.list("pods", _name(ns))
        return Verdict(warnings=existing_pod_warnings(_name(ns), policy.enforce, pods))


def _stricter(new: LevelVersion, old: LevelVersion) -> bool:
    """Whether moving enforce from ``old`` to ``new`` can refuse more (PSA's test)."""
    if new == old or new.level == pss.PRIVILEGED:
        return False
    levels = pss.LEVELS
    return not (new.minor == old.minor and levels.index(new.level) <= levels.index(old.level))


def evaluate_pod(policy: Policy, pod: Mapping[str, Any]) -> Verdict:
    """PSA's EvaluatePod for one pod: raise on enforce, else warnings and annotations."""
    verdict = Verdict(annotations={pss.ENFORCED_POLICY_ANNOTATION: str(policy.enforce)})
    found = pss.evaluate(policy.enforce, pod)
    if found:
        text = pss.violates(policy.enforce, found)
        raise AdmissionDeniedError(status.forbidden_message("pods", _name(pod), text))
    audit = pss.evaluate(policy.audit, pod)
    if audit:
        text = pss.violates(policy.audit, audit, would=True)
        verdict.annotations[pss.AUDIT_VIOLATIONS_ANNOTATION] = text
    warn = pss.evaluate(policy.warn, pod)
    if warn:
        verdict.warnings.append(pss.violates(policy.warn, warn, would=True))
    return verdict


def existing_pod_warnings(
    namespace: str, enforce: LevelVersion, pods: list[dict[str, Any]]
) -> list[str]:
    """PSA's EvaluatePodsInNamespace: one warning per distinct reason list, naming the
    first pod by name and how many others share it, after a headline."""
    checked = pods[:MAX_PODS_TO_CHECK]
    counts: dict[str, tuple[str, int]] = {}
    for pod in checked:
        found = pss.evaluate(enforce, pod)
        if not found:
            continue
        reason = pss.forbidden_reason(found)
        first, count = counts.get(reason, (_name(pod), 0))
        counts[reason] = (min(first, _name(pod)), count + 1)
    warnings = []
    if len(checked) < len(pods):
        warnings.append(
            f"new PodSecurity enforce level only checked against the first {len(checked)}"
            f" of {len(pods)} existing pods"
        )
    if counts:
        warnings.append(
            f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce'
            f' level "{enforce}"'
        )
    return warnings + sorted(_decorated(reason, *counts[reason]) for reason in counts)


def _decorated(reason: str, first: str, count: int) -> str:
    if count == 1:
        return f"{first}: {reason}"
    if count == 2:
        return f"{first} (and 1 other pod): {reason}"
    return f"{first} (and {count - 1} other pods): {reason}"
