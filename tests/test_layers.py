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


def _package_of(path: pathlib.Path, src: pathlib.Path) -> str:
    rel = path.relative_to(src)
    return rel.parts[0].removesuffix(".py")


def _resolve_relative(path: pathlib.Path, src: pathlib.Path, level: int, module: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``path``."""
    rel = list(path.relative_to(src).with_suffix("").parts)
    package = rel[:-1]  # the package the module is in (an __init__ is in its own package)
    base = package[: len(package) - (level - 1)] if level - 1 <= len(package) else None
    if base is None:
        return "<beyond the top of hatchway>"
    return ".".join(["hatchway", *base, *([module] if module else [])])


def _imports(path: pathlib.Path, src: pathlib.Path) -> list[str]:
    """Every module ``path`` imports, by absolute name, in every form: ``import a.b [as
    c]``, ``from a import b`` (as ``a.b``: b may be a module), relative imports, imports
    inside functions or under ``if``, and ``importlib.import_module("...")`` /
    ``__import__("...")`` with a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = _resolve_relative(path, src, node.level, node.module or "")
            else:
                mod = node.module or ""
            found.append(mod)
            found.extend(f"{mod}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(arg.value)
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def check_module(path: pathlib.Path, src: pathlib.Path = SRC) -> list[str]:
    """Every layering violation of one module under ``src`` (the hatchway package), as
    messages."""
    problems: list[str] = []
    pkg = _package_of(path, src)
    if pkg not in LAYERS:
        if path.parent == src and path.name in {"__init__.py", "__main__.py"}:
            return []
        return [f"{path}: package {pkg!r} has no layer in DESIGN.md"]
    layer = LAYERS[pkg]
    for name in dict.fromkeys(_imports(path, src)):
        top = name.split(".")[0]
        if name.startswith("<"):
            problems.append(f"{path}: a relative import reaches {name}")
        elif top == "hatchway":
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
            # A kubeconfig's exec credential plugin, which the library (Client.from_kubeconfig)
            # runs as client-go does, not only the CLI.
            and path.parts[-2:] != ("client", "credential_plugin.py")
        ):
            problems.append(
                f"{path}: only node/runtime*, client/credential_plugin.py and cli/ run processes"
            )
    source = path.read_text()
    # The container shim is a program of its own (run as a script by the runtime, standard
    # library only): its entry point reads its argv and exits; importing it does neither.
    standalone = path.parts[-2:] == ("node", "runtime_shim.py")
    if pkg != "cli" and not standalone and ("sys.argv" in source or "sys.exit(" in source):
        problems.append(f"{path}: only cli/ reads argv or calls sys.exit")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layers(path: pathlib.Path) -> None:
    assert check_module(path) == []


def test_checker_catches_violations(tmp_path: pathlib.Path) -> None:
    """The checker itself must be able to fail."""
    fake = tmp_path / "hatchway"
    (fake / "protocol").mkdir(parents=True)
    (fake / "node").mkdir()
    bad_upward = fake / "protocol" / "bad.py"
    bad_upward.write_text("import asyncio\nfrom hatchway.transport import base\n")
    bad_sibling = fake / "node" / "agent.py"
    bad_sibling.write_text("from hatchway.apiserver import app\nimport subprocess\n")
    up = check_module(bad_upward, fake)
    assert any("imports asyncio" in p for p in up)
    assert any("imports hatchway.transport" in p for p in up)
    side = check_module(bad_sibling, fake)
    assert any("hatchway.apiserver" in p for p in side)
    assert any("run processes" in p for p in side)


# Each source, written as node/agent.py, reaches the sibling apiserver (layer 4) or the
# CLI (layer 5) in one import form; each must be flagged.
BAD_FORMS = {
    "from-package": "from hatchway import apiserver\n",
    "from-package-as": "from hatchway import cli as c\n",
    "import-as": "import hatchway.apiserver.app as app\n",
    "import-plain": "import hatchway.cli.main\n",
    "relative-parent": "from .. import apiserver\n",
    "relative-sibling-module": "from ..apiserver import app\n",
    "relative-sibling-package": "from ..cli.main import main\n",
    "inside-function": "def f():\n    from hatchway import apiserver\n    return apiserver\n",
    "under-if": "import typing\nif typing.TYPE_CHECKING:\n    from hatchway import cli\n",
    "import-module": "import importlib\nm = importlib.import_module('hatchway.apiserver.app')\n",
    "dunder-import": "m = __import__('hatchway.cli')\n",
    "relative-too-far": "from .... import x\n",
}


def _check_as_node_agent(tmp_path: pathlib.Path, source: str) -> list[str]:
    """The checker's verdict on ``source`` as the module hatchway/node/agent.py of a
    synthetic tree."""
    fake = tmp_path / "hatchway"
    (fake / "node").mkdir(parents=True)
    module = fake / "node" / "agent.py"
    module.write_text(source)
    return check_module(module, fake)


@pytest.mark.parametrize("source", BAD_FORMS.values(), ids=BAD_FORMS.keys())
def test_checker_sees_every_import_form(tmp_path: pathlib.Path, source: str) -> None:
    assert _check_as_node_agent(tmp_path, source) != []


GOOD_FORMS = {
    "own-package-relative": "from . import runtime\nfrom .runtime import X\n",
    "lower-layer-relative": "from .. import errors\nfrom ..session import server\n",
    "lower-layer-from-package": "from hatchway import errors, protocol\n",
    "version": "from hatchway import __version__\n",
}


@pytest.mark.parametrize("source", GOOD_FORMS.values(), ids=GOOD_FORMS.keys())
def test_checker_allows_what_the_layering_allows(tmp_path: pathlib.Path, source: str) -> None:
    assert _check_as_node_agent(tmp_path, source) == []


def test_relative_import_in_a_package_init(tmp_path: pathlib.Path) -> None:
    """In ``node/__init__.py`` one dot is ``node`` itself, two are ``hatchway``."""
    fake = tmp_path / "hatchway"
    (fake / "node").mkdir(parents=True)
    init = fake / "node" / "__init__.py"
    init.write_text("from . import agent\n")
    assert check_module(init, fake) == []
    init.write_text("from .. import cli\n")
    assert check_module(init, fake) != []


def test_there_are_modules() -> None:
    assert len(MODULES) >= 3


def test_production_code_reads_no_test_variable() -> None:
    """Tests stretch the servers' timeouts through their configuration
    (``--timeout-scale``, ``ApiServerConfig.scaled``), never by an environment variable
    that production code would read."""
    readers = [p for p in SRC.rglob("*.py") if "HATCHWAY_TEST_" in p.read_text()]
    assert readers == []
