"""``get``, ``create -f``, ``apply -f`` and ``delete``, with kubectl's output."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from hatchway.cli import commands, printers
from hatchway.cli.commands import UsageError, out, warn
from hatchway.cli.manifests import (
    Manifest,
    ResourceType,
    load_manifests,
    object_namespace,
    resource_type,
)
from hatchway.client.api import resource_path
from hatchway.errors import ApiError, ConfigError

GET_EXAMPLES = """\
examples:
  hatchway get pods                  # the pods of the current namespace
  hatchway get po -A -o wide         # every pod, with node and IP
  hatchway get pod/demo -o yaml
  hatchway get pods -l app=web -o name
  hatchway get pods -o jsonpath='{.items[*].metadata.name}'
  hatchway get nodes,namespaces
  hatchway get sa,ev                 # service accounts and events
  hatchway get leases -n kube-node-lease
"""


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class Target:
    """What a command line names: a type, and a name or None for a listing."""

    type: ResourceType
    name: str | None


def parse_targets(words: list[str], prog: str) -> tuple[list[Target], bool]:
    """``TYPE[,TYPE…] [NAME…]`` or ``TYPE/NAME…``; also whether to show kinds (more
    than one type)."""
    if not words:
        raise UsageError("you must specify the type of resource", prog)
    if any("/" in w for w in words):
        targets = []
        for word in words:
            kind, _, name = word.partition("/")
            if not name or not kind:
                raise UsageError(
                    "there is no need to specify a resource type as a separate argument "
                    "when passing arguments in resource/name form",
                    prog,
                )
            targets.append(Target(resource_type(kind), name))
    else:
        types = [resource_type(w) for w in words[0].split(",") if w]
        names = words[1:]
        if names and len(types) > 1:
            raise UsageError("a name may be given for one resource type only", prog)
        targets = [Target(t, n) for t in types for n in (names or [None])]
    return targets, len({t.type for t in targets}) > 1


def _path(t: ResourceType, namespace: str | None, name: str | None = None) -> str:
    return resource_path(t.resource, namespace if t.namespaced else None, name)


def server_error(exc: ApiError, context: str = "") -> str:
    """``Error from server (Reason): [context: ]message`` as kubectl words it."""
    reason = f" ({exc.reason})" if exc.reason else ""
    return f"Error from server{reason}: {context}{exc.message}"


# ----------------------------------------------------------------------------- get


def get_main(argv: list[str]) -> int:
    p = commands.parser("get", "Display one or many resources.", epilog=GET_EXAMPLES)
    p.add_argument("words", nargs="*", metavar="TYPE[/NAME] [NAME...]")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", help="label selector (a=b,c!=d,e in (f,g))")
    p.add_argument("-o", "--output", help="wide, json, yaml, name, jsonpath=TEMPLATE")
    p.add_argument("--ignore-not-found", action="store_true")
    p.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    args = p.parse_args(argv)
    printers.check_format(args.output)
    targets, with_kind = parse_targets(args.words, p.prog)
    return commands.run(_get(args, targets, with_kind))


async def _get(args: argparse.Namespace, targets: list[Target], with_kind: bool) -> int:
    client, namespace = commands.connect(args)
    ns = None if args.all_namespaces else namespace
    params = {"labelSelector": args.selector} if args.selector else None
    human = args.output in (None, "wide")
    failed = False
    sections: dict[ResourceType, printers.Section] = {}
    objects: list[tuple[ResourceType, dict[str, Any]]] = []
    for target in targets:
        path = _path(target.type, ns, target.name)
        headers = {"accept": printers.TABLE_ACCEPT} if human else None
        try:
            answer = await client.rest.request("GET", path, params=params, headers=headers)
        except ApiError as exc:
            if not (exc.code == 404 and args.ignore_not_found):
                warn(server_error(exc))
                failed = True
            continue
        if human:
            sections.setdefault(target.type, printers.Section(target.type)).add_table(answer)
        elif target.name:
            objects.append((target.type, answer))
        else:
            objects.extend((target.type, item) for item in answer.get("items") or [])
    if human:
        _print_tables(args, targets, list(sections.values()), with_kind, namespace, failed)
    else:
        single = all(t.name for t in targets) and len(targets) == 1
        out(printers.format_objects(objects, args.output, single))
    return 1 if failed else 0


def _print_tables(
    args: argparse.Namespace,
    targets: list[Target],
    sections: list[printers.Section],
    with_kind: bool,
    namespace: str,
    failed: bool,
) -> None:
    texts = []
    with_namespace = args.all_namespaces and any(t.type.namespaced for t in targets)
    for section in sections:
        if section.rows:
            texts.append(
                printers.format_table(
                    section,
                    wide=args.output == "wide",
                    with_namespace=with_namespace,
                    with_kind=with_kind,
                    labels=args.show_labels,
                )
            )
    if texts:
        out("\n".join(texts))
    elif not failed and not any(t.name for t in targets):
        namespaced = any(t.type.namespaced for t in targets) and not args.all_namespaces
        where = f" in {namespace} namespace" if namespaced else ""
        warn(f"No resources found{where}.")


# ------------------------------------------------------------------ create, apply


def _file_parser(name: str, description: str) -> argparse.ArgumentParser:
    p = commands.parser(name, description)
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="manifest file, directory or '-' for stdin (YAML or JSON; repeatable)",
    )
    p.add_argument("-o", "--output", choices=["name"], help="print only TYPE/NAME")
    return p


def create_main(argv: list[str]) -> int:
    p = _file_parser("create", "Create resources from files or stdin.")
    args = p.parse_args(argv)
    return commands.run(_each_manifest(args, _create_one))


def apply_main(argv: list[str]) -> int:
    p = _file_parser(
        "apply",
        "Create resources, or update the existing ones with a JSON merge patch of the file's "
        "fields (client-side, no server-side apply).",
    )
    args = p.parse_args(argv)
    return commands.run(_each_manifest(args, _apply_one))


async def _each_manifest(args: argparse.Namespace, action: Any) -> int:
    manifests = load_manifests(args.filename)
    client, namespace = commands.connect(args)
    failed = False
    for m in manifests:
        ns = object_namespace(m, args.namespace, namespace)
        try:
            name, verb = await action(client, m, ns)
        except ApiError as exc:
            what = "creating" if action is _create_one else "applying"
            warn(server_error(exc, f'error when {what} "{m.source}": '))
            failed = True
            continue
        out(f"{m.type.qualified}/{name}" + ("\n" if args.output else f" {verb}\n"))
    return 1 if failed else 0


def _created_name(created: Any, m: Manifest) -> str:
    meta = created.get("metadata") if isinstance(created, dict) else None
    return str((meta or {}).get("name") or m.name)


async def _create_one(client: Any, m: Manifest, ns: str | None) -> tuple[str, str]:
    created = await client.rest.create(_path(m.type, ns), m.obj)
    return _created_name(created, m), "created"


async def _apply_one(client: Any, m: Manifest, ns: str | None) -> tuple[str, str]:
    if not m.name:
        raise ConfigError(f'error when applying "{m.source}": resource name may not be empty')
    m = Manifest(with_last_applied(m.obj), m.source, m.type)
    path = _path(m.type, ns, m.name)
    try:
        existing = await client.rest.get(path)
    except ApiError as exc:
        if exc.code != 404:
            raise
        return await _create_one(client, m, ns)
    patch = changes(m.obj, existing)
    if not patch:
        return m.name, "unchanged"
    await client.rest.patch(path, patch, "application/strategic-merge-patch+json")
    return m.name, "configured"


def with_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with kubectl's last-applied-configuration annotation, so that a later
    ``kubectl apply`` finds what was applied."""
    import json

    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    bare = {
        **obj,
        "metadata": {**meta, "annotations": annotations}
        if annotations
        else {k: v for k, v in meta.items() if k != "annotations"},
    }
    annotations[LAST_APPLIED] = json.dumps(bare, sort_keys=True, separators=(",", ":")) + "\n"
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def covered(want: Any, have: Any) -> bool:
    """Whether ``have`` already holds everything ``want`` says (fields the server
    defaulted or added do not count as differences)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(covered(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(covered(w, h) for w, h in zip(want, have, strict=True))
        )
    return bool(want == have)


def changes(want: dict[str, Any], have: dict[str, Any]) -> dict[str, Any]:
    """The strategic merge patch that brings ``have`` to what ``want`` says: only the
    fields that differ (lists whole; the server merges keyed lists such as containers
    by name, so defaulted fields stay)."""
    patch: dict[str, Any] = {}
    for key, value in want.items():
        current = have.get(key)
        if covered(value, current):
            continue
        if isinstance(value, dict) and isinstance(current, dict):
            patch[key] = changes(value, current)
        else:
            patch[key] = value
    return patch


# -------------------------------------------------------------------------- delete


def _bool(value: str) -> bool:
    if value.lower() in {"1", "t", "true", "yes"}:
        return True
    if value.lower() in {"0", "f", "false", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {value!r}")


def delete_main(argv: list[str]) -> int:
    p = commands.parser("delete", "Delete resources by name, by label or from files.")
    p.add_argument("words", nargs="*", metavar="TYPE[/NAME] [NAME...]")
    p.add_argument("-f", "--filename", action="append", help="manifest file, directory or '-'")
    p.add_argument("-l", "--selector", help="delete what this label selector matches")
    p.add_argument("--all", action="store_true", help="delete every object of the type")
    p.add_argument("--grace-period", type=int, default=-1, help="seconds (-1: the object's)")
    p.add_argument("--now", action="store_true", help="delete at once (grace period 1)")
    p.add_argument("--force", action="store_true", help="with --grace-period=0: no waiting")
    p.add_argument(
        "--wait",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        help="wait until the objects are gone (default true; --wait=false)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    p.add_argument("--ignore-not-found", action="store_true")
    args = p.parse_args(argv)
    if args.filename and args.words:
        raise UsageError("a resource cannot be given together with -f", p.prog)
    if not args.filename and not args.words:
        raise UsageError("you must provide one or more resources by argument or filename", p.prog)
    return commands.run(_delete(args, p.prog))


async def _delete_targets(
    args: argparse.Namespace, prog: str, client: Any, namespace: str
) -> list[tuple[ResourceType, str | None, str]]:
    if args.filename:
        found = []
        for m in load_manifests(args.filename):
            found.append((m.type, object_namespace(m, args.namespace, namespace), m.name))
        return found
    targets, _ = parse_targets(args.words, prog)
    named = [(t.type, namespace, t.name) for t in targets if t.name]
    for t in (t for t in targets if not t.name):
        if not (args.selector or args.all):
            raise UsageError("resource(s) were provided, but no name was specified", prog)
        params = {"labelSelector": args.selector} if args.selector else None
        listing = await client.rest.get(_path(t.type, namespace), params)
        for item in listing.get("items") or []:
            named.append((t.type, namespace, item["metadata"]["name"]))
    return named


async def _delete(args: argparse.Namespace, prog: str) -> int:
    client, namespace = commands.connect(args)
    targets = await _delete_targets(args, prog, client, namespace)
    grace = 1 if args.now else args.grace_period
    params = {"gracePeriodSeconds": str(grace)} if grace >= 0 else None
    if args.force and grace == 0:
        warn(
            "Warning: Immediate deletion does not wait for confirmation that the running "
            "resource has been terminated. The resource may continue to run on the cluster "
            "indefinitely."
        )
    failed, gone = False, []
    if not targets and not args.filename:
        warn("No resources found")
    for rtype, ns, name in targets:
        path = _path(rtype, ns, name)
        try:
            deleted = await client.rest.delete(path, params)
        except ApiError as exc:
            if not (exc.code == 404 and args.ignore_not_found):
                warn(server_error(exc))
                failed = True
            continue
        out(f'{rtype.qualified} "{name}" deleted\n')
        uid = ((deleted or {}).get("metadata") or {}).get("uid")
        gone.append((path, uid))
    if args.wait and gone:
        failed |= not await _wait_gone(client, gone, args.timeout)
    return 1 if failed else 0


async def _wait_gone(client: Any, objects: list[tuple[str, str | None]], timeout: float) -> bool:
    """Poll until every object is gone (or replaced by one with another uid)."""
    deadline = time.monotonic() + timeout
    pending = list(objects)
    while pending:
        still = []
        for path, uid in pending:
            try:
                obj = await client.rest.get(path)
            except ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            if uid and (obj.get("metadata") or {}).get("uid") != uid:
                continue
            still.append((path, uid))
        pending = still
        if pending and time.monotonic() > deadline:
            warn(f"error: timed out waiting for the deletion of {pending[0][0]}")
            return False
        if pending:
            await asyncio.sleep(0.2)
    return True
