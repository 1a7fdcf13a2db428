"""The client commands other than exec: ``get``, ``create``, ``apply``, ``delete``,
``run``, ``logs``, ``port-forward``, ``auth``, ``config``, ``image`` and ``kubeconfig``.

Each lives in a module imported only when it runs. Errors follow kubectl: one line on
stderr (server strings with control characters escaped) and exit status 1; a usage
error adds ``See 'hatchway CMD -h' for help and examples``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from hatchway.cli.errors import report, set_server
from hatchway.cli.escape import escape_control
from hatchway.errors import ConfigError

MODULES = {
    "get": "hatchway.cli.resource_cmd",
    "create": "hatchway.cli.resource_cmd",
    "apply": "hatchway.cli.resource_cmd",
    "delete": "hatchway.cli.resource_cmd",
    "run": "hatchway.cli.pod_cmd",
    "logs": "hatchway.cli.pod_cmd",
    "port-forward": "hatchway.cli.portforward_cmd",
    "auth": "hatchway.cli.admin_cmd",
    "config": "hatchway.cli.admin_cmd",
    "image": "hatchway.cli.admin_cmd",
    "kubeconfig": "hatchway.cli.admin_cmd",
}


class UsageError(ConfigError):
    """The command line is wrong."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.hint = f"See '{prog} -h' for help and examples"


class Parser(argparse.ArgumentParser):
    """argparse with kubectl's usage errors (exit 1 and a hint, not exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def parser(
    prog: str, description: str, *, client: bool = True, epilog: str | None = None
) -> Parser:
    """A parser for ``hatchway PROG``; ``client`` adds the global client flags."""
    p = Parser(
        prog=f"hatchway {prog}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if client:
        add_client_flags(p)
    return p


def add_client_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("global options")
    g.add_argument("--kubeconfig", help="path to the kubeconfig file to use")
    g.add_argument("--context", help="the name of the kubeconfig context to use")
    g.add_argument("-n", "--namespace", help="the namespace (default: the context's)")


def subcommands(p: argparse.ArgumentParser) -> Any:
    subs = p.add_subparsers(dest="sub", metavar="SUBCOMMAND", parser_class=Parser)
    subs.required = True
    return subs


def connect(args: argparse.Namespace) -> tuple[Any, str]:
    """A client for the kubeconfig and context the flags name, and the namespace."""
    from hatchway.client.api import Client

    client = Client.from_kubeconfig(args.kubeconfig or None, context=args.context or None)
    set_server(client.config.server)
    return client, args.namespace or client.namespace


def run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def warn(message: str) -> None:
    print(escape_control(message), file=sys.stderr)


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(name: str, argv: Sequence[str]) -> int:
    """Run ``hatchway NAME ARGV…``; returns the exit status."""
    module = importlib.import_module(MODULES[name])
    try:
        return int(getattr(module, f"{name.replace('-', '_')}_main")(list(argv)))
    except UsageError as exc:
        warn(f"error: {exc}")
        print(exc.hint, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except Exception as exc:  # every failure is one line, never a traceback
        return report(exc)
