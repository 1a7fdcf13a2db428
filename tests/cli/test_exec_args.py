"""``hatchway exec`` argument parsing, tables of both forms, and the TTY choice (the
pod pre-flight rules are the client library's: tests/client/test_pods.py)."""

from __future__ import annotations

import pytest

from hatchway.cli.exec_args import (
    EXEC_HELP,
    NO_TTY_WARNING,
    ExecArgs,
    ExecUsageError,
    parse_exec_args,
    resolve_tty,
)
from hatchway.errors import ConfigError


def E(pod: str, *command: str, dash: bool = True, **kw) -> ExecArgs:
    return ExecArgs(pod=pod, command=list(command), dash=dash, **kw)


PARSES = [
    # kubectl's form
    ("mypod -- date", E("mypod", "date")),
    ("mypod -- echo hello", E("mypod", "echo", "hello")),
    ("mypod -c app -- date", E("mypod", "date", container="app")),
    ("-c app mypod -- date", E("mypod", "date", container="app")),
    ("mypod --container=app -- date", E("mypod", "date", container="app")),
    ("mypod --container app -- date", E("mypod", "date", container="app")),
    ("mypod -capp -- date", E("mypod", "date", container="app")),
    ("mypod -c=app -- date", E("mypod", "date", container="app")),
    ("mypod -n team -- date", E("mypod", "date", namespace="team")),
    ("mypod --namespace=team -- date", E("mypod", "date", namespace="team")),
    ("mypod -nteam -- date", E("mypod", "date", namespace="team")),
    ("mypod -i -t -- sh", E("mypod", "sh", stdin=True, tty=True)),
    ("mypod -it -- sh", E("mypod", "sh", stdin=True, tty=True)),
    ("mypod -ti -- sh", E("mypod", "sh", stdin=True, tty=True)),
    ("mypod -itq -- sh", E("mypod", "sh", stdin=True, tty=True, quiet=True)),
    ("mypod -itc app -- sh", E("mypod", "sh", stdin=True, tty=True, container="app")),
    ("mypod -ic app -- sh", E("mypod", "sh", stdin=True, container="app")),
    ("mypod --stdin --tty --quiet -- sh", E("mypod", "sh", stdin=True, tty=True, quiet=True)),
    ("mypod --stdin=false -t -- sh", E("mypod", "sh", tty=True)),
    ("mypod -i=false -- sh", E("mypod", "sh")),
    ("mypod --tty=true -- sh", E("mypod", "sh", tty=True)),
    (
        "mypod --kubeconfig /tmp/kc --context dev -- id",
        E("mypod", "id", kubeconfig="/tmp/kc", context="dev"),
    ),
    ("mypod --kubeconfig=/tmp/kc -- id", E("mypod", "id", kubeconfig="/tmp/kc")),
    ("mypod -- ls -la --color -- x", E("mypod", "ls", "-la", "--color", "--", "x")),
    ("mypod -- -weird", E("mypod", "-weird")),
    ("pod/mypod -- date", E("mypod", "date")),
    ("pods/mypod -- date", E("mypod", "date")),
    ("po/mypod -- date", E("mypod", "date")),
    ("mypod -c '' -- date", E("mypod", "date")),
    # the seed's form: the first non-option after the pod starts the command
    ("mypod ls", E("mypod", "ls", dash=False)),
    ("mypod ls -l /", E("mypod", "ls", "-l", "/", dash=False)),
    (
        "mypod -c app ls -c x -n y",
        E("mypod", "ls", "-c", "x", "-n", "y", dash=False, container="app"),
    ),
    (
        "-c app mypod sh -c 'echo hi'",
        E("mypod", "sh", "-c", "echo hi", dash=False, container="app"),
    ),
    ("mypod -it sh -- -i", E("mypod", "sh", "--", "-i", dash=False, stdin=True, tty=True)),
    ("mypod echo --", E("mypod", "echo", "--", dash=False)),
    ("mypod - x", E("mypod", "-", "x", dash=False)),
]


@pytest.mark.parametrize(("line", "expected"), PARSES, ids=[p[0] for p in PARSES])
def test_parse(line: str, expected: ExecArgs) -> None:
    import shlex

    assert parse_exec_args(shlex.split(line)) == expected


ERRORS = [
    ([], "pod or type/name must be specified"),
    (["-it"], "pod or type/name must be specified"),
    (["--", "date"], "pod or type/name must be specified"),
    (["mypod"], "you must specify at least one command for the container"),
    (["mypod", "--"], "you must specify at least one command for the container"),
    (["mypod", "-it", "-c", "app"], "you must specify at least one command for the container"),
    (["mypod", "--bogus", "--", "x"], "unknown flag: --bogus"),
    (["mypod", "-x", "--", "x"], "unknown shorthand flag: 'x' in -x"),
    (["mypod", "-ix", "--", "x"], "unknown shorthand flag: 'x' in -x"),
    (["mypod", "-c"], "flag needs an argument: 'c' in -c"),
    (["mypod", "--container"], "flag needs an argument: --container"),
    (["mypod", "--stdin=maybe", "--", "x"], 'invalid argument "maybe" for "-i, --stdin" flag'),
    (["deploy/web", "--", "x"], 'pods only, not on "deploy"'),
    (["pod/", "--", "x"], "pod or type/name must be specified"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS, ids=[" ".join(e[0]) for e in ERRORS])
def test_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ExecUsageError) as info:
        parse_exec_args(argv)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert info.value.hint == "See 'hatchway exec -h' for help and examples"


def test_no_command_text_is_exactly_kubectls() -> None:
    with pytest.raises(ExecUsageError) as info:
        parse_exec_args(["mypod", "--"])
    assert str(info.value) == "you must specify at least one command for the container"


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["mypod", "-h"], ["-ih"], ["x", "--help"]])
def test_help(argv: list[str]) -> None:
    assert parse_exec_args(argv).help is True
    assert "Usage:" in EXEC_HELP and "-c, --container" in EXEC_HELP


def test_help_after_command_belongs_to_the_command() -> None:
    assert parse_exec_args(["mypod", "--", "ls", "-h"]).help is False
    assert parse_exec_args(["mypod", "ls", "--help"]).command == ["ls", "--help"]


# ---------------------------------------------------------------------- TTY


@pytest.mark.parametrize(
    ("flags", "terminal", "expected"),
    [
        ([], True, (False, None)),
        (["-t"], True, (False, None)),  # -t without -i: dropped silently
        (["-i"], True, (False, None)),
        (["-it"], True, (True, None)),
        (["-it"], False, (False, NO_TTY_WARNING)),
        (["-i"], False, (False, None)),
    ],
)
def test_resolve_tty(flags, terminal, expected) -> None:
    args = parse_exec_args(["p", *flags, "--", "sh"])
    assert resolve_tty(args, terminal) == expected
