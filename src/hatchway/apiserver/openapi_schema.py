"""The schemas of the served kinds, as OpenAPI v2 definitions, and unknown-field checks.

One description serves three readers: kubectl <= 1.28 (``/openapi/v2``: it validates
manifests with it and takes strategic-merge patch keys from it), the server's own
``fieldValidation`` (Strict rejects, Warn warns about fields no schema names), and
:mod:`.apply` (merge keys of lists).

What a user writes is modelled field by field (object metadata, the pod spec and its
containers, RBAC objects, reviews); deep structures that Hatchway stores but does not
interpret (probes, affinity, resources, security contexts, every ``status``) are
"arbitrary" (an empty schema): any value passes and no field inside is reported unknown.
"""

from __future__ import annotations

import functools
from typing import Any

from hatchway.api import resources

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
CORE = "io.k8s.api.core.v1."
RBAC = "io.k8s.api.rbac.v1."
AUTHZ = "io.k8s.api.authorization.v1."
AUTHN = "io.k8s.api.authentication.v1."

ANY: dict[str, Any] = {}
STRING = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer", "format": "int64"}
INT32 = {"type": "integer", "format": "int32"}
STRINGS = {"type": "array", "items": STRING}
STRING_MAP = {"type": "object", "additionalProperties": STRING}


def gvk_of(res: resources.Resource) -> dict[str, str]:
    """The ``x-kubernetes-group-version-kind`` value of one operation on ``res``."""
    return {"group": res.group, "version": res.version, "kind": res.kind}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def array(items: dict[str, Any], key: str = "", strategy: str = "") -> dict[str, Any]:
    """A list; with ``key`` a strategic-merge list merged by that key."""
    out: dict[str, Any] = {"type": "array", "items": items}
    if key:
        out["x-kubernetes-patch-merge-key"] = key
        out["x-kubernetes-patch-strategy"] = strategy or "merge"
    return out


