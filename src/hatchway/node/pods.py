"""Pod lifecycle on the node, on top of :class:`~hatchway.node.runtime.RuncRuntime`.

:class:`PodManager` is given the desired set of pods (Kubernetes JSON dicts) with
:meth:`PodManager.reconcile`; each pod gets a worker task that creates the sandbox and the
containers, starts them, restarts them per ``restartPolicy`` with exponential back-off
(kubelet: 10 s doubling to 300 s; configurable), and computes the pod status as the kubelet
does (phase, conditions, containerStatuses). Status changes are pushed to ``on_status`` as
``{"apiVersion": "v1", "kind": "Pod", "metadata": {namespace, name, uid}, "status": ...}``.

A pod that leaves the desired set, or carries ``metadata.deletionTimestamp``, is stopped
with its grace period (SIGTERM, then SIGKILL after ``deletionGracePeriodSeconds`` or
``spec.terminationGracePeriodSeconds``, default 30) and forgotten. Stopping runs in its
own task: one pod that ignores SIGTERM never holds up the others.

Pods are keyed by uid everywhere (issue 9): a new pod with the name of one still
stopping is another pod, with its own sandbox, containers, state file and volumes, and
lookups that name a uid never find the other one. A pod whose uid is not a canonical
UUID is refused (defence in depth: the API server hands out only those).

What each pod was given (sandbox and container ids, restart counts, last terminations)
is kept by :class:`~hatchway.node.pod_state.PodStateDir` in ``<state_dir>/<uid>.json``;
:meth:`PodManager.start` re-adopts those pods and their containers from the runtime after
an agent restart (and migrates the ``<namespace>_<name>.json`` files of earlier versions).

A restarted container's log is kept as its previous instance's (one restart deep, as the
kubelet keeps it): :meth:`PodManager.log_source` answers ``logs`` and ``logs --previous``
with the kubelet's rules and 400 texts (``validateContainerLogStatus``, protocol.md 9.3).

Not done: init containers, probes (a running container is ready), volumes other than
emptyDir and hostPath, image pulls (images come from the node's store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.api.events import NORMAL, WARNING, container_path
from hatchway.errors import ContainerRuntimeError, HatchwayError
from hatchway.node.logs import LogUnavailableError
from hatchway.node.paths import is_uid
from hatchway.node.pod_state import PodStateDir
from hatchway.node.runtime import ContainerNotFoundError, ContainerState, RuncRuntime
from hatchway.node.runtime_image import ImageNotFoundError, ImageStore
from hatchway.node.runtime_spec import SpecError

log = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], Awaitable[Any]]
#: ``(pod, reason, message, type, fieldPath)``: one event about the pod.
EventCallback = Callable[[dict[str, Any], str, str, str, str], None]


def rfc3339(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class _Container:
    """What the manager knows about one container of a pod across restarts."""

    name: str
    id: str = ""
    restart_count: int = 0
    last_terminated: dict[str, Any] | None = None
    waiting: tuple[str, str] = ("ContainerCreating", "")
    next_start: float = 0.0
    failures: int = 0  # consecutive create failures (image missing, bad spec)
    #: The log of the instance before this one (``logs --previous``), if kept.
    previous_log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "restartCount": self.restart_count,
            "lastTerminated": self.last_terminated,
            "previousLog": self.previous_log,
        }


@dataclass
class _Pod:
    pod: dict[str, Any]
    sandbox_id: str = ""
    containers: dict[str, _Container] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    status: dict[str, Any] = field(default_factory=dict)
    transitions: dict[str, tuple[str, float]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The task stopping the pod, once it is being removed, and when (monotonic) its
    #: grace period ends; a later delete may bring that forward, never push it back.
    stopping: asyncio.Task[None] | None = None
    kill_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        """Namespace and name: for messages and uid-less lookups, never as an identity."""
        meta = self.pod.get("metadata") or {}
        return str(meta.get("namespace") or "default"), str(meta.get("name") or "")

    @property
    def uid(self) -> str:
        return _uid(self.pod)

    @property
    def specs(self) -> list[dict[str, Any]]:
        return list((self.pod.get("spec") or {}).get("containers") or [])

    @property
    def policy(self) -> str:
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")


class AmbiguousPodError(HatchwayError):
    """A lookup without a uid matched more than one pod of that namespace and name."""


class PodManager:
    """Runs the node's pods. ``start()`` first (re-adopts), then ``reconcile()`` as the
    desired set changes; ``close()`` stops the workers and leaves containers running.

    Lookups (:meth:`find_pod` and the methods built on it) take ``namespace, name`` and
    a ``uid``; without a uid they answer only when exactly one pod has that name."""

    def __init__(
        self,
        runtime: RuncRuntime,
        images: ImageStore,
        *,
        on_status: StatusCallback | None = None,
        on_event: EventCallback | None = None,
        state_dir: str | None = None,
        backoff_initial: float = 10.0,
        backoff_max: float = 300.0,
        poll_interval: float = 0.5,
        host_ip: str = "",
    ) -> None:
        self.runtime = runtime
        self.images = images
        self.on_status = on_status
        #: ``(pod, reason, message, type, fieldPath)`` for each event (never awaited).
        self.on_event = on_event
        self.state_dir = state_dir or os.path.join(runtime.root_dir, "pods")
        self.state = PodStateDir(self.state_dir)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.host_ip = host_ip
        self._pods: dict[str, _Pod] = {}  # by uid
        self._lock = asyncio.Lock()

    # --- public API -------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt the pods persisted by a previous run and their containers; remove
        containers no pod owns."""
        known = {st.id: st for st in await self.runtime.list()}
        owned: set[str] = set()
        for uid, doc in self.state.load_all().items():
            p = _load(doc, known)
            owned |= {p.sandbox_id} | {c.id for c in p.containers.values()}
            self._pods[uid] = p
        for cid in set(known) - owned:
            with contextlib.suppress(HatchwayError):
                await self.runtime.delete(cid, force=True)
        for p in self._pods.values():
            self._spawn(p)

    async def reconcile(self, pods: Iterable[Mapping[str, Any]], *, wait: bool = True) -> None:
        """Make the node run exactly ``pods`` (the ones bound to it). Pods to stop are
        stopped in tasks of their own; with ``wait`` this returns once they are gone."""
        async with self._lock:
            desired = _by_uid(pods)
            stopping = []
            for uid, pod in desired.items():
                p = self._pods.get(uid)
                if (pod.get("metadata") or {}).get("deletionTimestamp"):
                    if p is not None:
                        stopping.append(self._terminate(p, _grace(pod)))
                    continue
                if p is None:
                    p = self._pods[uid] = _Pod(pod=pod)
                    self._spawn(p)
                elif p.stopping is None:
                    p.pod = pod
            for uid, p in list(self._pods.items()):
                if uid not in desired:
                    stopping.append(self._terminate(p, _grace(p.pod)))
        if wait and stopping:
            await asyncio.gather(*stopping, return_exceptions=True)

    async def delete_pod(
        self, namespace: str, name: str, grace_period: float | None = None, uid: str = ""
    ) -> None:
        """Stop a pod (SIGTERM, SIGKILL after the grace period) and forget it."""
        async with self._lock:
            p = self.find_pod(namespace, name, uid)
            if p is None:
                return
            task = self._terminate(p, _grace(p.pod) if grace_period is None else grace_period)
        await asyncio.gather(task, return_exceptions=True)

    async def wait_stopped(self, uid: str) -> None:
        """Return once pod ``uid`` is no longer being stopped (at once if it is not)."""
        p = self._pods.get(uid)
        if p is not None and p.stopping is not None:
            await asyncio.gather(asyncio.shield(p.stopping), return_exceptions=True)

    async def close(self) -> None:
        """Stop the workers; containers keep running (the next start() adopts them)."""
        for p in list(self._pods.values()):
            await _cancel(p.task)
            await _cancel(p.stopping)

    def find_pod(self, namespace: str, name: str, uid: str = "") -> _Pod | None:
        """The pod with this ``uid`` if it has this namespace and name; without a uid,
        the one pod of that name (AmbiguousPodError if several: one is still stopping)."""
        if uid:
            p = self._pods.get(uid)
            return p if p is not None and p.key == (namespace, name) else None
        found = [p for p in self._pods.values() if p.key == (namespace, name)]
        if len(found) > 1:
            raise AmbiguousPodError(
                f"{len(found)} pods named {namespace}/{name} on this node: name the pod's uid"
            )
        return found[0] if found else None

    def pods_named(self, namespace: str, name: str) -> list[str]:
        """The uids of the pods with this namespace and name (stopping ones included)."""
        return [uid for uid, p in self._pods.items() if p.key == (namespace, name)]

    def pod_status(self, namespace: str, name: str, uid: str = "") -> dict[str, Any] | None:
        p = self.find_pod(namespace, name, uid)
        return None if p is None else p.status

    def find_container(self, namespace: str, pod: str, container: str, uid: str = "") -> str | None:
        """The runtime id of the container's current instance, if it has one."""
        p = self.find_pod(namespace, pod, uid)
        c = p.containers.get(container) if p is not None else None
        return c.id if c is not None and c.id else None

    async def sandbox_pid(self, namespace: str, pod: str, uid: str = "") -> int:
        """The pid of the pod's sandbox init (the holder of its network namespace, for
        port-forward), 0 when the pod has no running sandbox."""
        p = self.find_pod(namespace, pod, uid)
        if p is None or not p.sandbox_id:
            return 0
        return await self.runtime.init_pid(p.sandbox_id)

    async def container_running(
        self, namespace: str, pod: str, container: str, uid: str = ""
    ) -> bool:
        cid = self.find_container(namespace, pod, container, uid)
        if cid is None:
            return False
        try:
            return (await self.runtime.state(cid)).running
        except ContainerNotFoundError:
            return False

    async def log_source(
        self, namespace: str, pod: str, container: str, uid: str = "", *, previous: bool = False
    ) -> tuple[str, str]:
        """Which log ``logs`` (or ``logs --previous``) reads: ``(container id, "")`` for
        the current instance's, ``("", path)`` for the previous one's. Raises
        :class:`LogUnavailableError` with the kubelet's text where there is none."""
        p = self.find_pod(namespace, pod, uid)
        if p is None or container not in {s.get("name") for s in p.specs}:
            raise LogUnavailableError(f'container "{container}" in pod "{pod}" is not available')
        c = p.containers.get(container) or _Container(container)  # (not looked at yet)
        kept = c.previous_log if _is_file(c.previous_log) else ""
        if previous:
            if not kept:
                raise LogUnavailableError(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            return "", kept
        st: ContainerState | None = None
        if c.id:
            with contextlib.suppress(ContainerNotFoundError):
                st = await self.runtime.state(c.id)
        if st is not None and st.status in ("running", "exited"):
            return st.id, ""
        if kept and c.last_terminated:  # (between an instance's end and the next)
            return "", kept
        reason = c.waiting[0] or "ContainerCreating"
        why = {
            "ErrImagePull": "image can't be pulled",
            "ImagePullBackOff": "trying and failing to pull image",
        }.get(reason, reason)
        raise LogUnavailableError(
            f'container "{container}" in pod "{pod}" is waiting to start: {why}'
        )

    # --- workers ----------------------------------------------------------------------

    def _spawn(self, p: _Pod) -> None:
        p.task = asyncio.ensure_future(self._run(p))

    async def _run(self, p: _Pod) -> None:
        while True:
            try:
                await self._step(p)
                await self._publish(p)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod %s/%s: sync failed", *p.key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wake.wait(), self.poll_interval)
            p.wake.clear()

    async def _step(self, p: _Pod) -> None:
        if p.status.get("phase") in ("Succeeded", "Failed"):
            if p.sandbox_id:
                await self._stop_sandbox(p)
            return
        if not await self._sandbox_ready(p):
            return
        for spec in p.specs:
            c = p.containers.setdefault(spec["name"], _Container(spec["name"]))
            await self._sync_container(p, spec, c)

    async def _sandbox_ready(self, p: _Pod) -> bool:
        if p.sandbox_id:
            with contextlib.suppress(ContainerNotFoundError):
                if (await self.runtime.state(p.sandbox_id)).running:
                    return True
            # The pod's namespaces are gone: like the kubelet, start the pod over (the
            # containers are recreated, each counted as a restart).
            await self._stop_sandbox(p)
            for c in p.containers.values():
                if c.id:
                    await self._retire(p, c)
                    c.id, c.restart_count, c.next_start = "", c.restart_count + 1, 0.0
        try:
            p.sandbox_id = await self.runtime.create_sandbox(p.pod)
        except HatchwayError as e:
            for spec in p.specs:
                c = p.containers.setdefault(spec["name"], _Container(spec["name"]))
                c.waiting = ("ContainerCreating", f"pod sandbox: {e}")
            return False
        self._save(p)
        return True

    async def _stop_sandbox(self, p: _Pod) -> None:
        with contextlib.suppress(HatchwayError):
            await self.runtime.delete(p.sandbox_id, force=True)
        p.sandbox_id = ""
        self._save(p)

    async def _sync_container(self, p: _Pod, spec: dict[str, Any], c: _Container) -> None:
        now = time.time()
        if c.id:
            try:
                st = await self.runtime.state(c.id)
            except ContainerNotFoundError:
                c.id = ""
            else:
                if st.status != "exited" or not self._restarts(p, st):
                    return
                if c.next_start == 0:
                    c.last_terminated = _terminated(st)
                    c.next_start = now + self._backoff(c.restart_count)
                    c.waiting = ("CrashLoopBackOff", _crash_message(c, spec))
                    self._save(p)
                    name, ns = p.key[1], p.key[0]
                    text = (
                        f"Back-off restarting failed container {c.name} in pod {name}_{ns}({p.uid})"
                    )
                    self._event(p, "BackOff", text, WARNING, c.name)
                if now < c.next_start:
                    return
                await self._retire(p, c)
                c.id, c.restart_count = "", c.restart_count + 1
        if now >= c.next_start:
            await self._create(p, spec, c)

    async def _retire(self, p: _Pod, c: _Container) -> None:
        """Delete the container's instance before its restart, keeping its log as the
        previous instance's (replacing the one kept before)."""
        with contextlib.suppress(HatchwayError, TimeoutError):
            await self.runtime.kill(c.id, "KILL")
            await self.runtime.wait_exit(c.id, timeout=10)
        c.previous_log = self.runtime.keep_previous_log(c.id, f"{p.uid}_{c.name}") or ""
        with contextlib.suppress(HatchwayError):
            await self.runtime.delete(c.id, force=True)
        self._save(p)

    async def _create(self, p: _Pod, spec: dict[str, Any], c: _Container) -> None:
        try:
            await asyncio.to_thread(self.images.get, str(spec.get("image")))
            cid = await self.runtime.create_container(
                p.pod, spec, sandbox_id=p.sandbox_id, volumes=self._volumes(p)
            )
        except ImageNotFoundError as e:
            reason = "ImagePullBackOff" if c.failures else "ErrImageNotFound"
            image = spec.get("image")
            if c.failures:
                self._event(p, "BackOff", f'Back-off pulling image "{image}"', WARNING, c.name)
            else:
                self._event(p, "Failed", f'Failed to pull image "{image}": {e}', WARNING, c.name)
            return self._create_failed(c, reason, str(e))
        except SpecError as e:
            self._event(p, "Failed", f"Error: {e}", WARNING, c.name)
            return self._create_failed(c, "CreateContainerConfigError", str(e))
        except ContainerRuntimeError as e:
            self._event(p, "Failed", f"Error: {e}", WARNING, c.name)
            return self._create_failed(c, "CreateContainerError", str(e))
        c.id, c.failures, c.next_start = cid, 0, 0.0
        c.waiting = ("ContainerCreating", "")
        self._save(p)
        image = spec.get("image")
        self._event(
            p, "Pulled", f'Container image "{image}" already present on machine', container=c.name
        )
        self._event(p, "Created", f"Created container: {c.name}", container=c.name)
        await self.runtime.start(cid)
        self._event(p, "Started", f"Started container {c.name}", container=c.name)

    def _event(
        self, p: _Pod, reason: str, message: str, type_: str = NORMAL, container: str = ""
    ) -> None:
        if self.on_event is None:
            return
        init = any(
            s.get("name") == container
            for s in (p.pod.get("spec") or {}).get("initContainers") or ()
        )
        path = container_path(container, init) if container else ""
        try:
            self.on_event(p.pod, reason, message, type_, path)
        except Exception:  # an event must never break the pod's worker
            log.exception("event %s for %s/%s not emitted", reason, *p.key)

    def _volumes(self, p: _Pod) -> dict[str, str]:
        """Host directories of the pod's emptyDir and hostPath volumes."""
        found = {}
        for vol in (p.pod.get("spec") or {}).get("volumes") or []:
            if "hostPath" in vol:
                found[vol["name"]] = str(vol["hostPath"].get("path"))
            elif "emptyDir" in vol:
                found[vol["name"]] = self.state.volume_dir(p.uid, vol["name"])
        return found

    def _create_failed(self, c: _Container, reason: str, message: str) -> None:
        c.waiting = (reason, message)
        c.next_start = time.time() + self._backoff(c.failures)
        c.failures += 1

    def _restarts(self, p: _Pod, st: ContainerState) -> bool:
        return p.policy == "Always" or (p.policy == "OnFailure" and st.exit_code != 0)

    def _backoff(self, count: int) -> float:
        return min(self.backoff_initial * (2 ** min(count, 30)), self.backoff_max)

    # --- status -----------------------------------------------------------------------

    async def _publish(self, p: _Pod) -> None:
        status = await self._compute(p)
        if status == p.status:
            return
        p.status = status
        if self.on_status is not None:
            meta = p.pod.get("metadata") or {}
            obj = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {k: meta.get(k) for k in ("namespace", "name", "uid")},
                "status": status,
            }
            try:
                await self.on_status(obj)
            except Exception:
                log.exception("pod %s/%s: status callback failed", *p.key)

    async def _compute(self, p: _Pod) -> dict[str, Any]:
        statuses = [await self._container_status(p, s) for s in p.specs]
        phase = _phase(statuses, p.policy)
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        conditions = [
            self._condition(p, "PodScheduled", True),
            self._condition(p, "Initialized", True),
            self._condition(p, "ContainersReady", ready),
            self._condition(p, "Ready", ready),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "startTime": rfc3339(p.start_time),
            "containerStatuses": statuses,
            "qosClass": qos_class(p.specs),
        }
        if self.host_ip:
            status["hostIP"] = self.host_ip
            if (p.pod.get("spec") or {}).get("hostNetwork"):
                status["podIP"] = self.host_ip
        return status

    def _condition(self, p: _Pod, kind: str, ok: bool) -> dict[str, Any]:
        value = "True" if ok else "False"
        old = p.transitions.get(kind)
        if old is None or old[0] != value:
            p.transitions[kind] = old = (value, time.time())
        cond: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(old[1]),
        }
        if not ok and kind in ("Ready", "ContainersReady"):
            cond["reason"] = "ContainersNotReady"
        return cond

    async def _container_status(self, p: _Pod, spec: dict[str, Any]) -> dict[str, Any]:
        c = p.containers.get(spec["name"]) or _Container(spec["name"])
        st: ContainerState | None = None
        if c.id:
            with contextlib.suppress(ContainerNotFoundError):
                st = await self.runtime.state(c.id)
        state: dict[str, Any]
        if st is not None and st.running:
            state = {"running": {"startedAt": rfc3339(st.started_at)}}
        elif st is not None and st.status == "exited" and not self._restarts(p, st):
            state = {"terminated": _terminated(st)}
        else:
            reason, message = c.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        running = "running" in state
        out = {
            "name": spec["name"],
            "state": state,
            "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
            "ready": running,
            "restartCount": c.restart_count,
            "image": spec.get("image", ""),
            "imageID": "",
            "started": running,
        }
        if c.id:
            out["containerID"] = f"runc://{c.id}"
        return out

    # --- deletion and persistence -----------------------------------------------------

    def _terminate(self, p: _Pod, grace: float) -> asyncio.Task[None]:
        """The task stopping ``p`` (started now unless it already runs; a shorter grace
        period than the running one's shortens it)."""
        kill_at = time.monotonic() + max(grace, 0)
        if p.stopping is None:
            p.kill_at = kill_at
            p.stopping = asyncio.ensure_future(self._remove(p))
        p.kill_at = min(p.kill_at, kill_at)
        return p.stopping

    async def _remove(self, p: _Pod) -> None:
        await _cancel(p.task)
        ids = [c.id for c in p.containers.values() if c.id]
        for c in p.containers.values():
            if c.id:
                self._event(p, "Killing", f"Stopping container {c.name}", container=c.name)
        await asyncio.gather(*(self._stop(cid, p) for cid in ids))
        for cid in [*ids, p.sandbox_id]:
            if cid:
                with contextlib.suppress(HatchwayError):
                    await self.runtime.delete(cid, force=True)
        self.runtime.drop_previous_logs(p.uid)
        try:
            self.state.remove(p.uid)
        finally:
            if self._pods.get(p.uid) is p:
                del self._pods[p.uid]

    async def _stop(self, cid: str, p: _Pod) -> None:
        """SIGTERM, then SIGKILL at ``p.kill_at`` (re-read: it may be brought forward)."""
        try:
            await self.runtime.kill(cid, "TERM")
            while (left := p.kill_at - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await self.runtime.wait_exit(cid, timeout=min(left, 0.5))
                    return
        except HatchwayError:
            return
        with contextlib.suppress(HatchwayError, TimeoutError):
            await self.runtime.kill(cid, "KILL")
            await self.runtime.wait_exit(cid, timeout=10)

    def _save(self, p: _Pod) -> None:
        if p.stopping is not None:
            return  # being forgotten: its state file must not come back
        doc = {
            "pod": p.pod,
            "sandboxId": p.sandbox_id,
            "startTime": p.start_time,
            "containers": {n: c.to_json() for n, c in p.containers.items()},
        }
        self.state.save(p.uid, doc)


def _load(doc: dict[str, Any], known: Mapping[str, ContainerState]) -> _Pod:
    """A pod from its saved document, with the containers the runtime still has."""
    p = _Pod(pod=doc["pod"], start_time=float(doc.get("startTime") or time.time()))
    p.sandbox_id = doc.get("sandboxId") if doc.get("sandboxId") in known else ""
    for name, c in (doc.get("containers") or {}).items():
        p.containers[name] = _Container(
            name=name,
            id=c["id"] if c.get("id") in known else "",
            restart_count=int(c.get("restartCount") or 0),
            last_terminated=c.get("lastTerminated"),
            previous_log=str(c.get("previousLog") or ""),
        )
    return p


def _is_file(path: str) -> bool:
    return bool(path) and os.path.isfile(path)


def _by_uid(pods: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The desired pods by uid (copies); a pod without a canonical uid is refused."""
    desired: dict[str, dict[str, Any]] = {}
    for pod in pods:
        uid = _uid(pod)
        if not is_uid(uid):
            meta = pod.get("metadata") or {}
            log.warning(
                "refusing pod %s/%s: uid %r is not a canonical UUID",
                meta.get("namespace"),
                meta.get("name"),
                uid,
            )
            continue
        desired[uid] = json.loads(json.dumps(pod))
    return desired


def _uid(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _grace(pod: Mapping[str, Any]) -> float:
    meta = pod.get("metadata") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return 30.0 if value is None else float(value)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _terminated(st: ContainerState) -> dict[str, Any]:
    if st.error and not st.started_at:
        code, reason = 128, "StartError"
    elif st.error and st.exit_code not in (0, None) and "unable to start" in st.error:
        code, reason = 128, "StartError"
    else:
        code = st.exit_code or 0
        reason = "Completed" if code == 0 else "OOMKilled" if st.oom_killed else "Error"
    out: dict[str, Any] = {
        "exitCode": code,
        "reason": reason,
        "startedAt": rfc3339(st.started_at),
        "finishedAt": rfc3339(st.finished_at),
        "containerID": f"runc://{st.id}",
    }
    if reason == "StartError":
        out["message"] = st.error
    return out


def _crash_message(c: _Container, spec: Mapping[str, Any]) -> str:
    return f"back-off restarting failed container {spec.get('name')}"


def qos_class(containers: list[dict[str, Any]]) -> str:
    """Guaranteed (every container: cpu and memory limits, requests equal), BestEffort
    (no requests or limits anywhere) or Burstable."""
    guaranteed, empty = True, True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        empty = empty and not limits and not requests
        for kind in ("cpu", "memory"):
            if kind not in limits or requests.get(kind, limits[kind]) != limits[kind]:
                guaranteed = False
    return "BestEffort" if empty else "Guaranteed" if guaranteed else "Burstable"


def _phase(statuses: list[dict[str, Any]], policy: str) -> str:
    """The kubelet's getPhase over container statuses."""
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"]["exitCode"] == 0
        elif s.get("lastState", {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"
