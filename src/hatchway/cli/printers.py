"""Output of ``get`` as kubectl prints it: the server's Table (``-o wide`` adds the
columns of priority > 0), ``-o json|yaml|name|jsonpath=…``. Strings from the server
are printed with control characters escaped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hatchway.cli.escape import escape_control
from hatchway.cli.manifests import ResourceType
from hatchway.errors import ConfigError

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
FORMATS = ("wide", "json", "yaml", "name")
#: kubectl's tabwriter: minimum cell width 6, padding 3.
MIN_WIDTH, PADDING = 6, 3


def check_format(output: str | None) -> None:
    if output is None or output in FORMATS or output.startswith(("jsonpath=", "jsonpath-as-json=")):
        return
    allowed = ", ".join([*FORMATS, "jsonpath"])
    raise ConfigError(
        f'unable to match a printer suitable for the output format "{output}", '
        f"allowed formats are: {allowed}"
    )


@dataclass
class Section:
    """Rows of one resource type: one Table and the objects it shows."""

    type: ResourceType
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add_table(self, table: dict[str, Any]) -> None:
        if not self.columns:
            self.columns = list(table.get("columnDefinitions") or [])
        self.rows.extend(table.get("rows") or [])


def _cell(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape_control(str(value))


def align(rows: list[list[str]]) -> str:
    """Columns padded as Go's tabwriter with kubectl's settings; the last column is not
    padded."""
    if not rows:
        return ""
    count = max(len(r) for r in rows)
    widths = [
        max(MIN_WIDTH, max(len(r[i]) for r in rows if i < len(r)) + PADDING)
        for i in range(count - 1)
    ]
    lines = []
    for row in rows:
        cells = [c.ljust(widths[i]) if i < count - 1 else c for i, c in enumerate(row)]
        lines.append("".join(cells).rstrip() if len(row) < count else "".join(cells))
    return "\n".join(lines) + "\n"


def format_table(
    section: Section, *, wide: bool, with_namespace: bool, with_kind: bool, labels: bool = False
) -> str:
    shown = [i for i, c in enumerate(section.columns) if wide or not c.get("priority")]
    header = [str(section.columns[i].get("name", "")).upper() for i in shown]
    if with_namespace:
        header.insert(0, "NAMESPACE")
    if labels:
        header.append("LABELS")
    lines = [header]
    for row in section.rows:
        cells = row.get("cells") or []
        out = [_cell(cells[i]) if i < len(cells) else "" for i in shown]
        if with_kind and out:
            out[0] = f"{section.type.qualified}/{out[0]}"
        if with_namespace:
            meta = (row.get("object") or {}).get("metadata") or {}
            out.insert(0, _cell(meta.get("namespace", "")))
        if labels:
            pairs = ((row.get("object") or {}).get("metadata") or {}).get("labels") or {}
            out.append(_cell(",".join(f"{k}={v}" for k, v in sorted(pairs.items())) or "<none>"))
        lines.append(out)
    return align(lines)


def _with_kind(obj: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    if "kind" in obj and "apiVersion" in obj:
        return obj
    return {"apiVersion": rtype.api_version, "kind": rtype.kind, **obj}


def as_document(objects: list[tuple[ResourceType, dict[str, Any]]], single: bool) -> Any:
    """One object as itself, several as a ``List`` as kubectl shows them."""
    items = [_with_kind(obj, t) for t, obj in objects]
    if single and len(items) == 1:
        return items[0]
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def format_objects(
    objects: list[tuple[ResourceType, dict[str, Any]]], output: str, single: bool
) -> str:
    """``-o json|yaml|name|jsonpath=…`` of the objects fetched."""
    if output == "name":
        return "".join(
            f"{t.qualified}/{escape_control(str((o.get('metadata') or {}).get('name', '')))}\n"
            for t, o in objects
        )
    doc = as_document(objects, single)
    if output == "json":
        return json.dumps(doc, indent=4, sort_keys=True) + "\n"
    if output == "yaml":
        return dump_yaml(doc)
    if output.startswith("jsonpath-as-json="):
        from hatchway.cli.jsonpath import evaluate

        return json.dumps(evaluate(output.partition("=")[2], doc), indent=4) + "\n"
    from hatchway.cli.jsonpath import render

    return escape_control(render(output.partition("=")[2], doc))


def dump_yaml(doc: Any) -> str:
    """YAML as kubectl writes it: sorted keys, block style, double-quoted strings where
    quotes are needed."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def choose_scalar_style(self) -> Any:
            style = super().choose_scalar_style()
            return '"' if style == "'" else style

    return str(
        yaml.dump(doc, Dumper=Dumper, default_flow_style=False, sort_keys=True, allow_unicode=True)
    )
