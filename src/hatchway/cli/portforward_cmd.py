"""``hatchway port-forward POD [LOCAL:]REMOTE...``, as ``kubectl port-forward`` behaves:
``Forwarding from ADDRESS:LOCAL -> REMOTE`` per listener, ``Handling connection for
REMOTE`` per connection, the server's error text per failed connection
(``an error occurred forwarding L -> R: ...``, stderr), until interrupted or the
connection to the pod is lost (``error: lost connection to pod``, exit 1)."""

from __future__ import annotations

import argparse

from hatchway.cli import commands
from hatchway.cli.commands import UsageError, out, warn
from hatchway.errors import ConfigError

EXAMPLES = """\
examples:
  hatchway port-forward web 8080              local 8080 to the pod's 8080
  hatchway port-forward pod/web 5000:80 :443  local 5000 to 80, a free local port to 443
  hatchway port-forward web 8080 --address 0.0.0.0

A local port of 0 or left out before ':' is chosen by the system and printed.
"""


def port_forward_main(argv: list[str]) -> int:
    p = commands.parser("port-forward", "Forward local ports to a pod's ports.", epilog=EXAMPLES)
    p.add_argument("pod", metavar="POD | pod/NAME")
    p.add_argument("ports", metavar="[LOCAL:]REMOTE", nargs="+")
    p.add_argument(
        "--address",
        default="localhost",
        help="addresses to listen on, comma-separated (default localhost: 127.0.0.1 and ::1)",
    )
    args = p.parse_args(argv)
    kind, slash, name = args.pod.partition("/")
    if slash:
        if kind.lower() not in {"po", "pod", "pods"} or not name:
            raise UsageError(f"port-forward works on pods only, not on {args.pod!r}", p.prog)
        args.pod = name
    from hatchway.client import portforward

    try:
        args.mappings = [portforward.parse_mapping(m) for m in args.ports]
        args.addresses = portforward.parse_addresses(args.address)
    except ConfigError as exc:
        raise UsageError(str(exc), p.prog) from None
    return commands.run(_port_forward(args))


async def _port_forward(args: argparse.Namespace) -> int:
    client, namespace = commands.connect(args)
    pod = await client.get_pod(args.pod, namespace)
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        warn(f"error: unable to forward port because pod is not running. Current status={phase}")
        return 1

    def on_error(local: int, remote: int, text: str) -> None:
        warn(f"error: an error occurred forwarding {local} -> {remote}: {text}")

    def on_connection(remote: int) -> None:
        out(f"Handling connection for {remote}\n")

    forwarder = await client.port_forward(
        args.pod,
        [f"{m.local}:{m.remote}" for m in args.mappings],
        namespace=namespace,
        addresses=args.addresses,
        on_error=on_error,
        on_connection=on_connection,
    )
    async with forwarder:
        for listener in forwarder.listeners:
            host = f"[{listener.address}]" if ":" in listener.address else listener.address
            out(f"Forwarding from {host}:{listener.local} -> {listener.remote}\n")
        await forwarder.wait_closed()
    warn("error: lost connection to pod")
    return 1
