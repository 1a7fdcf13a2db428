"""Small value types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExecOptions:
    """What an exec or attach session asks for (PodExecOptions / PodAttachOptions)."""

    command: tuple[str, ...] = ()
    container: str = ""
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    #: ``exec`` or ``attach``.
    action: str = "exec"

    def normalised(self) -> ExecOptions:
        """With a TTY, stderr is folded into stdout (the kubelet drops it silently)."""
        if self.tty and self.stderr:
            return ExecOptions(
                self.command, self.container, self.stdin, self.stdout, False, True, self.action
            )
        return self

    @property
    def any_stream(self) -> bool:
        return self.stdin or self.stdout or self.stderr


@dataclass
class ExecResult:
    """The outcome of one finished exec session, as a client sees it."""

    command: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    #: Failure text of the server when the session ended without an exit code.
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)
