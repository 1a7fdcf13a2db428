"""``auth can-i``, ``config view|use-context|current-context|get-contexts``,
``image import|list`` and ``kubeconfig user``."""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Any

from hatchway.cli import commands
from hatchway.cli.commands import UsageError, out, warn
from hatchway.cli.manifests import UnknownResourceError, resource_type
from hatchway.errors import ConfigError

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


# ------------------------------------------------------------------------ auth can-i


def auth_main(argv: list[str]) -> int:
    p = commands.parser("auth", "Inspect authorisation.", client=False)
    subs = commands.subcommands(p)
    can = subs.add_parser(
        "can-i",
        prog="hatchway auth can-i",
        help="check whether an action is allowed (exit 0: yes, 1: no)",
        description="Check whether an action is allowed: prints yes or no, exit 0 or 1.",
    )
    commands.add_client_flags(can)
    can.add_argument("verb", metavar="VERB")
    can.add_argument("resource", metavar="RESOURCE[/SUBRESOURCE] | /NON-RESOURCE-URL")
    can.add_argument("name", nargs="?", default="", metavar="NAME")
    can.add_argument("-A", "--all-namespaces", action="store_true")
    can.add_argument("--subresource", default="")
    can.add_argument("-q", "--quiet", action="store_true", help="only the exit status")
    args = p.parse_args(argv)
    return commands.run(_can_i(args))


def access_review_spec(args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    if args.resource.startswith("/"):
        return {"nonResourceAttributes": {"path": args.resource, "verb": args.verb}}
    word, _, sub = args.resource.partition("/")
    sub = args.subresource or sub
    group = ""
    try:
        rtype = resource_type(word)
        resource, group = rtype.resource, rtype.group
    except UnknownResourceError:
        resource, _, group = word.partition(".")
        if word != "*":
            warn(f"Warning: the server doesn't have a resource type '{word}'")
    attributes = {
        "namespace": "" if args.all_namespaces else namespace,
        "verb": args.verb,
        "group": group,
        "resource": resource,
        "subresource": sub,
        "name": args.name,
    }
    return {"resourceAttributes": {k: v for k, v in attributes.items() if v}}


async def _can_i(args: argparse.Namespace) -> int:
    client, namespace = commands.connect(args)
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": access_review_spec(args, namespace),
    }
    answer = await client.rest.create(SSAR_PATH, review)
    status = answer.get("status") or {}
    allowed = bool(status.get("allowed"))
    if status.get("evaluationError"):
        warn(f"Warning: {status['evaluationError']}")
    if not args.quiet:
        reason = "" if allowed or not status.get("reason") else f" - {status['reason']}"
        out(("yes" if allowed else "no") + reason + "\n")
    return 0 if allowed else 1


# -------------------------------------------------------------------------- config


def config_main(argv: list[str]) -> int:
    p = commands.parser("config", "Show or change kubeconfig settings.", client=False)
    subs = commands.subcommands(p)
    view = subs.add_parser("view", prog="hatchway config view", help="print the kubeconfig")
    view.add_argument("--minify", action="store_true", help="only the current context")
    view.add_argument("--raw", action="store_true", help="show certificates, keys, tokens")
    view.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    use = subs.add_parser(
        "use-context", prog="hatchway config use-context", help="set the current context"
    )
    use.add_argument("context_name", metavar="NAME")
    subs.add_parser(
        "current-context", prog="hatchway config current-context", help="print the current context"
    )
    contexts = subs.add_parser(
        "get-contexts", prog="hatchway config get-contexts", help="list the contexts"
    )
    contexts.add_argument("names", nargs="*", metavar="NAME")
    contexts.add_argument("-o", "--output", choices=["name"])
    for sub in (view, use, subs.choices["current-context"], contexts):
        sub.add_argument("--kubeconfig", help="path to the kubeconfig file to use")
        sub.add_argument("--context", help="the context to act on (view --minify)")
    args = p.parse_args(argv)
    return int(CONFIG_ACTIONS[args.sub](args))


def _config_view(args: argparse.Namespace) -> int:
    import json

    from hatchway.client.kubeconfig import config_view, dump_document

    doc = config_view(args.kubeconfig, minify=args.minify, raw=args.raw, context=args.context)
    out(json.dumps(doc, indent=4) + "\n" if args.output == "json" else dump_document(doc))
    return 0


def _use_context(args: argparse.Namespace) -> int:
    from hatchway.client.kubeconfig import use_context

    use_context(args.kubeconfig, args.context_name)
    out(f'Switched to context "{args.context_name}".\n')
    return 0


def _merged(args: argparse.Namespace) -> Any:
    from hatchway.client.kubeconfig import load_merged

    return load_merged(args.kubeconfig, allow_missing=True)


def _current_context(args: argparse.Namespace) -> int:
    current = _merged(args).current_context
    if not current:
        raise ConfigError("current-context is not set")
    out(f"{current}\n")
    return 0


