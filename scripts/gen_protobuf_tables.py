"""Regenerate src/hatchway/api/protobuf_tables.py from Kubernetes' Go API types.

The field numbers and JSON names of Kubernetes' protobuf encoding are in the struct tags
of its API types (``json:"name,omitempty" protobuf:"bytes,1,opt,name=name"``), which is
also what its ``generated.proto`` files are generated from. This script reads those tags
(only the tags: names, numbers, Go types) from a checkout of k8s.io/api and
k8s.io/apimachinery and writes our own tables: one per message reachable from the kinds
Hatchway serves.

    python scripts/gen_protobuf_tables.py API_GIT_DIR APIMACHINERY_GIT_DIR [REV] > OUT
    ruff format OUT

Each ``*_GIT_DIR`` is a git directory (``git --git-dir``); REV defaults to HEAD. The
tables are then checked against each package's ``generated.proto`` (same field numbers,
names, repeated and map fields); a mismatch stops the script. The checked-in tables were
made from k8s.io/api 10b39a39b and k8s.io/apimachinery eed236ce (field numbers never
change across Kubernetes versions; newer fields are skipped by older decoders).
"""

from __future__ import annotations

import re
import subprocess
import sys

#: package -> (which repo, path of the types file(s))
PACKAGES = {
    "core/v1": ("api", ["core/v1/types.go"]),
    "rbac/v1": ("api", ["rbac/v1/types.go"]),
    "authentication/v1": ("api", ["authentication/v1/types.go"]),
    "authorization/v1": ("api", ["authorization/v1/types.go"]),
    "events/v1": ("api", ["events/v1/types.go"]),
    "coordination/v1": ("api", ["coordination/v1/types.go"]),
    "meta/v1": ("apimachinery", ["pkg/apis/meta/v1/types.go"]),
}
#: Go import alias -> package, as the types files name them.
ALIASES = {"metav1": "meta/v1", "corev1": "core/v1", "v1": "core/v1"}
#: Types with a JSON form of their own (custom MarshalJSON) and a protobuf message of
#: their own: the codec knows each by kind.
SPECIAL = {
    "meta/v1.Time": "time",
    "meta/v1.MicroTime": "microtime",
    "meta/v1.Duration": "duration",
    "meta/v1.FieldsV1": "fieldsv1",
    "runtime.RawExtension": "raw",
    "resource.Quantity": "quantity",
    "intstr.IntOrString": "intorstr",
    "types.UID": "string",
}
#: Named slices that protobuf wraps in a message {repeated string items = 1} while JSON
#: shows a plain list.
#: Found as the named slice types that are also a message of the package's
#: generated.proto.
WRAPPED: set[str] = set()
#: The kinds served (and their lists), by package.
ROOTS = {
    "core/v1": [
        "Pod",
        "PodList",
        "Namespace",
        "NamespaceList",
        "Node",
        "NodeList",
        "ServiceAccount",
        "ServiceAccountList",
        "Event",
        "EventList",
    ],
    "rbac/v1": [
        "Role",
        "RoleList",
        "ClusterRole",
        "ClusterRoleList",
        "RoleBinding",
        "RoleBindingList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
    ],
    "authorization/v1": [
        "SelfSubjectAccessReview",
        "SubjectAccessReview",
        "LocalSubjectAccessReview",
        "SelfSubjectRulesReview",
    ],
    "authentication/v1": ["SelfSubjectReview", "TokenRequest", "TokenReview"],
    "events/v1": ["Event", "EventList"],
    "coordination/v1": ["Lease", "LeaseList"],
    "meta/v1": ["Status", "DeleteOptions"],
}

