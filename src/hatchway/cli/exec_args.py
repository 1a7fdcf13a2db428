"""``hatchway exec`` arguments with kubectl's semantics (protocol.md 2.7),
and the client-side choices kubectl makes before the exec request: the container, the
completed-pod refusal and the TTY downgrade.

Two forms are accepted:

* kubectl's: ``hatchway exec POD [flags] -- COMMAND [ARGS...]``;
* the seed's: ``hatchway exec POD [flags] COMMAND [ARGS...]``: the first word after the
  pod that is not an option starts the command, and everything after it is the command
  verbatim, options included.

Flags parse as spf13/pflag parses them: ``-it``, ``-itq``, ``-cNAME``, ``-c=NAME``,
``--container=NAME``, ``--container NAME``, ``--stdin=false``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hatchway.errors import ConfigError
from hatchway.types import SlotRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HELP_HINT = "See 'hatchway exec -h' for help and examples"
NO_TTY_WARNING = "Unable to use a TTY - input is not a terminal or the right kind of file"

EXEC_HELP = """\
Execute a command in a container.

Examples:
  # Get output from running the 'date' command in pod mypod, first container by default
  hatchway exec mypod -- date

  # Get output from running the 'date' command in container app of pod mypod
  hatchway exec mypod -c app -- date

  # Switch to raw terminal mode: send stdin to 'bash' in container app of pod mypod
  # and its output back to the terminal
  hatchway exec mypod -c app -i -t -- bash -il

  # The same without '--': the first word after the pod starts the command, and
  # everything after it belongs to the command
  hatchway exec mypod -c app ls -l /