def kind(
    props: dict[str, Any], required: tuple[str, ...] = (), gvk: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if gvk is not None:
        group, version, kind_name = gvk
        out["x-kubernetes-group-version-kind"] = [
            {"group": group, "kind": kind_name, "version": version}
        ]
    return out


def top(
    group: str, version: str, kind_name: str, props: dict[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A top-level kind: apiVersion, kind, metadata and ``props``."""
    base = {"apiVersion": STRING, "kind": STRING, "metadata": ref(META + "ObjectMeta")}
    return kind({**base, **props}, required, (group, version, kind_name))


def _object_meta() -> dict[str, Any]:
    return kind(
        {
            "annotations": STRING_MAP,
            "creationTimestamp": STRING,
            "deletionGracePeriodSeconds": INT,
            "deletionTimestamp": STRING,
            "finalizers": STRINGS,
            "generateName": STRING,
            "generation": INT,
            "labels": STRING_MAP,
            "managedFields": array(ANY),
            "name": STRING,
            "namespace": STRING,
            "ownerReferences": array(ANY, "uid"),
            "resourceVersion": STRING,
            "selfLink": STRING,
            "uid": STRING,
        }
    )


_CONTAINER_ANY = (
    "envFrom lifecycle livenessProbe readinessProbe resizePolicy resources securityContext "
    "startupProbe"
).split()


def _container() -> dict[str, Any]:
    props: dict[str, Any] = {name: ANY for name in _CONTAINER_ANY}
    props.update(
        {
            "args": STRINGS,
            "command": STRINGS,
            "env": array(ref(CORE + "EnvVar"), "name"),
            "image": STRING,
            "imagePullPolicy": STRING,
            "name": STRING,
            "ports": array(ref(CORE + "ContainerPort"), "containerPort"),
            "restartPolicy": STRING,
            "stdin": BOOL,
            "stdinOnce": BOOL,
            "terminationMessagePath": STRING,
            "terminationMessagePolicy": STRING,
            "tty": BOOL,
            "volumeDevices": array(ANY, "devicePath"),
            "volumeMounts": array(ref(CORE + "VolumeMount"), "mountPath"),
            "workingDir": STRING,
        }
    )
    return kind(props, ("name",))


_POD_SPEC_ANY = "affinity dnsConfig os overhead resources securityContext".split()


def _pod_spec() -> dict[str, Any]:
    containers = ref(CORE + "Container")
    props: dict[str, Any] = {name: ANY for name in _POD_SPEC_ANY}
    props.update(
        {
            "activeDeadlineSeconds": INT,
            "automountServiceAccountToken": BOOL,
            "containers": array(containers, "name"),
            "dnsPolicy": STRING,
            "enableServiceLinks": BOOL,
            "ephemeralContainers": array(ANY, "name"),
            "hostAliases": array(ANY, "ip"),
            "hostIPC": BOOL,
            "hostNetwork": BOOL,
            "hostPID": BOOL,
            "hostUsers": BOOL,
            "hostname": STRING,
            "imagePullSecrets": array(ANY, "name"),
            "initContainers": array(containers, "name"),
            "nodeName": STRING,
            "nodeSelector": STRING_MAP,
            "preemptionPolicy": STRING,
            "priority": INT32,
            "priorityClassName": STRING,
            "readinessGates": array(ANY),
            "resourceClaims": array(ANY, "name", "merge,retainKeys"),
            "restartPolicy": STRING,
            "runtimeClassName": STRING,
            "schedulerName": STRING,
            "schedulingGates": array(ANY, "name"),
            "serviceAccount": STRING,
            "serviceAccountName": STRING,
            "setHostnameAsFQDN": BOOL,
            "shareProcessNamespace": BOOL,
            "subdomain": STRING,
            "terminationGracePeriodSeconds": INT,
            "tolerations": array(ANY),
            "topologySpreadConstraints": array(ANY, "topologyKey"),
            # A volume has one of ~30 sources; they are stored, not modelled.
            "volumes": array(ANY, "name", "merge,retainKeys"),
        }
    )
    return kind(props, ("containers",))


def _core() -> dict[str, Any]:
    return {
        CORE + "Container": _container(),
        CORE + "ContainerPort": kind(
            {
                "containerPort": INT32,
                "hostIP": STRING,
                "hostPort": INT32,
                "name": STRING,
                "protocol": STRING,
            },
            ("containerPort",),
        ),
        CORE + "EnvVar": kind({"name": STRING, "value": STRING, "valueFrom": ANY}, ("name",)),
        CORE + "VolumeMount": kind(
            {
                "mountPath": STRING,
                "mountPropagation": STRING,
                "name": STRING,
                "readOnly": BOOL,
                "recursiveReadOnly": STRING,
                "subPath": STRING,
                "subPathExpr": STRING,
            },
            ("name", "mountPath"),
        ),
        CORE + "PodSpec": _pod_spec(),
        CORE + "Pod": top("", "v1", "Pod", {"spec": ref(CORE + "PodSpec"), "status": ANY}),
        CORE + "Namespace": top("", "v1", "Namespace", {"spec": ANY, "status": ANY}),
        CORE + "Node": top("", "v1", "Node", {"spec": ANY, "status": ANY}),
        CORE + "Event": top(
            "",
            "v1",
            "Event",
            {
                "involvedObject": ANY,
                "reason": STRING,
                "message": STRING,
                "source": ANY,
                "firstTimestamp": STRING,
                "lastTimestamp": STRING,
                "count": INT,
                "type": STRING,
                "eventTime": STRING,
                "reportingComponent": STRING,
                "reportingInstance": STRING,
            },
            ("involvedObject",),
        ),
        CORE + "ServiceAccount": top(
            "",
            "v1",
            "ServiceAccount",
            {"automountServiceAccountToken": BOOL, "imagePullSecrets": ANY, "secrets": ANY},
        ),
    }


def _rbac() -> dict[str, Any]:
    rule = kind(
        {
            "apiGroups": STRINGS,
            "nonResourceURLs": STRINGS,
            "resourceNames": STRINGS,
            "resources": STRINGS,
            "verbs": STRINGS,
        },
        ("verbs",),
    )
    subject = kind(
        {"apiGroup": STRING, "kind": STRING, "name": STRING, "namespace": STRING},
        ("kind", "name"),
    )
    role_ref = kind(
        {"apiGroup": STRING, "kind": STRING, "name": STRING}, ("apiGroup", "kind", "name")
    )
    group = "rbac.authorization.k8s.io"
    rules = {"rules": array(ref(RBAC + "PolicyRule"))}
    binding = {"roleRef": ref(RBAC + "RoleRef"), "subjects": array(ref(RBAC + "Subject"))}
    return {
        RBAC + "PolicyRule": rule,
        RBAC + "Subject": subject,
        RBAC + "RoleRef": role_ref,
        RBAC + "Role": top(group, "v1", "Role", rules),
        RBAC + "ClusterRole": top(group, "v1", "ClusterRole", {**rules, "aggregationRule": ANY}),
        RBAC + "RoleBinding": top(group, "v1", "RoleBinding", binding, ("roleRef",)),
        RBAC + "ClusterRoleBinding": top(group, "v1", "ClusterRoleBinding", binding, ("roleRef",)),
    }


def _reviews() -> dict[str, Any]:
    authz = "authorization.k8s.io"
    review = {"spec": ANY, "status": ANY}
    return {
        AUTHZ + "SelfSubjectAccessReview": top(authz, "v1", "SelfSubjectAccessReview", review),
        AUTHZ + "SubjectAccessReview": top(authz, "v1", "SubjectAccessReview", review),
        AUTHZ + "SelfSubjectRulesReview": top(authz, "v1", "SelfSubjectRulesReview", review),
        AUTHN + "SelfSubjectReview": top(
            "authentication.k8s.io", "v1", "SelfSubjectReview", {"status": ANY}
        ),
    }


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every definition, by its Kubernetes name (``io.k8s.api.core.v1.Pod``)."""
    return {
        META + "ObjectMeta": _object_meta(),
        **_core(),
        **_rbac(),
        **_reviews(),
    }


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            out[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return out


def definition_for(group: str, version: str, kind_name: str) -> str | None:
    """The definition name of a kind, or None."""
    return _by_gvk().get((group, version, kind_name))


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def subschema(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of field ``key`` of an object schema (None: not modelled or unknown)."""
    props = _resolve(schema).get("properties")
    return props.get(key) if props is not None else None


def unknown_fields(obj: Any, definition: str, *, prune: bool = False) -> list[str]:
    """Paths of the fields of ``obj`` that ``definition`` does not name, in Kubernetes'
    spelling (``spec.containers[0].foo``); with ``prune`` they are removed from ``obj``
    (as Kubernetes drops what it cannot decode)."""
    out: list[str] = []
    _walk(obj, ref(definition), "", out, prune)
    return out


def _walk(value: Any, schema: dict[str, Any], path: str, out: list[str], prune: bool) -> None:
    schema = _resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None:
            for key in list(value):
                here = f"{path}.{key}" if path else str(key)
                if key in props:
                    _walk(value[key], props[key], here, out, prune)
                else:
                    out.append(here)
                    if prune:
                        del value[key]
        elif isinstance(extra, dict):
            for key, item in value.items():
                _walk(item, extra, f"{path}.{key}" if path else str(key), out, prune)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{i}]", out, prune)
