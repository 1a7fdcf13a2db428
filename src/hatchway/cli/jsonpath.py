"""The part of kubectl's JSONPath templates that scripts use: ``{.a.b}``, ``{.items[0]}``,
``{.items[*].metadata.name}``, ``{['key.with.dots']}``, ``{..name}``, ``{range …}…{end}``
and quoted literals such as ``{"\\n"}``. Missing keys print nothing (kubectl's
``--allow-missing-template-keys=true``)."""

from __future__ import annotations

import json
import re
from typing import Any

from hatchway.errors import ConfigError

_STEP = re.compile(
    r"""\.\.(?P<deep>[\w-]+)|\.(?P<field>[\w-]+)|\[(?P<index>-?\d+)\]|\[(?P<star>\*)\]"""
    r"""|\[['"](?P<key>[^'"]*)['"]\]|(?P<dot>\.)"""
)
_LITERAL = re.compile(r'^"((?:[^"\\]|\\.)*)"$|^\'([^\']*)\'$')


class JsonPathError(ConfigError):
    """The template cannot be parsed."""


def _tokens(template: str) -> list[tuple[str, str]]:
    """``("text", …)`` and ``("expr", …)`` pieces of a template."""
    out, i = [], 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            out.append(("text", template[i:]))
            break
        if start > i:
            out.append(("text", template[i:start]))
        end = template.find("}", start)
        if end < 0:
            raise JsonPathError(f"error parsing jsonpath {template}, unclosed action")
        out.append(("expr", template[start + 1 : end].strip()))
        i = end + 1
    return out


def _steps(expr: str, template: str) -> list[re.Match[str]]:
    expr = expr.removeprefix("$")
    steps, i = [], 0
    while i < len(expr):
        m = _STEP.match(expr, i)
        if m is None:
            raise JsonPathError(f"error parsing jsonpath {template}, unrecognized at {expr[i:]!r}")
        steps.append(m)
        i = m.end()
    return steps


def _deep(value: Any, key: str) -> list[Any]:
    found = []
    if isinstance(value, dict):
        if key in value:
            found.append(value[key])
        for v in value.values():
            found.extend(_deep(v, key))
    elif isinstance(value, list):
        for v in value:
            found.extend(_deep(v, key))
    return found


def _step(values: list[Any], m: re.Match[str]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if m["dot"]:
            out.append(v)
        elif m["deep"]:
            out.extend(_deep(v, m["deep"]))
        elif m["field"] is not None or m["key"] is not None:
            key = m["field"] if m["field"] is not None else m["key"]
            if isinstance(v, dict) and key in v:
                out.append(v[key])
        elif m["star"]:
            out.extend(v if isinstance(v, list) else v.values() if isinstance(v, dict) else [])
        elif isinstance(v, list):
            index = int(m["index"])
            if -len(v) <= index < len(v):
                out.append(v[index])
    return out


def evaluate(expr: str, data: Any, template: str = "") -> list[Any]:
    values = [data]
    for m in _steps(expr, template or expr):
        values = _step(values, m)
    return values


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _literal(expr: str) -> str | None:
    m = _LITERAL.match(expr)
    if m is None:
        return None
    if m.group(2) is not None:
        return m.group(2)
    return json.loads(f'"{m.group(1)}"')  # type: ignore[no-any-return]


def _render(tokens: list[tuple[str, str]], data: Any, template: str) -> tuple[str, int]:
    """Render until an unmatched ``{end}``; returns the text and tokens consumed."""
    out, i = [], 0
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            out.append(value)
        elif value == "end":
            return "".join(out), i
        elif value.startswith("range "):
            body = tokens[i:]
            consumed = _render(body, None, template)[1] if body else 0
            for item in evaluate(value[6:].strip(), data, template):
                out.append(_render(body, item, template)[0])
            i += consumed
        elif (text := _literal(value)) is not None:
            out.append(text)
        else:
            out.append(" ".join(_text(v) for v in evaluate(value, data, template)))
    return "".join(out), i


def render(template: str, data: Any) -> str:
    """The template applied to ``data`` (parsed JSON)."""
    return _render(_tokens(template), data, template)[0]
