"""Namespace deletion as on Kubernetes: Terminating until its pods are gone.

``DELETE /api/v1/namespaces/NAME`` (:func:`terminate`) marks the namespace -- a
``deletionTimestamp``, ``status.phase: Terminating`` -- and answers with it (200), as
Kubernetes does. Its content goes at once where it holds nothing running (roles and
role bindings), and gracefully where it does: every pod is deleted as ``kubectl delete
pod`` would (``deletionTimestamp`` plus its grace period), so the node stops its
containers and then removes the pod. The namespace object itself is removed once no pod
is left: at once when it had none, else by the :class:`NamespaceController`, which runs
a pass when a pod or namespace changes and every ``interval`` seconds -- so a
Terminating namespace left by an API server restart finishes too.

While it terminates, nothing new may be created in it (:func:`check_not_terminating`,
NamespaceLifecycle's wording: ``pods "x" is forbidden: unable to create new content in
namespace NAME because it is being terminated``); updates of what is there still work,
so the node can report its pods' end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from hatchway.api import status
from hatchway.api.meta import format_time
from hatchway.api.status import StatusError
from hatchway.apiserver import pods
from hatchway.store.base import Store

log = logging.getLogger(__name__)

#: What a namespace's deletion removes at once: nothing runs for them.
IMMEDIATE = ("rolebindings", "roles", "serviceaccounts")


def is_terminating(namespace: dict[str, Any]) -> bool:
    return bool((namespace.get("metadata") or {}).get("deletionTimestamp"))


def check_not_terminating(namespace: dict[str, Any], resource: str, name: str, group: str) -> None:
    """403 for a create in a Terminating namespace (NamespaceLifecycle admission)."""
    if is_terminating(namespace):
        ns = namespace["metadata"]["name"]
        text = f"unable to create new content in namespace {ns} because it is being terminated"
        raise StatusError(status.forbidden_message(resource, name, text, group))


async def terminate(store: Store, name: str) -> dict[str, Any]:
    """Mark ``name`` Terminating, start removing its content, and return it as marked
    (already removed from the store when nothing was left running in it)."""
    namespace = await store.get("namespaces", "", name)
    if not is_terminating(namespace):
        namespace["metadata"]["deletionTimestamp"] = format_time(datetime.now(UTC))
        namespace.setdefault("status", {})["phase"] = "Terminating"
        namespace = await store.update(
            "namespaces", namespace, expect_rv=namespace["metadata"].get("resourceVersion")
        )
    await finish(store, namespace)
    return namespace


async def finish(store: Store, namespace: dict[str, Any]) -> bool:
    """One step of a Terminating namespace's end: remove what is immediate, delete its
    pods gracefully, and remove the namespace when no pod is left. True when gone."""
    name = namespace["metadata"]["name"]
    for resource in IMMEDIATE:
        items, _ = await store.list(resource, name)
        for obj in items:
            with contextlib.suppress(StatusError):  # gone meanwhile: fine
                await store.delete(resource, name, obj["metadata"]["name"])
    remaining, _ = await store.list("pods", name)
    for pod in remaining:
        if pod["metadata"].get("deletionTimestamp"):
            continue  # the node is stopping it
        try:
            await pods.delete_pod(store, name, pod["metadata"]["name"], None, None)
        except StatusError as exc:
            if exc.code != 404:
                raise
    remaining, _ = await store.list("pods", name)
    if remaining:
        return False
    try:
        await store.delete("namespaces", "", name)
    except StatusError as exc:
        if exc.code != 404:
            raise
    return True


class NamespaceController:
    """Finishes Terminating namespaces (see module docstring)."""

    def __init__(self, store: Store, *, interval: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run a pass soon (a pod or namespace changed)."""
        self._wake.set()

    async def pass_once(self) -> list[str]:
        """The Terminating namespaces removed by this pass."""
        namespaces, _ = await self.store.list("namespaces")
        gone = []
        for namespace in namespaces:
            if is_terminating(namespace) and await finish(self.store, namespace):
                gone.append(namespace["metadata"]["name"])
        return gone

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.pass_once()
            except (StatusError, OSError, RuntimeError):
                log.exception("namespace pass failed")