FIELD = re.compile(r"^\t(?:(\w+)\s+)?(\S+)\s+`(.*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
INTS = {"int", "int32", "int64", "uint32", "uint64", "int16", "uint16", "byte"}


def read(repo_dirs: dict[str, str], rev: str, repo: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", repo_dirs[repo], "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def parse(text: str) -> tuple[dict[str, list[tuple[str, str, dict[str, str]]]], dict[str, str]]:
    structs: dict[str, list[tuple[str, str, dict[str, str]]]] = {}
    named: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if current is None:
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                current = m.group(1)
                structs[current] = []
                continue
            m = re.match(r"^type (\w+) (\S.*?)\s*(//.*)?$", line)
            if m and not m.group(2).startswith(("struct", "interface", "(")):
                named[m.group(1)] = m.group(2)
            continue
        if line.startswith("}"):
            current = None
            continue
        m = FIELD.match(line)
        if not m:
            continue
        tags = dict(TAG.findall(m.group(3)))
        if "protobuf" in tags:
            structs[current].append((m.group(1) or "", m.group(2), tags))
    return structs, named


def main() -> None:
    repo_dirs = {"api": sys.argv[1], "apimachinery": sys.argv[2]}
    rev = sys.argv[3] if len(sys.argv) > 3 else "HEAD"
    structs: dict[str, dict[str, list[tuple[str, str, dict[str, str]]]]] = {}
    named: dict[str, dict[str, str]] = {}
    for pkg, (repo, paths) in PACKAGES.items():
        structs[pkg], named[pkg] = {}, {}
        for path in paths:
            s, n = parse(read(repo_dirs, rev, repo, path))
            structs[pkg].update(s)
            named[pkg].update(n)
            proto = read(repo_dirs, rev, repo, path.rsplit("/", 1)[0] + "/generated.proto")
            for name, under in n.items():
                if under.startswith("[]") and re.search(rf"^message {name} {{", proto, re.M):
                    WRAPPED.add(f"{pkg}.{name}")

    def qualify(pkg: str, gotype: str) -> str:
        if "." in gotype:
            alias, name = gotype.split(".", 1)
            return f"{ALIASES.get(alias, alias)}.{name}"
        return f"{pkg}.{gotype}"

    def scalar(pkg: str, gotype: str) -> tuple[str, str]:
        """(kind, message ref) of a non-slice, non-pointer Go type."""
        if gotype == "string":
            return "string", ""
        if gotype == "bool":
            return "bool", ""
        if gotype in INTS:
            return ("int32" if gotype in {"int32", "int16", "uint16", "byte"} else "int64"), ""
        if gotype in {"float64", "float32"}:
            return "double", ""
        q = qualify(pkg, gotype)
        if q in SPECIAL:
            return SPECIAL[q], ""
        qpkg, name = q.rsplit(".", 1)
        if qpkg in structs and name in structs[qpkg]:
            return "message", q
        if qpkg in named and name in named[qpkg]:
            under = named[qpkg][name]
            if under.startswith(("[]", "map[")):
                raise ValueError(f"named container {q} = {under} used as a scalar")
            return scalar(qpkg, under)
        raise ValueError(f"unknown Go type {q}")

    tables: dict[str, list[tuple[int, str, str, str, str]]] = {}
    todo = [f"{pkg}.{kind}" for pkg, kinds in ROOTS.items() for kind in kinds]
    while todo:
        msg = todo.pop()
        if msg in tables:
            continue
        pkg, name = msg.rsplit(".", 1)
        rows: list[tuple[int, str, str, str, str]] = []
        for goname, gotype, tags in structs[pkg][name]:
            if tags.get("json") == "-":
                continue
            pb = tags["protobuf"].split(",")
            number = int(pb[1])
            json_name, _, opts = tags.get("json", "").partition(",")
            flags = ""
            if "omitempty" in opts:
                flags += "o"
            if "omitzero" in opts:
                flags += "z"
            if not json_name:
                if goname:
                    raise ValueError(f"{msg}.{goname}: no JSON name")
                flags += "i"
            t = gotype
            if t.startswith("*"):
                flags += "p"
                t = t[1:]
            q = qualify(pkg, t) if not t.startswith(("[]", "map[")) else ""
            if q in WRAPPED:
                flags += "w"
                kind, ref = "string", ""
            elif t == "[]byte":
                kind, ref = "bytes", ""
            else:
                tpkg = pkg
                if q:
                    qpkg, qname = q.rsplit(".", 1)
                    under = named.get(qpkg, {}).get(qname, "")
                    if under.startswith(("[]", "map[")):
                        tpkg, t = qpkg, under
                if t.startswith("[]"):
                    flags += "r"
                    t = t[2:]
                elif t.startswith("map["):
                    flags += "m"
                    key, t = t[4:].split("]", 1)
                    if scalar(tpkg, key)[0] != "string":
                        raise ValueError(f"{msg}.{goname}: map key {key}")
                vq = qualify(tpkg, t)
                if vq in WRAPPED:
                    flags += "w"
                    kind, ref = "string", ""
                else:
                    kind, ref = scalar(tpkg, t)
            rows.append((number, json_name, kind, ref, flags))
            if ref:
                todo.append(ref)
        tables[msg] = sorted(rows)

    cross_check(repo_dirs, rev, tables)
    out = [
        '"""Field tables of Kubernetes\' protobuf messages for the kinds Hatchway serves.',
        "",
        "Generated by scripts/gen_protobuf_tables.py from the struct tags of k8s.io/api and",
        "k8s.io/apimachinery (the source of their ``generated.proto`` files); regenerate",
        "rather than edit. ``MESSAGES[name][number] = (json name, kind, message, flags)``:",
        "kind is a scalar kind, ``message`` (then ``message`` names the table) or a special",
        "type (time, microtime, duration, fieldsv1, raw, quantity, intorstr); flags:",
        "``o`` omitempty, ``z`` omitzero, ``p`` pointer, ``r`` repeated, ``m`` map with",
        "string keys (kind is the value's), ``i`` inlined in the parent's JSON, ``w`` a list",
        "of strings protobuf wraps in a message ``{repeated string items = 1}``.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "Field = tuple[str, str, str, str]",
        "",
        "MESSAGES: dict[str, dict[int, Field]] = {",
    ]
    for msg in sorted(tables):
        out.append(f"    {msg!r}: {{")
        for number, json_name, kind, ref, flags in tables[msg]:
            out.append(f"        {number}: ({json_name!r}, {kind!r}, {ref!r}, {flags!r}),")
        out.append("    },")
    out.append("}")
    out.append("")
    out.append("#: (group, kind) -> the message of an object of that kind.")
    out.append("KINDS: dict[tuple[str, str], str] = {")
    groups = {
        "core/v1": "",
        "rbac/v1": "rbac.authorization.k8s.io",
        "authorization/v1": "authorization.k8s.io",
        "authentication/v1": "authentication.k8s.io",
        "events/v1": "events.k8s.io",
        "coordination/v1": "coordination.k8s.io",
        "meta/v1": "meta.k8s.io",
    }
    for pkg, kinds in ROOTS.items():
        for kind in kinds:
            out.append(f"    ({groups[pkg]!r}, {kind!r}): {pkg + '.' + kind!r},")
    # meta/v1 kinds are also served as core v1 ones (a Status is apiVersion v1).
    for kind in ROOTS["meta/v1"]:
        out.append(f"    ('', {kind!r}): {'meta/v1.' + kind!r},")
    out.append("}")
    print("\n".join(out))


PROTO_FIELD = re.compile(
    r"^\s+(optional|repeated|required)?\s*(map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*(\d+)"
)


def cross_check(
    repo_dirs: dict[str, str], rev: str, tables: dict[str, list[tuple[int, str, str, str, str]]]
) -> None:
    """The tables against each package's generated.proto: the same field numbers per
    message, repeated and map where the proto says so, the proto name equal to the JSON
    name (case aside: the proto spells some Go names, ``uID``). Exits on a mismatch."""
    protos: dict[str, dict[str, dict[int, tuple[str, str, str]]]] = {}
    for pkg, (repo, paths) in PACKAGES.items():
        text = read(repo_dirs, rev, repo, paths[0].rsplit("/", 1)[0] + "/generated.proto")
        messages: dict[str, dict[int, tuple[str, str, str]]] = {}
        current = None
        for line in text.splitlines():
            m = re.match(r"^message (\w+) \{", line)
            if m:
                current = messages.setdefault(m.group(1), {})
            elif line.startswith("}"):
                current = None
            elif current is not None and (m := PROTO_FIELD.match(line)):
                current[int(m.group(4))] = (m.group(3), m.group(1) or "", m.group(2))
        protos[pkg] = messages
    problems = []
    for msg, rows in tables.items():
        pkg, name = msg.rsplit(".", 1)
        proto = protos[pkg].get(name)
        if proto is None:
            problems.append(f"{msg}: not in generated.proto")
            continue
        if set(proto) != {row[0] for row in rows}:
            problems.append(f"{msg}: field numbers {sorted(proto)} in generated.proto")
        for number, json_name, _kind, _ref, flags in rows:
            if number not in proto:
                continue
            pname, label, ptype = proto[number]
            if "i" not in flags and pname.lower() != json_name.lower():
                problems.append(f"{msg}.{number}: {pname} in generated.proto, {json_name} here")
            if ("r" in flags) != (label == "repeated") or ("m" in flags) != ptype.startswith(
                "map<"
            ):
                problems.append(f"{msg}.{number}: {label} {ptype} in generated.proto ({flags})")
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
