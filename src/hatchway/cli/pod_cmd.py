"""``run`` (a pod of one container) and ``logs``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hatchway.cli import commands
from hatchway.cli.commands import UsageError, out, warn
from hatchway.client.api import resource_path

RUN_EXAMPLES = """\
examples:
  hatchway run demo --image busybox -- sleep 3600
  hatchway run once --image busybox --restart Never --env GREETING=hi -- sh -c 'echo $GREETING'
  hatchway run web --image busybox --labels app=web,tier=front -- httpd -f
  hatchway run demo --image busybox --dry-run=client -o yaml -- sleep 1

The words after '--' are the container's command (spec.containers[0].command); with
--args-only they are its args, and the image's entrypoint runs them.
"""


def _pairs(text: str, what: str, prog: str) -> dict[str, str]:
    result = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE", prog)
        result[key] = value
    return result


def pod_manifest(args: argparse.Namespace, command: list[str], prog: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": args.name, "image": args.image}
    if command:
        container["args" if args.args_only else "command"] = command
    env = [_pairs(e, "environment variable", prog) for e in args.env]
    if env:
        container["env"] = [{"name": k, "value": v} for pair in env for k, v in pair.items()]
    if args.privileged:
        container["securityContext"] = {"privileged": True}
    labels = _pairs(args.labels, "label", prog) if args.labels else {"run": args.name}
    metadata: dict[str, Any] = {"name": args.name, "labels": labels}
    if args.namespace:
        metadata["namespace"] = args.namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [container], "restartPolicy": args.restart},
    }


def run_main(argv: list[str]) -> int:
    own, dash, command = _split_dash(argv)
    p = commands.parser("run", "Create a pod running one container.", epilog=RUN_EXAMPLES)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--image", required=True)
    p.add_argument("--restart", default="Always", choices=["Always", "OnFailure", "Never"])
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--labels", "-L", help="k=v,k2=v2 (default run=NAME)")
    p.add_argument("--privileged", action="store_true", help="a privileged container")
    p.add_argument("--command", action="store_true", help="(the default; for kubectl habits)")
    p.add_argument("--args-only", action="store_true", help="the words after -- are args")
    p.add_argument("--dry-run", choices=["none", "client"], default="none")
    p.add_argument("-o", "--output", choices=["json", "yaml", "name"])
    args = p.parse_args(own)
    if not dash and not command:
        command = []
    manifest = pod_manifest(args, command, p.prog)
    if args.dry_run == "client":
        return _print_pod(manifest, args.output or "yaml")
    return commands.run(_create(args, manifest))


def _split_dash(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], True, argv[i + 1 :]
    return argv, False, []


def _print_pod(pod: dict[str, Any], output: str) -> int:
    from hatchway.cli.manifests import TYPES
    from hatchway.cli.printers import format_objects

    out(format_objects([(TYPES[0], pod)], output, True))
    return 0


async def _create(args: argparse.Namespace, manifest: dict[str, Any]) -> int:
    client, namespace = commands.connect(args)
    created = await client.rest.create(resource_path("pods", namespace), manifest)
    if args.output:
        return _print_pod(created, args.output)
    out(f"pod/{created['metadata']['name']} created\n")
    return 0


# ---------------------------------------------------------------------------- logs


def logs_main(argv: list[str]) -> int:
    p = commands.parser("logs", "Print the logs of a container in a pod.")
    p.add_argument("pod", metavar="POD | pod/NAME")
    p.add_argument("-c", "--container", help="container (default: as exec chooses)")
    p.add_argument("-f", "--follow", action="store_true", help="stream new output")
    p.add_argument("--tail", type=int, default=-1, help="last N lines (-1: all)")
    p.add_argument("-p", "--previous", action="store_true", help="the previous instance")
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no 'Defaulted container' notice")
    args = p.parse_args(argv)
    kind, slash, name = args.pod.partition("/")
    if slash:
        if kind.lower() not in {"po", "pod", "pods"} or not name:
            raise UsageError(f"logs works on pods only, not on {args.pod!r}", p.prog)
        args.pod = name
    return commands.run(_logs(args))


async def _logs(args: argparse.Namespace) -> int:
    from hatchway.client.pods import default_container

    client, namespace = commands.connect(args)
    container = args.container
    if not container:
        pod = await client.get_pod(args.pod, namespace)
        container, notice = default_container(pod, None)
        if notice and not args.quiet:
            warn(notice)
    params = {"container": container}
    if args.follow:
        params["follow"] = "true"
    if args.tail >= 0:
        params["tailLines"] = str(args.tail)
    if args.previous:
        params["previous"] = "true"
    if args.timestamps:
        params["timestamps"] = "true"
    path = resource_path("pods", namespace, args.pod) + "/log"
    fd = sys.stdout.fileno()
    async for chunk in client.rest.stream(path, params):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    return 0
