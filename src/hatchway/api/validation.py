"""Validation of the objects Hatchway stores, with Kubernetes' field paths and messages.

``validate(resource, obj)`` and ``validate_update(resource, new, old)`` return the list
of :class:`~hatchway.api.status.FieldError`; ``check``/``check_update`` raise a 422
:class:`~hatchway.api.status.StatusError` built from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hatchway.api import lease, resources
from hatchway.api.names import (
    dns1123_label,
    dns1123_subdomain,
    label_value,
    path_segment_name,
    qualified_name,
)
from hatchway.api.status import (
    FieldError,
    StatusError,
    duplicate,
    forbidden_field,
    invalid,
    invalid_value,
    not_supported,
    required,
)

NameCheck = Callable[[str], list[str]]


def _metadata(obj: dict[str, Any], namespaced: bool, name_check: NameCheck) -> list[FieldError]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [required("metadata")]
    errs: list[FieldError] = []
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            errs.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        errs.append(invalid_value("metadata.name", name, "must be a string"))
    else:
        errs.extend(invalid_value("metadata.name", name, m) for m in name_check(name))
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            errs.append(required("metadata.namespace"))
        elif not isinstance(namespace, str) or dns1123_label(namespace):
            for m in dns1123_label(str(namespace)):
                errs.append(invalid_value("metadata.namespace", namespace, m))
    elif namespace:
        errs.append(forbidden_field("metadata.namespace", "not allowed on this type"))
    errs.extend(_labels(meta.get("labels"), "metadata.labels"))
    errs.extend(_annotations(meta.get("annotations"), "metadata.annotations"))
    return errs


def _labels(labels: Any, path: str) -> list[FieldError]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [invalid_value(path, labels, "must be a map of string keys to string values")]
    errs = []
    for key, value in labels.items():
        errs.extend(invalid_value(path, key, m) for m in qualified_name(key))
        if not isinstance(value, str):
            errs.append(invalid_value(path, value, "must be a string"))
        else:
            errs.extend(invalid_value(path, value, m) for m in label_value(value))
    return errs


def _annotations(annotations: Any, path: str) -> list[FieldError]:
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return [invalid_value(path, annotations, "must be a map of string keys to string values")]
    errs = []
    for key, value in annotations.items():
        errs.extend(invalid_value(path, key, m.lower()) for m in qualified_name(key))
        if not isinstance(value, str):
            errs.append(invalid_value(f"{path}[{key}]", value, "must be a string"))
    return errs


# -- pods -------------------------------------------------------------------------------

_RESTART = ["Always", "Never", "OnFailure"]
_PULL = ["Always", "IfNotPresent", "Never"]
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_DNS = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]


def _container(c: Any, path: str) -> list[FieldError]:
    if not isinstance(c, dict):
        return [invalid_value(path, c, "must be an object")]
    errs: list[FieldError] = []
    name = c.get("name")
    if not name:
        errs.append(required(f"{path}.name"))
    elif not isinstance(name, str):
        errs.append(invalid_value(f"{path}.name", name, "must be a string"))
    else:
        errs.extend(invalid_value(f"{path}.name", name, m) for m in dns1123_label(name))
    image = c.get("image")
    if not isinstance(image, str) or not image.strip():
        errs.append(required(f"{path}.image"))
    elif image != image.strip():
        errs.append(
            invalid_value(f"{path}.image", image, "must not have leading or trailing whitespace")
        )
    policy = c.get("imagePullPolicy")
    if policy is not None and policy not in _PULL:
        errs.append(not_supported(f"{path}.imagePullPolicy", policy, _PULL))
    for key in ("command", "args"):
        value = c.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            errs.append(invalid_value(f"{path}.{key}", value, "must be a list of strings"))
    errs.extend(_ports(c.get("ports"), f"{path}.ports"))
    errs.extend(_env(c.get("env"), f"{path}.env"))
    return errs


def _ports(ports: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, port in enumerate(ports or []):
        here = f"{path}[{i}]"
        if not isinstance(port, dict):
            errs.append(invalid_value(here, port, "must be an object"))
            continue
        number = port.get("containerPort")
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            errs.append(
                invalid_value(
                    f"{here}.containerPort", number, "must be between 1 and 65535, inclusive"
                )
            )
        proto = port.get("protocol", "TCP")
        if proto not in _PROTOCOLS:
            errs.append(not_supported(f"{here}.protocol", proto, _PROTOCOLS))
        name = port.get("name")
        if name:
            if name in seen:
                errs.append(duplicate(f"{here}.name", name))
            seen.add(name)
    return errs


def _env(env: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, var in enumerate(env or []):
        if not isinstance(var, dict) or not var.get("name"):
            errs.append(required(f"{path}[{i}].name"))
    return errs


def _containers(spec: dict[str, Any], key: str, seen: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    containers = spec.get(key) or []
    if not isinstance(containers, list):
        return [invalid_value(f"spec.{key}", containers, "must be a list")]
    for i, c in enumerate(containers):
        path = f"spec.{key}[{i}]"
        errs.extend(_container(c, path))
        name = c.get("name") if isinstance(c, dict) else None
        if name:
            if name in seen:
                errs.append(duplicate(f"{path}.name", name))
            seen.add(name)
    return errs


def _pod_spec(spec: Any) -> list[FieldError]:
    if not isinstance(spec, dict):
        return [required("spec")]
    errs: list[FieldError] = []
    if not spec.get("containers"):
        errs.append(required("spec.containers"))
    seen: set[str] = set()
    for key in ("initContainers", "containers", "ephemeralContainers"):
        errs.extend(_containers(spec, key, seen))
    restart = spec.get("restartPolicy")
    if restart is not None and restart not in _RESTART:
        errs.append(not_supported("spec.restartPolicy", restart, _RESTART))
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in _DNS:
        errs.append(not_supported("spec.dnsPolicy", dns, _DNS))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        errs.append(
            invalid_value("spec.terminationGracePeriodSeconds", grace, "must be an integer")
        )
    node = spec.get("nodeName")
    if node:
        errs.extend(invalid_value("spec.nodeName", node, m) for m in dns1123_subdomain(str(node)))
    errs.extend(_volumes(spec.get("volumes")))
    return errs


def _volumes(volumes: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, vol in enumerate(volumes or []):
        name = vol.get("name") if isinstance(vol, dict) else None
        if not name:
            errs.append(required(f"spec.volumes[{i}].name"))
            continue
        if not isinstance(name, str):  # the node makes a directory of it: never str() it
            errs.append(invalid_value(f"spec.volumes[{i}].name", name, "must be a string"))
            continue
        errs.extend(invalid_value(f"spec.volumes[{i}].name", name, m) for m in dns1123_label(name))
        if name in seen:
            errs.append(duplicate(f"spec.volumes[{i}].name", name))
        seen.add(name)
    return errs


def _pod(obj: dict[str, Any]) -> list[FieldError]:
    return _metadata(obj, True, dns1123_subdomain) + _pod_spec(obj.get("spec"))


def _namespace(obj: dict[str, Any]) -> list[FieldError]:
    return _metadata(obj, False, dns1123_label)


def _node(obj: dict[str, Any]) -> list[FieldError]:
    errs = _metadata(obj, False, dns1123_subdomain)
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        errs.append(invalid_value("spec", spec, "must be an object"))
    return errs


# -- RBAC -------------------------------------------------------------------------------


def _rule(rule: Any, path: str, namespaced: bool) -> list[FieldError]:
    if not isinstance(rule, dict):
        return [invalid_value(path, rule, "must be an object")]
    errs: list[FieldError] = []
    if not rule.get("verbs"):
        errs.append(required(f"{path}.verbs", "verbs must contain at least one value"))
    if rule.get("nonResourceURLs"):
        if namespaced:
            errs.append(
                invalid_value(
                    f"{path}.nonResourceURLs",
                    rule["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                )
            )
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errs.append(
                invalid_value(
                    f"{path}.nonResourceURLs",
                    rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        return errs
    if not rule.get("apiGroups"):
        errs.append(
            required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        )
    if not rule.get("resources"):
        errs.append(
            required(f"{path}.resources", "resource rules must supply at least one resource")
        )
    return errs


def _role(namespaced: bool) -> Callable[[dict[str, Any]], list[FieldError]]:
    def check(obj: dict[str, Any]) -> list[FieldError]:
        errs = _metadata(obj, namespaced, path_segment_name)
        rules = obj.get("rules") or []
        if not isinstance(rules, list):
            return [*errs, invalid_value("rules", rules, "must be a list")]
        for i, rule in enumerate(rules):
            errs.extend(_rule(rule, f"rules[{i}]", namespaced))
        return errs

    return check


_SUBJECT_KINDS = ["Group", "ServiceAccount", "User"]


def _subject(subject: Any, path: str, namespaced: bool) -> list[FieldError]:
    if not isinstance(subject, dict):
        return [invalid_value(path, subject, "must be an object")]
    errs: list[FieldError] = []
    if not subject.get("name"):
        errs.append(required(f"{path}.name"))
    kind = subject.get("kind")
    if kind not in _SUBJECT_KINDS:
        errs.append(not_supported(f"{path}.kind", kind or "", _SUBJECT_KINDS))
    elif kind == "ServiceAccount":
        if subject.get("apiGroup"):
            errs.append(not_supported(f"{path}.apiGroup", subject["apiGroup"], [""]))
        if not namespaced and not subject.get("namespace"):
            errs.append(required(f"{path}.namespace"))
    elif subject.get("apiGroup", resources.RBAC) != resources.RBAC:
        errs.append(not_supported(f"{path}.apiGroup", subject["apiGroup"], [resources.RBAC]))
    return errs


def _binding(namespaced: bool) -> Callable[[dict[str, Any]], list[FieldError]]:
    kinds = ["ClusterRole", "Role"] if namespaced else ["ClusterRole"]

    def check(obj: dict[str, Any]) -> list[FieldError]:
        errs = _metadata(obj, namespaced, path_segment_name)
        ref = obj.get("roleRef")
        if not isinstance(ref, dict):
            errs.append(required("roleRef"))
        else:
            if ref.get("apiGroup") != resources.RBAC:
                errs.append(
                    not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [resources.RBAC])
                )
            if ref.get("kind") not in kinds:
                errs.append(not_supported("roleRef.kind", ref.get("kind", ""), kinds))
            if not ref.get("name"):
                errs.append(required("roleRef.name"))
            else:
                for m in path_segment_name(ref["name"]):
                    errs.append(invalid_value("roleRef.name", ref["name"], m))
        for i, subject in enumerate(obj.get("subjects") or []):
            errs.extend(_subject(subject, f"subjects[{i}]", namespaced))
        return errs

    return check


# -- access reviews ---------------------------------------------------------------------


def _review_spec(spec: Any) -> list[FieldError]:
    if not isinstance(spec, dict):
        spec = {}
    has_res = spec.get("resourceAttributes") is not None
    has_non = spec.get("nonResourceAttributes") is not None
    if has_res and has_non:
        return [
            invalid_value(
                "spec.nonResourceAttributes",
                spec["nonResourceAttributes"],
                "cannot be specified in combination with resourceAttributes",
            )
        ]
    if not has_res and not has_non:
        return [
            invalid_value(
                "spec.resourceAttributes",
                None,
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        ]
    return []


def _self_review(obj: dict[str, Any]) -> list[FieldError]:
    return _review_spec(obj.get("spec"))


def _review(obj: dict[str, Any]) -> list[FieldError]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    errs = _review_spec(spec)
    if not spec.get("user") and not spec.get("groups"):
        errs.append(
            invalid_value(
                "spec.user", spec.get("user", ""), "at least one of user or group must be specified"
            )
        )
    return errs


def _event(obj: dict[str, Any]) -> list[FieldError]:
    errs = _metadata(obj, True, dns1123_subdomain)
    ref = obj.get("involvedObject")
    if not isinstance(ref, dict) or not ref.get("kind"):
        errs.append(required("involvedObject.kind"))
    elif ref.get("namespace") and ref["namespace"] != (obj.get("metadata") or {}).get("namespace"):
        errs.append(
            invalid_value(
                "involvedObject.namespace", ref["namespace"], "does not match event.namespace"
            )
        )
    if not obj.get("reason"):
        errs.append(required("reason"))
    return errs


def _service_account(obj: dict[str, Any]) -> list[FieldError]:
    return _metadata(obj, True, dns1123_subdomain)


def _lease(obj: dict[str, Any]) -> list[FieldError]:
    return _metadata(obj, True, dns1123_subdomain) + lease.validate_spec(obj.get("spec"))


_VALIDATORS: dict[str, Callable[[dict[str, Any]], list[FieldError]]] = {
    "pods": _pod,
    "namespaces": _namespace,
    "nodes": _node,
    "serviceaccounts": _service_account,
    "events": _event,
    "roles": _role(True),
    "clusterroles": _role(False),
    "rolebindings": _binding(True),
    "clusterrolebindings": _binding(False),
    "selfsubjectaccessreviews": _self_review,
    "subjectaccessreviews": _review,
    "leases": _lease,
}


def validate(resource: str, obj: dict[str, Any]) -> list[FieldError]:
    """Every problem with ``obj`` as a new object of ``resource`` (after defaulting)."""
    check = _VALIDATORS.get(resource)
    if check is None:
        return []
    errs = check(obj)
    res = resources.by_name(resource)
    if res is not None:
        errs.extend(_type_meta(obj, res))
    return errs


def _type_meta(obj: dict[str, Any], res: resources.Resource) -> list[FieldError]:
    errs = []
    kind = obj.get("kind")
    if kind not in (None, "", res.kind):
        errs.append(not_supported("kind", kind, [res.kind]))
    version = obj.get("apiVersion")
    if version not in (None, "", res.api_version):
        errs.append(not_supported("apiVersion", version, [res.api_version]))
    return errs


def _immutable_meta(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    errs = []
    new_meta, old_meta = new.get("metadata") or {}, old.get("metadata") or {}
    for key in ("name", "namespace", "uid"):
        if key in new_meta and new_meta.get(key) != old_meta.get(key):
            errs.append(invalid_value(f"metadata.{key}", new_meta.get(key), "field is immutable"))
    return errs


_POD_UPDATE_RULE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations`"
    " (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`"
    " (allow it to be set to 1 if it was previously negative)"
)


def _pod_spec_mutable_view(spec: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the fields an update may change copied from ``other``."""
    view = dict(spec)
    for key in ("containers", "initContainers"):
        mine, theirs = spec.get(key) or [], other.get(key) or []
        if mine and len(mine) == len(theirs):
            view[key] = [
                {**c, "image": o.get("image")} if isinstance(c, dict) and isinstance(o, dict) else c
                for c, o in zip(mine, theirs, strict=True)
            ]
    for key in ("activeDeadlineSeconds", "tolerations"):
        if key in other:
            view[key] = other[key]
        else:
            view.pop(key, None)
    if not spec.get("nodeName") and other.get("nodeName"):  # binding sets nodeName once
        view["nodeName"] = other["nodeName"]
    return view


