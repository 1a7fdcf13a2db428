"""Pod lifecycle on the node, on top of :class:`~hatchway.node.runtime.RuncRuntime`.

:class:`PodManager` is given the desired set of pods (Kubernetes JSON dicts) with
:meth:`PodManager.reconcile`; each pod gets a worker task that creates the sandbox and the
containers, starts them, restarts them per ``restartPolicy`` with exponential back-off
(kubelet: 10 s doubling to 300 s; configurable), and computes the pod status as the kubelet
does (phase, conditions, containerStatuses). Status changes are pushed to ``on_status`` as
``{"apiVersion": "v1", "kind": "Pod", "metadata": {namespace, name, uid}, "status": ...}``.

A pod that leaves the desired set, or carries ``metadata.deletionTimestamp``, is stopped
with its grace period (SIGTERM, then SIGKILL after ``deletionGracePeriodSeconds`` or
``spec.terminationGracePeriodSeconds``, default 30) and forgotten.

What each pod was given (sandbox and container ids, restart counts, last terminations)
is kept in ``<state_dir>/<namespace>_<name>.json``; :meth:`PodManager.start` re-adopts
those pods and their containers from the runtime after an agent restart.

Not done: init containers, probes (a running container is ready), volumes other than
emptyDir and hostPath, image pulls (images come from the node's store), ``logs --previous`` (a
restarted container's log is removed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.errors import ContainerRuntimeError, HatchwayError
from hatchway.node.runtime import ContainerNotFoundError, ContainerState, RuncRuntime
from hatchway.node.runtime_image import ImageNotFound, ImageStore
from hatchway.node.runtime_spec import SpecError

log = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], Awaitable[Any]]


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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "restartCount": self.restart_count,
            "lastTerminated": self.last_terminated,
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

    @property
    def key(self) -> tuple[str, str]:
        meta = self.pod.get("metadata") or {}
        return str(meta.get("namespace") or "default"), str(meta.get("name") or "")

    @property
    def specs(self) -> list[dict[str, Any]]:
        return list((self.pod.get("spec") or {}).get("containers") or [])

    @property
    def policy(self) -> str:
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")


class PodManager:
    """Runs the node's pods. ``start()`` first (re-adopts), then ``reconcile()`` as the
    desired set changes; ``close()`` stops the workers and leaves containers running."""

    def __init__(
        self,
        runtime: RuncRuntime,
        images: ImageStore,
        *,
        on_status: StatusCallback | None = None,
        state_dir: str | None = None,
        backoff_initial: float = 10.0,
        backoff_max: float = 300.0,
        poll_interval: float = 0.5,
        host_ip: str = "",
    ) -> None:
        self.runtime = runtime
        self.images = images
        self.on_status = on_status
        self.state_dir = state_dir or os.path.join(runtime.root_dir, "pods")
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.host_ip = host_ip
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._lock = asyncio.Lock()
        os.makedirs(self.state_dir, exist_ok=True)

    # --- public API -------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt the pods persisted by a previous run and their containers; remove
        containers no pod owns."""
        known = {st.id: st for st in await self.runtime.list()}
        owned: set[str] = set()
        for name in sorted(os.listdir(self.state_dir)):  # volumes/ is skipped below
            if name.endswith(".json"):
                p = self._load(os.path.join(self.state_dir, name), known)
                if p is not None:
                    owned |= {p.sandbox_id} | {c.id for c in p.containers.values()}
                    self._pods[p.key] = p
        for cid in set(known) - owned:
            with contextlib.suppress(HatchwayError):
                await self.runtime.delete(cid, force=True)
        for p in self._pods.values():
            self._spawn(p)

    async def reconcile(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Make the node run exactly ``pods`` (the ones bound to it)."""
        async with self._lock:
            desired: dict[tuple[str, str], dict[str, Any]] = {}
            for pod in pods:
                meta = pod.get("metadata") or {}
                key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
                desired[key] = json.loads(json.dumps(pod))
            for key, pod in desired.items():
                p = self._pods.get(key)
                same = p is not None and _uid(p.pod) == _uid(pod)
                if p is not None and not same:
                    await self._remove(p, 0)
                    p = None
                if (pod.get("metadata") or {}).get("deletionTimestamp"):
                    if p is not None:
                        await self._remove(p, _grace(pod))
                    continue
                if p is None:
                    p = _Pod(pod=pod)
                    self._pods[key] = p
                    self._spawn(p)
                else:
                    p.pod = pod
            gone = [p for key, p in self._pods.items() if key not in desired]
            await asyncio.gather(*(self._remove(p, _grace(p.pod)) for p in gone))

    async def delete_pod(
        self, namespace: str, name: str, grace_period: float | None = None
    ) -> None:
        """Stop a pod (SIGTERM, SIGKILL after the grace period) and forget it."""
        async with self._lock:
            p = self._pods.get((namespace, name))
            if p is not None:
                await self._remove(p, _grace(p.pod) if grace_period is None else grace_period)

    async def close(self) -> None:
        """Stop the workers; containers keep running (the next start() adopts them)."""
        for p in self._pods.values():
            await _cancel(p.task)

    def pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        p = self._pods.get((namespace, name))
        return None if p is None else p.status

    def find_container(self, namespace: str, pod: str, container: str) -> str | None:
        """The runtime id of the container's current instance, if it has one."""
        p = self._pods.get((namespace, pod))
        c = p.containers.get(container) if p is not None else None
        return c.id if c is not None and c.id else None

    async def container_running(self, namespace: str, pod: str, container: str) -> bool:
        cid = self.find_container(namespace, pod, container)
        if cid is None:
            return False
        try:
            return (await self.runtime.state(cid)).running
        except ContainerNotFoundError:
            return False

    async def sync_now(self, namespace: str, name: str) -> None:
        """Wake the pod's worker (tests; an event from the API server)."""
        p = self._pods.get((namespace, name))
        if p is not None:
            p.wake.set()

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
                    with contextlib.suppress(HatchwayError):
                        await self.runtime.delete(c.id, force=True)
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
                if now < c.next_start:
                    return
                with contextlib.suppress(HatchwayError):
                    await self.runtime.delete(c.id, force=True)
                c.id, c.restart_count = "", c.restart_count + 1
        if now >= c.next_start:
            await self._create(p, spec, c)

    async def _create(self, p: _Pod, spec: dict[str, Any], c: _Container) -> None:
        try:
            await asyncio.to_thread(self.images.get, str(spec.get("image")))
            cid = await self.runtime.create_container(
                p.pod, spec, sandbox_id=p.sandbox_id, volumes=self._volumes(p)
            )
        except ImageNotFound as e:
            reason = "ImagePullBackOff" if c.failures else "ErrImageNotFound"
            return self._create_failed(c, reason, str(e))
        except SpecError as e:
            return self._create_failed(c, "CreateContainerConfigError", str(e))
        except ContainerRuntimeError as e:
            return self._create_failed(c, "CreateContainerError", str(e))
        c.id, c.failures, c.next_start = cid, 0, 0.0
        c.waiting = ("ContainerCreating", "")
        self._save(p)
        await self.runtime.start(cid)

    def _volumes(self, p: _Pod) -> dict[str, str]:
        """Host directories of the pod's emptyDir and hostPath volumes."""
        found = {}
        for vol in (p.pod.get("spec") or {}).get("volumes") or []:
            if "hostPath" in vol:
                found[vol["name"]] = str(vol["hostPath"].get("path"))
            elif "emptyDir" in vol:
                path = os.path.join(self._volume_root(p), vol["name"])
                os.makedirs(path, exist_ok=True)
                found[vol["name"]] = path
        return found

    def _volume_root(self, p: _Pod) -> str:
        return os.path.join(self.state_dir, "volumes", _uid(p.pod) or "_".join(p.key))

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

    async def _remove(self, p: _Pod, grace: float) -> None:
        await _cancel(p.task)
        self._pods.pop(p.key, None)
        ids = [c.id for c in p.containers.values() if c.id]
        await asyncio.gather(*(self._stop(cid, grace) for cid in ids))
        for cid in [*ids, p.sandbox_id]:
            if cid:
                with contextlib.suppress(HatchwayError):
                    await self.runtime.delete(cid, force=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(p))
        shutil.rmtree(self._volume_root(p), ignore_errors=True)

    async def _stop(self, cid: str, grace: float) -> None:
        try:
            await self.runtime.kill(cid, "TERM")
            await self.runtime.wait_exit(cid, timeout=max(grace, 0))
        except TimeoutError:
            with contextlib.suppress(HatchwayError, TimeoutError):
                await self.runtime.kill(cid, "KILL")
                await self.runtime.wait_exit(cid, timeout=10)
        except HatchwayError:
            pass

    def _path(self, p: _Pod) -> str:
        return os.path.join(self.state_dir, "_".join(p.key) + ".json")

    def _save(self, p: _Pod) -> None:
        doc = {
            "pod": p.pod,
            "sandboxId": p.sandbox_id,
            "startTime": p.start_time,
            "containers": {n: c.to_json() for n, c in p.containers.items()},
        }
        path = self._path(p)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)

    def _load(self, path: str, known: Mapping[str, ContainerState]) -> _Pod | None:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        p = _Pod(pod=doc["pod"], start_time=float(doc.get("startTime") or time.time()))
        p.sandbox_id = doc.get("sandboxId") if doc.get("sandboxId") in known else ""
        for name, c in (doc.get("containers") or {}).items():
            p.containers[name] = _Container(
                name=name,
                id=c["id"] if c.get("id") in known else "",
                restart_count=int(c.get("restartCount") or 0),
                last_terminated=c.get("lastTerminated"),
            )
        return p


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
