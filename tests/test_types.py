"""hatchway.types.named_tuple: what typing.NamedTuple gives, without typing."""

from __future__ import annotations

import pytest

from hatchway.types import ExecOptions, named_tuple


def test_named_tuple_fields_defaults_methods() -> None:
    @named_tuple
    class Point:
        """A point."""

        x: int
        y: int = 2

        @property
        def total(self) -> int:
            return self.x + self.y

    p = Point(1)
    assert (p, p.total, Point._fields, Point.__doc__) == ((1, 2), 3, ("x", "y"), "A point.")
    assert p._replace(y=5) == Point(1, 5) and hash(p) == hash((1, 2))
    assert repr(p) == "Point(x=1, y=2)" and isinstance(p, tuple)
    with pytest.raises(AttributeError):
        p.z = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        p.x = 3  # type: ignore[misc]


def test_named_tuple_refuses_a_default_before_a_field_without() -> None:
    with pytest.raises(TypeError, match="follows"):

        @named_tuple
        class Bad:
            a: int = 1
            b: int


def test_exec_options_is_a_named_tuple() -> None:
    options = ExecOptions(("sh",), "c", tty=True)
    assert options.normalised() == ExecOptions(("sh",), "c", False, True, False, True, "exec")
    assert ExecOptions._field_defaults["stdout"] is True