Options:
  -c, --container='': Container name. If omitted, the container named by the
      kubectl.kubernetes.io/default-container annotation, else the first container
  -n, --namespace='': Namespace of the pod (default: the kubeconfig context's)
  -i, --stdin=false: Pass stdin to the container
  -t, --tty=false: Stdin is a TTY
  -q, --quiet=false: Only print output from the remote session
      --kubeconfig='': Path to the kubeconfig file to use
      --context='': The name of the kubeconfig context to use
      --reuse=false: Run through a warm per-user daemon that keeps the connections
          to the API server (started on first use; see HATCHWAY_EXEC_REUSE)
  -h, --help: Help for exec

Environment:
  HATCHWAY_EXEC_REUSE=1: as --reuse, for every exec
  HATCHWAY_TIMING=1: print where the time went (start, connect, upgrade, ...) on stderr

Usage:
  hatchway exec (POD | pod/NAME) [-c CONTAINER] [flags] -- COMMAND [args...]
"""

_VALUE_FLAGS = {"container", "namespace", "kubeconfig", "context"}
_BOOL_FLAGS = {"stdin", "tty", "quiet", "help", "reuse"}
_SHORT = {"c": "container", "n": "namespace", "i": "stdin", "t": "tty", "q": "quiet", "h": "help"}
_SHORT_OF = {long: short for short, long in _SHORT.items()}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_POD_TYPES = {"po", "pod", "pods"}


class ExecUsageError(ConfigError):
    """The command line is wrong; ``hint`` is the line to print after the message."""

    def __init__(self, message: str, *, hint: str = HELP_HINT) -> None:
        super().__init__(message)
        self.hint = hint


class ExecArgs(SlotRecord):
    """What ``hatchway exec`` was asked to do. ``dash`` tells which form was used
    (True: ``-- COMMAND``; False: the seed's form without ``--``). A plain class, not a
    dataclass: ``hatchway exec`` starts without importing ``dataclasses``."""

    __slots__ = (
        "command",
        "container",
        "context",
        "dash",
        "help",
        "kubeconfig",
        "namespace",
        "pod",
        "quiet",
        "reuse",
        "stdin",
        "tty",
    )

    def __init__(
        self,
        pod: str = "",
        command: list[str] | None = None,
        container: str | None = None,
        namespace: str | None = None,
        stdin: bool = False,
        tty: bool = False,
        quiet: bool = False,
        kubeconfig: str | None = None,
        context: str | None = None,
        help: bool = False,
        dash: bool = False,
        reuse: bool = False,
    ) -> None:
        self.pod = pod
        self.command: list[str] = [] if command is None else command
        self.container = container
        self.namespace = namespace
        self.stdin = stdin
        self.tty = tty
        self.quiet = quiet
        self.kubeconfig = kubeconfig
        self.context = context
        self.help = help
        self.dash = dash
        self.reuse = reuse

    def replaced(self, **changes: Any) -> ExecArgs:
        """A copy with ``changes``."""
        return ExecArgs(**{**self._fields(), **changes})


def parse_exec_args(argv: Sequence[str]) -> ExecArgs:
    """Parse the arguments after ``exec``; raises ExecUsageError with kubectl's texts."""
    values: dict[str, Any] = {}
    pod: str | None = None
    command: list[str] = []
    dash = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command, dash = list(argv[i + 1 :]), True
            break
        if arg.startswith("--"):
            i = _parse_long(argv, i, values)
        elif arg.startswith("-") and arg != "-":
            i = _parse_short(argv, i, values)
        elif pod is None:
            pod, i = arg, i + 1
        else:
            command = list(argv[i:])
            break
    args = ExecArgs(command=command, dash=dash, **values)
    if args.help:
        return args
    if not pod:
        raise ExecUsageError("pod or type/name must be specified")
    args.pod = _pod_name(pod)
    if not command:
        raise ExecUsageError("you must specify at least one command for the container")
    return args


def _parse_long(argv: Sequence[str], i: int, values: dict[str, Any]) -> int:
    name, eq, value = argv[i][2:].partition("=")
    if name in _BOOL_FLAGS:
        values[name] = _parse_bool(value, name) if eq else True
        return i + 1
    if name not in _VALUE_FLAGS:
        raise ExecUsageError(f"unknown flag: --{name}", hint=HELP_HINT)
    if not eq:
        if i + 1 >= len(argv):
            raise ExecUsageError(f"flag needs an argument: --{name}")
        value, i = argv[i + 1], i + 1
    values[name] = value or None
    return i + 1


def _parse_short(argv: Sequence[str], i: int, values: dict[str, Any]) -> int:
    """One ``-xyz`` word, as pflag reads it: bool letters combine; a letter that takes
    a value takes the rest of the word (``-cNAME``, ``-c=NAME``) or the next word."""
    letters = argv[i][1:]
    while letters:
        c = letters[0]
        name = _SHORT.get(c)
        if name is None:
            raise ExecUsageError(f"unknown shorthand flag: '{c}' in -{letters}")
        if len(letters) > 2 and letters[1] == "=":
            value, letters = letters[2:], ""
            values[name] = _parse_bool(value, name) if name in _BOOL_FLAGS else value or None
        elif name in _BOOL_FLAGS:
            values[name], letters = True, letters[1:]
        elif len(letters) > 1:
            values[name], letters = letters[1:], ""
        elif i + 1 < len(argv):
            values[name], letters, i = argv[i + 1] or None, "", i + 1
        else:
            raise ExecUsageError(f"flag needs an argument: '{c}' in -{letters}")
    return i + 1


def _parse_bool(value: str, name: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ExecUsageError(
        f'invalid argument "{value}" for "-{_SHORT_OF[name]}, --{name}" flag: '
        f'strconv.ParseBool: parsing "{value}": invalid syntax'
    )


def _pod_name(word: str) -> str:
    kind, slash, name = word.partition("/")
    if not slash:
        return word
    if kind.lower() not in _POD_TYPES:
        raise ExecUsageError(f'hatchway exec works on pods only, not on "{kind}"')
    if not name:
        raise ExecUsageError("pod or type/name must be specified")
    return name


# ------------------------------------------------------- choices before the exec


def resolve_tty(args: ExecArgs, stdin_is_terminal: bool) -> tuple[bool, str | None]:
    """Whether to ask for a TTY, and the warning to print (protocol.md 2.7 item 5): ``-t``
    without ``-i`` is dropped silently; ``-it`` on a non-terminal stdin is dropped with
    kubectl's warning."""
    if not args.tty or not args.stdin:
        return False, None
    if not stdin_is_terminal:
        return False, NO_TTY_WARNING
    return True, None
