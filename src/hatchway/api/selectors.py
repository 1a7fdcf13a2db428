"""Label and field selectors, as ``?labelSelector=`` and ``?fieldSelector=`` carry them.

The label grammar is k8s.io/apimachinery/pkg/labels: comma-separated requirements
``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``, and
``k>1``/``k<1``. Parse errors raise a 400 BadRequest :class:`StatusError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hatchway.api.names import label_value, qualified_name
from hatchway.api.status import StatusError, bad_request

_OPS = ("=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt")
_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|>|<|[^\s!=(),<>]+)")
_WORD_OPS = {"in", "notin"}


@dataclass(frozen=True)
class Requirement:
    """One label requirement. ``op`` is one of ``= == != in notin exists ! gt lt``."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in _WORD_OPS:
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        symbol = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: dict[str, Any]) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels"))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _bad(message: str) -> StatusError:
    return StatusError(bad_request(message))


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only whitespace left
            break
        out.append(m.group(1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        if not self.toks:
            return LabelSelector()
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                break
            if tok != ",":
                raise _bad(f"found '{tok}', expected: ',' or 'end of string'")
        return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok == "!":
            return Requirement(self.key(self.take()), "!")
        key = self.key(tok)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        self.take()
        if op in _WORD_OPS:
            return _checked(Requirement(key, op, self.value_set()))
        if op in ("=", "==", "!=", ">", "<"):
            value = self.peek()
            if value is None or value in (",", "(", ")", "!", "=", "==", "!="):
                value = ""
            else:
                self.take()
            kind = {">": "gt", "<": "lt"}.get(op, op)
            return _checked(Requirement(key, kind, (value,)))
        raise _bad(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")

    def key(self, tok: str | None) -> str:
        if tok is None or tok in ("(", ")", ",", "=", "==", "!=", "!", ">", "<"):
            raise _bad(f"found '{tok or 'end of string'}', expected: identifier")
        for problem in qualified_name(tok):
            raise _bad(f'unable to parse requirement: key: Invalid value: "{tok}": {problem}')
        return tok

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise _bad("found end of string, expected: '('")
        values: list[str] = []
        expect_value = True
        while True:
            tok = self.take()
            if tok is None:
                raise _bad("found 'end of string', expected: ')'")
            if tok == ")":
                if expect_value and values:
                    values.append("")
                return tuple(values) if values else ("",)
            if tok == ",":
                if expect_value:
                    values.append("")
                expect_value = True
                continue
            if not expect_value:
                raise _bad(f"found '{tok}', expected: ',' or ')'")
            values.append(tok)
            expect_value = False


def _checked(req: Requirement) -> Requirement:
    for value in req.values:
        if req.op in ("gt", "lt"):
            if not re.fullmatch(r"-?\d+", value):
                raise _bad(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be"
                    f" an integer: {value}"
                )
            continue
        for problem in label_value(value):
            raise _bad(
                f'unable to parse requirement: values[0][{req.key}]: Invalid value: "{value}": {problem}'  # noqa: E501
            )
    return req


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``?labelSelector=``; empty or None selects everything."""
    return _Parser(text or "").parse()


def label_selector_from_dict(selector: dict[str, Any] | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` (``matchLabels``, ``matchExpressions``) as a selector."""
    if not selector:
        return LabelSelector()
    reqs = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise _bad(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(expr.get("key", ""), op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))


# -- field selectors --------------------------------------------------------------------

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        *_COMMON_FIELDS,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "namespaces": ("metadata.name", "status.phase"),
    "events": (
        *_COMMON_FIELDS,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "nodes": ("metadata.name", "spec.unschedulable"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: dict[str, Any]) -> bool:
        for req in self.requirements:
            equal = field_value(obj, req.field) == req.value
            if equal != (req.op == "="):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string a field selector compares: missing is ``""``, booleans ``true``/``false``."""
    here: Any = obj
    for part in path.split("."):
        here = here.get(part) if isinstance(here, dict) else None
    if isinstance(here, bool):
        return "true" if here else "false"
    return "" if here is None else str(here)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, buf, escaped = [], "", False
    for ch in text:
        if escaped:
            buf += ch
            escaped = False
        elif ch == "\\":
            buf += ch
            escaped = True
        elif ch == sep:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None, resource: str | None = None) -> FieldSelector:
    """Parse ``?fieldSelector=``; ``resource`` restricts the fields to those it supports."""
    if not text:
        return FieldSelector()
    reqs = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(!=|==|=)\s*(.*)", part)
        if m is None:
            raise _bad(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.group(1).strip(), m.group(2), m.group(3)
        allowed = FIELDS.get(resource, _COMMON_FIELDS) if resource else None
        if allowed is not None and name not in allowed:
            raise _bad(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(tuple(reqs))
