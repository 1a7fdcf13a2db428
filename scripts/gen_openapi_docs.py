"""Regenerate src/hatchway/apiserver/openapi_defs.py from Kubernetes' published schemas.

Kubernetes publishes its API's OpenAPI definitions (``api/openapi-spec``); the PyPI
package ``kubernetes-validate`` ships them per release as JSON Schema
(``kubernetes_validate/kubernetes-json-schema/v1.NN.0-local/_definitions.json``), with
the descriptions of the Go types' doc comments, ``required``, formats, enums and the
``x-kubernetes-*`` extensions (patch merge keys, list types, group-version-kind). This
script keeps the definitions reachable from the kinds Hatchway serves, turns them back
into OpenAPI form (``"type": ["string", "null"]`` is ``"type": "string"``; int-or-string
and quantity get Kubernetes' own shapes; refs point at ``#/definitions/``) and writes
them as a Python module:

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    unzip -o -d /tmp/kv /tmp/kv/kubernetes_validate-*.whl '*/v1.32.0-local/_definitions.json'
    python scripts/gen_openapi_docs.py \
        /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json \
        > src/hatchway/apiserver/openapi_defs.py
    ruff format src/hatchway/apiserver/openapi_defs.py

The checked-in module was made from kubernetes-validate 1.37.0's v1.32.0 schemas
(the server says it is 1.32).
"""

from __future__ import annotations

import json
import pprint
import sys
from typing import Any

CORE = "io.k8s.api.core.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."

#: The kinds served and their lists, plus what every group version answers with.
ROOTS = [
    *(CORE + k for k in ("Pod", "Namespace", "Node", "Event", "ServiceAccount")),
    *(CORE + k + "List" for k in ("Pod", "Namespace", "Node", "Event", "ServiceAccount")),
    *(
        "io.k8s.api.rbac.v1." + k + suffix
        for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
        for suffix in ("", "List")
    ),
    *(
        "io.k8s.api.authorization.v1." + k
        for k in ("SubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview")
    ),
    "io.k8s.api.authentication.v1.TokenRequest",
    "io.k8s.api.authentication.v1.SelfSubjectReview",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.events.v1.EventList",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.coordination.v1.LeaseList",
    META + "Status",
    META + "DeleteOptions",
]

#: The JSON Schema form writes these two as ``oneOf``; Kubernetes' OpenAPI as a string
#: with a format (apimachinery ``intstr.IntOrString.OpenAPISchemaFormat``) and a
#: plain string (``resource.Quantity``).
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "IntOrString is a type that can hold an int32 or a string.  When used"
        " in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner"
        " type.  This allows you to have, for example, a JSON field that can accept a name"
        " or number.",
        "format": "int-or-string",
        "type": "string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "Quantity is a fixed-point representation of a number. It provides"
        " convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and"
        " AsInt64() accessors.\n\nThe serialization format is:\n\n``` <quantity>        ::="
        " <signedNumber><suffix>\n```\n\nExamples: 100m (0.1), 1Gi, 1.5, 2e3.",
        "type": "string",
    },
}


def _clean(value: Any, *, top_level_kind: bool = False) -> Any:
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "$ref":
            out[key] = "#/definitions/" + item.rsplit("/", 1)[1]
        elif key == "type" and isinstance(item, list):
            kinds = [t for t in item if t != "null"]
            out[key] = kinds[0]
        elif key == "properties":
            props = {}
            for name, prop in item.items():
                prop = _clean(prop)
                # The JSON Schema form pins apiVersion/kind of a kind with an enum; the
                # OpenAPI has none (a list of one kind may hold any).
                if top_level_kind and name in ("apiVersion", "kind"):
                    prop.pop("enum", None)
                props[name] = prop
            out[key] = props
        else:
            out[key] = _clean(item)
    return out


def reachable(defs: dict[str, Any]) -> list[str]:
    seen: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            target = value.get("$ref")
            if isinstance(target, str):
                add(target.rsplit("/", 1)[1])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    def add(name: str) -> None:
        if name not in seen:
            seen.add(name)
            walk(defs[name])

    for root in ROOTS:
        add(root)
    return sorted(seen)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        source = json.load(f)
    defs = source.get("$defs") or source.get("definitions") or {}
    out: dict[str, Any] = {}
    for name in reachable(defs):
        if name in SPECIAL:
            out[name] = SPECIAL[name]
            continue
        schema = defs[name]
        out[name] = _clean(schema, top_level_kind="x-kubernetes-group-version-kind" in schema)
    print('"""Kubernetes 1.32 OpenAPI definitions of the kinds Hatchway serves.')
    print()
    print("Generated by scripts/gen_openapi_docs.py from Kubernetes' published schemas;")
    print("regenerate rather than edit.")
    print('"""')
    print("# ruff: noqa: E501")
    print()
    print("from __future__ import annotations")
    print()
    print("from typing import Any")
    print()
    print("DEFINITIONS: dict[str, dict[str, Any]] = " + pprint.pformat(out, width=99))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
