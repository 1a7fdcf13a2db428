"""``hatchway`` command line: dispatch to subcommands, importing only what each needs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """\
usage: hatchway <command> [options]

Run commands inside containers on remote machines.

Cluster:
  up          start a local cluster (API server, node agent, kubeconfig context)
  down        stop the local cluster and remove its containers
  apiserver   run the API server
  node        run the node agent
  pki         certificates for a cluster on several machines (init, etcd-member, node)

Workloads:
  exec        execute a command in a container
  run         create a pod running one container
  get         display resources
  create      create resources from a file (-f)
  apply       create or update resources from a file (-f)
  delete      delete resources
  logs        print the logs of a container
  port-forward  forward local ports to a pod's ports
  auth        inspect authorisation (auth can-i)
  config      kubeconfig: view, use-context
  image       node images: import
  kubeconfig  mint a user's client certificate and kubeconfig (kubeconfig user)
  version     print the version

Run 'hatchway <command> --help' for the options of a command.
"""


def _version(argv: Sequence[str]) -> int:
    from hatchway import __version__

    print(f"hatchway {__version__}")
    return 0


def _exec(argv: Sequence[str]) -> int:
    from hatchway.cli import reuse

    if reuse.wanted(list(argv)):
        code = reuse.run(list(argv))
        if code is not None:
            return code
    from hatchway.cli import startup

    startup.pause_collection()  # exec_cmd resumes it once the session is up
    from hatchway.cli import exec_cmd

    try:
        return exec_cmd.main(argv)
    finally:
        startup.resume_collection()


def _exec_reuse_daemon(argv: Sequence[str]) -> int:
    from hatchway.cli import reuse_daemon

    return reuse_daemon.main(argv)


def _pki(argv: Sequence[str]) -> int:
    from hatchway.cli import pki_cmd

    return pki_cmd.main(argv)


def _daemons(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        from hatchway.cli import daemons

        return int(getattr(daemons, f"{name}_main")(argv))

    return run


def _commands(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        from hatchway.cli import commands

        return int(commands.main(name, argv))

    return run


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "version": _version,
    "--version": _version,
    "exec": _exec,
    "exec-reuse-daemon": _exec_reuse_daemon,  # started by exec --reuse (cli/reuse.py)
    "up": _daemons("up"),
    "down": _daemons("down"),
    "apiserver": _daemons("apiserver"),
    "node": _daemons("node"),
    "pki": _pki,
    **{
        name: _commands(name)
        for name in (
            "run",
            "get",
            "create",
            "apply",
            "delete",
            "logs",
            "port-forward",
            "auth",
            "config",
            "image",
            "kubeconfig",
        )
    },
}


def _skip_the_last_collection() -> None:
    """Exiting, the interpreter's last garbage collection walks every object still alive
    (asyncio, ssl and some hundred modules: ~10 ms, a tenth of an ``exec``, measured with
    bench/ab.py); frozen, they are left to the operating system. The exit is otherwise
    the normal one: atexit handlers run and the standard streams are flushed."""
    import gc

    gc.freeze()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        sys.exit(0 if args else 2)
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"hatchway: unknown command {args[0]!r}\n", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        sys.exit(2)
    code = command(args[1:])
    if argv is None:  # the program itself, not a caller in Python
        _skip_the_last_collection()
    sys.exit(code)
