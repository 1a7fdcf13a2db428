"""``hatchway`` command line: dispatch to subcommands, importing only what each needs."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print("usage: hatchway <command> [options]\n\ncommands: version")
        sys.exit(0 if args else 2)
    if args[0] in {"version", "--version"}:
        from hatchway import __version__

        print(f"hatchway {__version__}")
        sys.exit(0)
    print(f"hatchway: unknown command {args[0]!r}", file=sys.stderr)
    sys.exit(2)