def _pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if _pod_spec_mutable_view(old_spec, new_spec) != new_spec:
        return [forbidden_field("spec", _POD_UPDATE_RULE)]
    return []


def _binding_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    if new.get("roleRef") != old.get("roleRef"):
        return [invalid_value("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


_UPDATE_RULES = {
    "pods": _pod_update,
    "rolebindings": _binding_update,
    "clusterrolebindings": _binding_update,
}


def validate_update(resource: str, new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """Every problem with replacing ``old`` by ``new`` (the whole object, spec and meta)."""
    errs = validate(resource, new) + _immutable_meta(new, old)
    rule = _UPDATE_RULES.get(resource)
    if rule is not None:
        errs.extend(rule(new, old))
    return errs


def _raise(resource: str, obj: dict[str, Any], errs: list[FieldError]) -> None:
    if not errs:
        return
    res = resources.by_name(resource)
    kind = res.kind if res else resource
    group = res.group if res else ""
    name = str((obj.get("metadata") or {}).get("name") or "")
    raise StatusError(invalid(kind, name, errs, group))


def check(resource: str, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid if ``obj`` is not a valid new ``resource``."""
    _raise(resource, obj, validate(resource, obj))


def check_update(resource: str, new: dict[str, Any], old: dict[str, Any]) -> None:
    """Raise 422 Invalid if ``new`` may not replace ``old``."""
    _raise(resource, new, validate_update(resource, new, old))
