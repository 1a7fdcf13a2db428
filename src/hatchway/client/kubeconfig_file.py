"""Reading and merging kubeconfig files as client-go does: the file layer under
``kubeconfig`` (which is the public face)."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

from hatchway.client import kubeconfig_yaml
from hatchway.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import yaml

# Keys holding paths, per section, resolved against the holding file's directory.
_PATH_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class MergedConfig:
    """The merged view of one or more kubeconfig files (file references resolved
    against their file's directory unless loaded with resolve_paths=False). A plain
    class: a dataclass costs ~1 ms to build at import, on every ``hatchway exec``."""

    def __init__(
        self,
        files: list[str],
        clusters: dict[str, dict[str, Any]] | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        contexts: dict[str, dict[str, Any]] | None = None,
        current_context: str = "",
        preferences: dict[str, Any] | None = None,
    ) -> None:
        self.files = files
        self.clusters = {} if clusters is None else clusters
        self.users = {} if users is None else users
        self.contexts = {} if contexts is None else contexts
        self.current_context = current_context
        self.preferences = {} if preferences is None else preferences

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.files,
            self.clusters,
            self.users,
            self.contexts,
            self.current_context,
            self.preferences,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MergedConfig):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MergedConfig(files={self.files!r}, current_context={self.current_context!r})"

    def section(self, plural: str) -> dict[str, dict[str, Any]]:
        return {"clusters": self.clusters, "users": self.users, "contexts": self.contexts}[plural]


# ---------------------------------------------------------------------------- files


def home_dir(env: Mapping[str, str] = os.environ) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def kubeconfig_paths(path: str | None = None, env: Mapping[str, str] = os.environ) -> list[str]:
    """The files kubectl would read, in precedence order."""
    if path:
        return [path]
    listed = env.get("KUBECONFIG", "")
    if listed:
        seen: list[str] = []
        for item in listed.split(os.pathsep):
            if item and item not in seen:
                seen.append(item)
        if seen:
            return seen
    return [os.path.join(home_dir(env), ".kube", "config")]


def read_document(path: str) -> dict[str, Any] | None:
    """One kubeconfig file as a mapping; None if it does not exist."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read kubeconfig {path}: {e.strerror or e}") from None
    doc = _fast_load(raw)
    if doc is not None:
        return doc
    import yaml  # only when the fast reader is unsure: it costs ~15 ms to import

    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"kubeconfig {path} is not valid YAML{_yaml_where(e)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping at the top level")
    return doc


def _fast_load(raw: bytes) -> dict[str, Any] | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return kubeconfig_yaml.load(text)


def _yaml_where(e: yaml.YAMLError) -> str:
    # The problem text and the position only: the default str() quotes the offending
    # line, which can be a token or a key.
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or "parse error"
    if mark is None:
        return f": {problem}"
    return f": {problem} (line {mark.line + 1}, column {mark.column + 1})"


def _entries(
    doc: dict[str, Any], plural: str, singular: str, path: str, resolve: bool
) -> dict[str, dict]:
    """A named list of one file as a mapping; duplicate names are an error, as in
    client-go's conversion."""
    items = doc.get(plural) or []
    if not isinstance(items, list):
        raise ConfigError(f"kubeconfig {path}: {plural} must be a list")
    out: dict[str, dict] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"kubeconfig {path}: every entry of {plural} needs a name")
        body = item.get(singular) or {}
        if not isinstance(body, dict):
            raise ConfigError(f'kubeconfig {path}: {singular} "{item["name"]}" is not a mapping')
        if item["name"] in out:
            raise ConfigError(f'kubeconfig {path}: duplicate name "{item["name"]}" in {plural}')
        body = dict(body)
        out[item["name"]] = _resolve_paths(body, singular, path) if resolve else body
    return out


def _resolve_paths(body: dict[str, Any], singular: str, path: str) -> dict[str, Any]:
    base = os.path.dirname(os.path.abspath(path))
    for key in _PATH_KEYS.get(singular, ()):
        value = body.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            body[key] = os.path.abspath(os.path.join(base, value))
    plugin = body.get("exec") if singular == "user" else None
    if isinstance(plugin, dict):
        # An exec plugin's command is a file reference only when it has a separator;
        # a bare name is looked up on PATH (client-go's GetAuthInfoFileReferences).
        command = plugin.get("command")
        if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
            body["exec"] = {**plugin, "command": os.path.abspath(os.path.join(base, command))}
    return body


def load_merged(
    path: str | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    allow_missing: bool = False,
    resolve_paths: bool = True,
) -> MergedConfig:
    """Read and merge the kubeconfig files kubectl would read. ``resolve_paths=False``
    keeps file references as written (what ``kubectl config view`` shows)."""
    files = kubeconfig_paths(path, env)
    merged = MergedConfig(files=files)
    missing = 0
    for name in files:
        doc = read_document(name)
        if doc is None:
            if path:
                if allow_missing:
                    continue
                raise ConfigError(f"kubeconfig {name} does not exist")
            missing += 1
            continue
        _merge_into(merged, doc, name, resolve_paths)
    if missing == len(files) and not allow_missing:
        raise ConfigError(f"no kubeconfig found (looked for {os.pathsep.join(files)})")
    return merged


def _merge_into(merged: MergedConfig, doc: dict[str, Any], path: str, resolve: bool) -> None:
    for plural, singular in _SECTIONS:
        target = merged.section(plural)
        for name, body in _entries(doc, plural, singular, path, resolve).items():
            target.setdefault(name, body)
    current = doc.get("current-context")
    if not merged.current_context and isinstance(current, str):
        merged.current_context = current
    prefs = doc.get("preferences")
    if not merged.preferences and isinstance(prefs, dict):
        merged.preferences = prefs


def encode_data(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def dump_document(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)


def to_document(merged: MergedConfig) -> dict[str, Any]:
    """The merged config as a kubeconfig document, entries sorted by name."""

    def named(section: dict[str, dict[str, Any]], singular: str) -> list[dict[str, Any]]:
        return [{"name": k, singular: dict(section[k])} for k in sorted(section)]

    return {
        "apiVersion": "v1",
        "clusters": named(merged.clusters, "cluster"),
        "contexts": named(merged.contexts, "context"),
        "current-context": merged.current_context,
        "kind": "Config",
        "preferences": dict(merged.preferences),
        "users": named(merged.users, "user"),
    }
