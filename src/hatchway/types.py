"""Small value types shared by every layer."""

from __future__ import annotations

import collections

# No dataclasses and no typing here: ``hatchway exec`` imports this module, and
# ``dataclasses`` (with the ``inspect`` it imports) was the largest import left on its
# path; ``typing`` came next (~2 ms of an exec, bench/README.md "Where an exec's time
# goes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


def named_tuple(cls: type[T]) -> type[T]:
    """``cls`` as a :func:`collections.namedtuple`, as ``typing.NamedTuple`` makes it:
    the annotated names of its body are the fields, in order, the values given there
    their defaults (only trailing fields may have one); its methods, properties and
    docstring are kept. Without ``typing``, which also compiles every field's annotation
    when the class is made; these annotations stay strings, never evaluated."""
    body = dict(cls.__dict__)
    fields = tuple(body.get("__annotations__", {}))
    defaults = [body.pop(name) for name in fields if name in body]
    if any(name in cls.__dict__ for name in fields[: len(fields) - len(defaults)]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    base = collections.namedtuple(cls.__name__, fields, defaults=defaults, module=cls.__module__)
    for name in ("__dict__", "__weakref__"):
        body.pop(name, None)
    body["__slots__"] = ()
    made = type(cls.__name__, (base,), body)
    made.__qualname__ = cls.__qualname__
    return made  # type: ignore[return-value]


@named_tuple
class ExecOptions:
    """What an exec or attach session asks for (PodExecOptions / PodAttachOptions);
    immutable (``_replace`` makes a changed copy)."""

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


class SlotRecord:
    """A plain record of ``__slots__`` fields (what a dataclass would give, without
    importing ``dataclasses``): equal when every field is, shown field by field."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({shown})"


class ExecResult(SlotRecord):
    """The outcome of one finished exec session, as a client sees it. ``error``: the
    server's failure text when the session ended without an exit code."""

    __slots__ = ("command", "error", "extra", "returncode", "stderr", "stdout")

    def __init__(
        self,
        command: list[str],
        returncode: int,
        stdout: bytes = b"",
        stderr: bytes = b"",
        error: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.error = error
        self.extra: dict[str, str] = {} if extra is None else extra
