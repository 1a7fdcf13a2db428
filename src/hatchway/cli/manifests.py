"""Resource types as the CLI names them (``po``, ``pods``, ``pod/NAME``, ``Pod``) and
manifests read from files (``-f FILE``, ``-f -``, ``-f DIR``): multi-document YAML,
JSON, and ``List`` objects."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from hatchway.errors import ConfigError

RBAC = "rbac.authorization.k8s.io"
COORDINATION = "coordination.k8s.io"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class ResourceType:
    """One kind of object the API server serves."""

    resource: str  # plural, the path segment
    kind: str
    group: str = ""
    namespaced: bool = True
    short: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        """``pod``, ``rolebinding.rbac.authorization.k8s.io``: what kubectl prints
        before ``/NAME`` and in ``TYPE "NAME" deleted``."""
        singular = self.kind.lower()
        return f"{singular}.{self.group}" if self.group else singular

    def names(self) -> set[str]:
        singular = self.kind.lower()
        words = {self.resource, singular, *self.short}
        if self.group:
            words |= {f"{w}.{self.group}" for w in (self.resource, singular)}
        words |= {f"{self.resource}.{self.api_version.replace('/', '.')}"}
        return words


TYPES = (
    ResourceType("pods", "Pod", short=("po",)),
    ResourceType("namespaces", "Namespace", namespaced=False, short=("ns",)),
    ResourceType("nodes", "Node", namespaced=False, short=("no",)),
    ResourceType("serviceaccounts", "ServiceAccount", short=("sa",)),
    ResourceType("events", "Event", short=("ev",)),
    ResourceType("roles", "Role", RBAC),
    ResourceType("rolebindings", "RoleBinding", RBAC),
    ResourceType("clusterroles", "ClusterRole", RBAC, namespaced=False),
    ResourceType("clusterrolebindings", "ClusterRoleBinding", RBAC, namespaced=False),
    ResourceType("leases", "Lease", COORDINATION),
)
_BY_NAME = {name: t for t in TYPES for name in t.names()}
_BY_KIND = {(t.group, t.kind): t for t in TYPES}


class UnknownResourceError(ConfigError):
    """The server has no resource type of that name."""

    def __init__(self, word: str) -> None:
        super().__init__(f'the server doesn\'t have a resource type "{word}"')
        self.word = word


def resource_type(word: str) -> ResourceType:
    """The type a command-line word names (case-insensitive, as kubectl)."""
    found = _BY_NAME.get(word.lower())
    if found is None:
        raise UnknownResourceError(word)
    return found


def type_of(obj: dict[str, Any], source: str) -> ResourceType:
    """The type of a manifest object, from its ``apiVersion`` and ``kind``."""
    kind = obj.get("kind")
    version = obj.get("apiVersion")
    name = (obj.get("metadata") or {}).get("name", "")
    if not isinstance(kind, str) or not kind or not isinstance(version, str) or not version:
        missing = "kind" if not kind else "apiVersion"
        raise ConfigError(f'error validating "{source}": {missing} not set in object "{name}"')
    group = version.rpartition("/")[0]
    found = _BY_KIND.get((group, kind))
    if found is None or version != found.api_version:
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        raise ConfigError(
            f'resource mapping not found for name: "{name}" namespace: "{namespace}" from '
            f'"{source}": no matches for kind "{kind}" in version "{version}"'
        )
    return found


# ------------------------------------------------------------------------ manifests


@dataclass
class Manifest:
    """One object from a file, with where it came from (for error messages)."""

    obj: dict[str, Any]
    source: str
    type: ResourceType

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")


def _files(path: str) -> list[str]:
    if path == "-" or not os.path.isdir(path):
        return [path]
    return sorted(
        os.path.join(path, f)
        for f in os.listdir(path)
        if f.endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(path, f))
    )


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f'the path "{path}" does not exist') from None
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError(f'cannot read "{path}": {why}') from None


def _documents(text: str, source: str) -> list[Any]:
    import yaml

    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f'error parsing "{source}"{where}: {problem}') from None


def _flatten(doc: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        raise ConfigError(f'error parsing "{source}": an object was expected, not {doc!r:.40}')
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        return [obj for item in doc["items"] for obj in _flatten(item, source)]
    return [doc]


def load_manifests(paths: list[str]) -> list[Manifest]:
    """Every object of every file (directories: their .yaml/.yml/.json files), in order."""
    manifests = []
    for given in paths:
        for path in _files(given):
            source = "STDIN" if path == "-" else path
            for doc in _documents(_read(path), source):
                for obj in _flatten(doc, source):
                    manifests.append(Manifest(obj, source, type_of(obj, source)))
    if not manifests:
        raise ConfigError("no objects passed to the command")
    return manifests


def object_namespace(manifest: Manifest, flag: str | None, default: str) -> str | None:
    """The namespace to send a manifest's object to (None for cluster-scoped types).
    A namespace in the object that differs from ``-n`` is an error, as in kubectl."""
    if not manifest.type.namespaced:
        return None
    own = (manifest.obj.get("metadata") or {}).get("namespace")
    if own and flag and own != flag:
        raise ConfigError(
            f'the namespace from the provided object "{own}" does not match the namespace '
            f"\"{flag}\". You must pass '--namespace={own}' to perform this operation."
        )
    return str(own or flag or default)