def _get_contexts(args: argparse.Namespace) -> int:
    from hatchway.cli.printers import align

    merged = _merged(args)
    names = args.names or sorted(merged.contexts)
    missing = [n for n in names if n not in merged.contexts]
    if missing:
        raise ConfigError(f"context {missing[0]} not found")
    if args.output == "name":
        out("".join(f"{n}\n" for n in names))
        return 0
    rows = [["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]]
    for name in names:
        ctx = merged.contexts[name]
        rows.append(
            [
                "*" if name == merged.current_context else "",
                name,
                str(ctx.get("cluster") or ""),
                str(ctx.get("user") or ""),
                str(ctx.get("namespace") or ""),
            ]
        )
    out(align(rows))
    return 0


CONFIG_ACTIONS = {
    "view": _config_view,
    "use-context": _use_context,
    "current-context": _current_context,
    "get-contexts": _get_contexts,
}


# --------------------------------------------------------------------------- image


def _data_dir_flag(p: argparse.ArgumentParser) -> None:
    from hatchway.cli.up import default_data_dir

    p.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=default_data_dir(),
        help="the cluster's data directory (default %(default)s; HATCHWAY_DATA_DIR)",
    )


def image_main(argv: list[str]) -> int:
    p = commands.parser(
        "image",
        "Manage the images of the node on this machine (there is no registry pull).",
        client=False,
    )
    subs = commands.subcommands(p)
    imp = subs.add_parser(
        "import", prog="hatchway image import", help="import an OCI layout or 'docker save' tarball"
    )
    imp.add_argument("name", metavar="NAME", help="image name, e.g. alpine:3.20")
    imp.add_argument("archive", metavar="ARCHIVE", help="tarball (docker save or OCI layout)")
    listing = subs.add_parser("list", prog="hatchway image list", help="list the images")
    for sub in (imp, listing):
        _data_dir_flag(sub)
    args = p.parse_args(argv)
    from hatchway.node.runtime_image import ImageStore

    store = ImageStore(str(args.data_dir / "node"))
    if args.sub == "list":
        out("".join(f"{name}\n" for name in store.list()))
        return 0
    if not os.path.isfile(args.archive):
        raise ConfigError(f"no such file: {args.archive}")
    image = store.import_archive(args.name, args.archive)
    out(f'image "{image.name}" imported\n')
    return 0


# ---------------------------------------------------------------------- kubeconfig


KUBECONFIG_USER_HELP = """\
Refused, as they are the system's: the names of Hatchway's own components
(hatchway-apiserver, admin), names and groups starting with "system:" or
"hatchway:" (nodes get their certificates from 'hatchway up'), and the group
system:masters unless --admin is given.

The certificate comes from the cluster CA, which node agents do not trust: a
minted user reaches containers only through the API server (RBAC, admission, audit).

examples:
  hatchway kubeconfig user alice --namespace team-a > alice.kubeconfig
  hatchway kubeconfig user ops --group ops-team
  hatchway kubeconfig user root --group system:masters --admin
"""


def kubeconfig_main(argv: list[str]) -> int:
    p = commands.parser("kubeconfig", "Kubeconfig files for users.", client=False)
    subs = commands.subcommands(p)
    user = subs.add_parser(
        "user",
        prog="hatchway kubeconfig user",
        help="mint a client certificate for a user and print a kubeconfig for it",
        description="Mint a client certificate for NAME (CN=NAME, O=each group) from the "
        "cluster CA and print a kubeconfig that uses it, as 'kubeadm kubeconfig user' does. "
        "The user can do nothing until a role is bound to it.",
        epilog=KUBECONFIG_USER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    user.add_argument("user", metavar="NAME")
    user.add_argument("--group", action="append", default=[], help="group (repeatable)")
    user.add_argument(
        "--admin",
        action="store_true",
        help="allow --group system:masters: a cluster administrator, beyond RBAC",
    )
    user.add_argument("--server", help="API server URL (default: the local cluster's)")
    user.add_argument("--namespace", help="the context's namespace")
    user.add_argument("--days", type=int, default=365, help="validity (365)")
    _data_dir_flag(user)
    args = p.parse_args(argv)
    from hatchway import pki

    try:
        pki.check_user_identity(args.user, args.group, admin=args.admin)
    except pki.ReservedIdentityError as exc:
        raise UsageError(str(exc), user.prog) from exc
    out(user_kubeconfig(args))
    return 0


def user_kubeconfig(args: argparse.Namespace) -> str:
    from hatchway import pki
    from hatchway.cli.up import ClusterState
    from hatchway.client.kubeconfig import render_kubeconfig

    ca_dir = args.data_dir / "pki"
    if not (ca_dir / "ca.key").exists():
        raise ConfigError(f"no cluster CA in {ca_dir} (is --data-dir right?)")
    server = args.server
    if not server:
        state = ClusterState.load(args.data_dir)
        if state is None:
            raise ConfigError(f"no running cluster in {args.data_dir}: pass --server URL")
        server = state.server_url
    cert, key = pki.mint_user_cert(ca_dir, args.user, args.group, days=args.days, admin=args.admin)
    return render_kubeconfig(
        f"{args.user}@hatchway",
        server,
        pki.pem_bytes(ca_dir / "ca.crt"),
        cert_pem=cert,
        key_pem=key,
        namespace=args.namespace,
    )
