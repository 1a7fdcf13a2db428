"""The layering of DESIGN.md, enforced: a module imports only from its own package and
from lower layers; siblings of layer 4 never import each other; the sans-I/O layers
import no I/O; only node/runtime* runs processes there; only cli/ touches argv/exit."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "hatchway"

LAYERS = {
    "errors": 0,
    "types": 0,
    "protocol": 1,
    "api": 1,
    "transport": 2,
    "store": 2,
    "session": 3,
    "rest": 3,
    "pki": 3,
    "apiserver": 4,
    "node": 4,
    "client": 4,
    "cli": 5,
}
SANS_IO = {"protocol", "api"}
FORBIDDEN_IN_SANS_IO = {"asyncio", "socket", "ssl", "subprocess", "time", "selectors", "threading"}


def _package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(path.relative_to(SRC).with_suffix("").parts[: -node.level])
                mod = ".".join(["hatchway", *base, *([node.module] if node.module else [])])
                found.append(mod)
            elif node.module:
                found.append(node.module)
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def check_module(path: pathlib.Path) -> list[str]:
    """Every layering violation of one module, as messages."""
    problems: list[str] = []
    pkg = _package_of(path)
    if pkg not in LAYERS:
        if path.parent == SRC and path.name in {"__init__.py", "__main__.py"}:
            return []
        return [f"{path}: package {pkg!r} has no layer in DESIGN.md"]
    layer = LAYERS[pkg]
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "hatchway":
            parts = name.split(".")
            if len(parts) == 1:
                continue
            target = parts[1]
            if target not in LAYERS:
                continue  # e.g. hatchway.__version__
            if target == pkg:
                continue
            if LAYERS[target] >= layer:
                problems.append(
                    f"{path}: {pkg} (layer {layer}) imports {name} (layer {LAYERS[target]})"
                )
        elif pkg in SANS_IO and top in FORBIDDEN_IN_SANS_IO:
            problems.append(f"{path}: sans-I/O package {pkg} imports {top}")
        elif (
            top == "subprocess"
            and pkg not in {"cli"}
            and not (pkg == "node" and path.name.startswith("runtime"))
        ):
            problems.append(f"{path}: only node/runtime* and cli/ run processes")
    source = path.read_text()
    if pkg != "cli" and ("sys.argv" in source or "sys.exit(" in source):
        problems.append(f"{path}: only cli/ reads argv or calls sys.exit")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layers(path: pathlib.Path) -> None:
    assert check_module(path) == []


def test_checker_catches_violations(tmp_path: pathlib.Path, monkeypatch) -> None:
    """The checker itself must be able to fail."""
    fake = tmp_path / "hatchway"
    (fake / "protocol").mkdir(parents=True)
    (fake / "node").mkdir()
    bad_upward = fake / "protocol" / "bad.py"
    bad_upward.write_text("import asyncio\nfrom hatchway.transport import base\n")
    bad_sibling = fake / "node" / "agent.py"
    bad_sibling.write_text("from hatchway.apiserver import app\nimport subprocess\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    up = check_module(bad_upward)
    assert any("imports asyncio" in p for p in up)
    assert any("imports hatchway.transport" in p for p in up)
    side = check_module(bad_sibling)
    assert any("hatchway.apiserver" in p for p in side)
    assert any("run processes" in p for p in side)


def test_there_are_modules() -> None:
    assert len(MODULES) >= 3
