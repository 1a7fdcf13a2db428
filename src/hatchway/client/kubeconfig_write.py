"""Writing kubeconfig files the way kind and kubectl do: merge one named cluster, user
and context into a file while keeping everything else as written, under client-go's
``<file>.lock`` lock file, replaced atomically, mode 0600."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from hatchway.client.kubeconfig_file import (
    dump_document,
    kubeconfig_paths,
    load_merged,
    read_document,
)
from hatchway.errors import ConfigError

LOCK_WAIT = 5.0


def default_write_path(env: Mapping[str, str] = os.environ) -> str:
    """The file kubectl and kind write to: the only ``KUBECONFIG`` entry, else its first
    existing one, else its last; without ``KUBECONFIG``, ``~/.kube/config``."""
    paths = kubeconfig_paths(None, env)
    if len(paths) == 1:
        return paths[0]
    for path in paths:
        if os.path.exists(path):
            return path
    return paths[-1]


def merge_context(
    kubeconfig_path: str | None,
    name: str,
    cluster: dict[str, Any],
    user: dict[str, Any],
    namespace: str | None = None,
    set_current: bool = True,
    *,
    env: Mapping[str, str] = os.environ,
) -> str:
    """Add or replace the cluster, user and context called ``name``; return the path
    written. Merging the same entries twice leaves the file unchanged."""
    path = kubeconfig_path or default_write_path(env)
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    with _locked(path):
        doc = _read_for_update(path)
        _upsert(doc, "clusters", "cluster", name, dict(cluster))
        _upsert(doc, "users", "user", name, dict(user))
        _upsert(doc, "contexts", "context", name, context)
        if set_current:
            doc["current-context"] = name
        write_document(path, doc)
    return path


def remove_context(path: str | None, name: str, *, env: Mapping[str, str] = os.environ) -> bool:
    """Remove context ``name`` and the cluster and user it names when no other context
    uses them; clear ``current-context`` if it was ``name``. False if there was no such
    context (the file is not touched)."""
    path = path or default_write_path(env)
    with _locked(path):
        doc = read_document(path)
        if not doc:
            return False
        contexts = _named(doc, "contexts")
        gone = next((c for c in contexts if c.get("name") == name), None)
        if gone is None:
            return False
        contexts.remove(gone)
        body = gone.get("context") or {}
        for key, plural in (("cluster", "clusters"), ("user", "users")):
            ref = body.get(key)
            if ref and not any((c.get("context") or {}).get(key) == ref for c in contexts):
                doc[plural] = [e for e in _named(doc, plural) if e.get("name") != ref]
        if doc.get("current-context") == name:
            doc["current-context"] = ""
        write_document(path, doc)
    return True


def use_context(path: str | None, name: str, *, env: Mapping[str, str] = os.environ) -> str:
    """Set ``current-context``; the context must exist in the (merged) kubeconfig."""
    merged = load_merged(path, env=env, allow_missing=True)
    if name not in merged.contexts:
        raise ConfigError(f'no context exists with the name: "{name}"')
    target = path or default_write_path(env)
    with _locked(target):
        doc = _read_for_update(target)
        doc["current-context"] = name
        write_document(target, doc)
    return target


def write_document(path: str, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``doc``, mode 0600; follows a symlinked path."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    text = dump_document(doc).encode()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kubeconfig-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """client-go's lock: ``<file>.lock`` created exclusively, removed afterwards, so
    kubectl and we never write the same kubeconfig at once."""
    lock = os.path.realpath(path) + ".lock"
    os.makedirs(os.path.dirname(lock), mode=0o700, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"kubeconfig {path} is locked ({lock} exists); "
                    "remove the lock file if no other program is writing"
                ) from None
            time.sleep(0.05)
    os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


def _read_for_update(path: str) -> dict[str, Any]:
    doc = read_document(path)
    if not doc:
        return {
            "apiVersion": "v1",
            "clusters": [],
            "contexts": [],
            "current-context": "",
            "kind": "Config",
            "preferences": {},
            "users": [],
        }
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    return doc


def _named(doc: dict[str, Any], plural: str) -> list[dict[str, Any]]:
    items = doc.get(plural)
    if items is None:
        items = doc[plural] = []
    if not isinstance(items, list):
        raise ConfigError(f"kubeconfig: {plural} must be a list")
    return items


def _upsert(doc: dict[str, Any], plural: str, singular: str, name: str, body: dict) -> None:
    items = _named(doc, plural)
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            item[singular] = body
            return
    items.append({"name": name, singular: body})
