"""The one exception tree (errors.py): every exception class Hatchway defines derives from
HatchwayError, and every public one is named ``...Error``."""

from __future__ import annotations

import importlib
import inspect
import pathlib

import pytest

from hatchway.errors import HatchwayError

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "hatchway"


def _module_names() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] in {"__main__"}:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _module_names():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


CLASSES = _exception_classes()


def test_there_are_exceptions() -> None:
    assert len(CLASSES) > 20


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_exception_is_in_the_tree(cls: type[BaseException]) -> None:
    assert issubclass(cls, HatchwayError), [b.__name__ for b in cls.__mro__]
    if not cls.__name__.startswith("_"):
        assert cls.__name__.endswith("Error")


def test_compatible_bases_are_kept() -> None:
    """Where callers caught OSError / ValueError before the tree, they still can."""
    from hatchway.node.logs import LogOptionsError
    from hatchway.node.runtime_execshim import ExecHelperError
    from hatchway.protocol.spdy import StreamError

    assert issubclass(ExecHelperError, OSError)
    assert issubclass(LogOptionsError, ValueError)
    err = StreamError(2)
    assert err.status == err.code == 2
