"""Pods in real runc containers: bundles, lifecycle, state, logs.

Layout under ``root_dir`` (the node's data directory):

* ``runc/`` — runc's own state (``runc --root``), private to this runtime.
* ``containers/<id>/`` — one bundle per container: ``config.json``, ``meta.json`` (who it
  belongs to), ``rootfs/`` (an overlay of the image: ``upper/``, ``work/``; a plain copy
  when overlayfs is unavailable), ``runc.log`` (runc's own JSON log), ``exit`` (the exit
  status once the container is gone).
* ``logs/<id>.log`` — the container's output in the CRI log format (protocol.md 9.1),
  written by its shim; ``logs/previous/<pod uid>_<name>.log`` — the log of a restarted
  container's previous instance (:meth:`RuncRuntime.keep_previous_log`).
* ``images/`` — the :class:`~hatchway.node.runtime_image.ImageStore`.
* ``execs/<pid>-<start time>.json`` (or ``exec-<id>.json`` where the root was gone
  already) — one record per exec while it runs (its root's pid,
  start time and namespaces, its container, its cgroup; ``ended`` once its session ended
  normally with processes left in its cgroup): how a restarted agent knows what to kill.
  Each exec gets a cgroup of its own (:meth:`RuncRuntime._exec_cgroup`), found again by
  the sweep of ``exec-*`` cgroups of running containers.

Exec: app containers get the node's ``tini-static`` (Debian ``tini``; ``exec_init``)
mounted read-only, recorded in ``meta.json`` as ``exec_init``, and a command found in the
container runs under it (see :mod:`hatchway.node.runtime_tree`); containers created
without it, or a command that is not found (runc then reports why), are exec'd directly.
:meth:`RuncRuntime.kill_leftover_execs` kills what an earlier node agent's execs left.

Each started container runs under its shim (:mod:`hatchway.node.runtime_shim`, a small
Python program of its own): it makes the container with ``runc create`` and ``runc
start``, owns its stdio (a pty for ``tty: true``, else pipes), writes its log, serves
attach on ``attach.sock`` in the bundle and, as the container's init's subreaper, writes
its exit status to ``exit`` (``oom`` too when the kernel's OOM killer hit its cgroup: the
kubelet's OOMKilled). runc leaves the stopped container's cgroup in place until
:meth:`RuncRuntime.delete`. The shim is in its own session and not our child, so the
node agent can restart without losing a container, its output or its exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hatchway.errors import ContainerRuntimeError
from hatchway.node import runtime_proc, runtime_spec
from hatchway.node.logs import LogOptions, read_log
from hatchway.node.paths import UnsafePathError, inside
from hatchway.node.runtime_exec import ExecProcess, resolves_in, start_exec
from hatchway.node.runtime_host import (
    host_capabilities,
    host_devices,
    host_nofile_limit,
    load_localhost_profile,
    remove_cgroups,
    runc_error,
)
from hatchway.node.runtime_image import BUSYBOX, ImageStore
from hatchway.node.runtime_tree import (
    EXEC_INIT_PATH,
    ExecCgroup,
    Root,
    cgroup_procs,
    exec_cgroups,
    kill_step,
    leftover_roots,
    make_exec_cgroup,
    process_tree,
    remove_exec_cgroup,
)
from hatchway.types import ExecOptions

log = logging.getLogger(__name__)

#: The exec init, where Debian's ``tini`` package puts its static build.
TINI_STATIC = "/usr/bin/tini-static"

#: The per-container shim (:mod:`hatchway.node.runtime_shim`), a program of its own:
#: imported rather than run as a script, so its cached bytecode is used (a script is
#: compiled at every start: 1.5 MiB more PSS per container, see bench/shim_memory.py). Its
#: directory goes last on the path, after the standard library it imports.
SHIM_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime_shim.py")
_SHIM_BOOT = (
    f"import sys; sys.path.append({os.path.dirname(SHIM_SCRIPT)!r}); "
    "import runtime_shim; runtime_shim.boot()"
)
#: In the bundle: the shim's attach socket (:mod:`hatchway.node.attach`).
ATTACH_SOCKET = "attach.sock"
#: The default bound of one container's log file (``container_log_max_bytes``).
DEFAULT_LOG_MAX_BYTES = 1 << 30


class ContainerNotFoundError(ContainerRuntimeError):
    """No container with this id is known to the runtime."""


class ContainerNotRunningError(ContainerRuntimeError):
    """The container exists but is not running (created, or exited)."""


@dataclass
class ContainerState:
    """What the runtime knows about one container (sandbox or app container)."""

    id: str
    kind: str  # "sandbox" | "container"
    status: str  # "created" | "running" | "exited"
    pod_namespace: str
    pod_name: str
    pod_uid: str
    container_name: str
    image: str
    sandbox_id: str = ""
    pid: int = 0
    exit_code: int | None = None
    error: str = ""  # runc's message when the process could not be started
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    log_path: str = ""
    rootfs_mode: str = "overlay"  # or "copy"
    oom_killed: bool = False  # the kernel's OOM killer hit the container's cgroup

    @property
    def running(self) -> bool:
        return self.status == "running"


class RuncRuntime:
    """The node's container runtime. All methods are coroutines except where noted."""

    def __init__(
        self,
        root_dir: str,
        runc: str = "runc",
        *,
        images: ImageStore | None = None,
        poll_interval: float = 0.02,
        overlay: bool = True,
        pids_limit: int | None = runtime_spec.DEFAULT_PIDS_LIMIT,
        exec_init: str | None = TINI_STATIC,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        python: str = sys.executable,
    ) -> None:
        self.root_dir = os.path.abspath(root_dir)
        self.exec_init = _usable_init(exec_init)
        # Each container's pids limit (None: none); Localhost seccomp profiles live in
        # seccomp/, put there by the node's administrator.
        self.pids_limit = pids_limit
        self.log_max_bytes = log_max_bytes
        self.python = python
        self.seccomp_dir = os.path.join(self.root_dir, "seccomp")
        self.runc = shutil.which(runc) or runc
        self.state_root = os.path.join(self.root_dir, "runc")
        self.containers_dir = os.path.join(self.root_dir, "containers")
        self.logs_dir = os.path.join(self.root_dir, "logs")
        self.execs_dir = os.path.join(self.root_dir, "execs")
        self.images = images or ImageStore(self.root_dir)
        self.poll_interval = poll_interval
        self.overlay = overlay
        # container id → (init pid, its start time): state() of a running container
        # without a runc call per poll.
        self._alive: dict[str, tuple[int, int]] = {}
        self._cgroup_warned = False  # exec cgroups cannot be made here: said once
        self.previous_dir = os.path.join(self.logs_dir, "previous")
        for d in (
            self.state_root,
            self.containers_dir,
            self.logs_dir,
            self.previous_dir,
            self.execs_dir,
        ):
            os.makedirs(d, exist_ok=True)

    # --- runc ---------------------------------------------------------------------

    async def _run(self, *argv: str, timeout: float = 60) -> tuple[int, bytes, bytes]:
        try:
            return await runtime_proc.run(argv, timeout=timeout)
        except TimeoutError:
            raise ContainerRuntimeError(f"{argv[0]} timed out: {argv[1:]}") from None

    async def runc_cmd(self, *args: str, check: bool = True) -> tuple[int, bytes, bytes]:
        """Run ``runc --root <state> args...``; raise ContainerRuntimeError if ``check``."""
        rc, out, err = await self._run(self.runc, "--root", self.state_root, *args)
        if rc and check:
            msg = err.decode(errors="replace").strip()
            raise ContainerRuntimeError(f"runc {args[0]} failed: {msg}", stderr=msg, exit_code=rc)
        return rc, out, err

    async def _runc_state(self, cid: str) -> dict[str, Any] | None:
        rc, out, _ = await self.runc_cmd("state", cid, check=False)
        return json.loads(out) if rc == 0 else None

    # --- bundles --------------------------------------------------------------------

    def _bundle(self, cid: str) -> str:
        """The container's bundle directory; an id that would lead out of
        ``containers/`` names no container (issue 9: no path from outside)."""
        try:
            return inside(self.containers_dir, cid)
        except UnsafePathError:
            raise ContainerNotFoundError(f"container {cid!r} not found") from None

    def _meta(self, cid: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self._bundle(cid), "meta.json")) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFoundError(f"container {cid!r} not found") from None

    def _save_meta(self, cid: str, meta: Mapping[str, Any]) -> None:
        path = os.path.join(self._bundle(cid), "meta.json")
        with open(path + ".tmp", "w") as f:
            json.dump(meta, f)
        os.replace(path + ".tmp", path)

    async def _mount_rootfs(self, bundle: str, lower: str) -> str:
        rootfs = os.path.join(bundle, "rootfs")
        for d in ("rootfs", "upper", "work"):
            os.makedirs(os.path.join(bundle, d), exist_ok=True)
        opts = f"lowerdir={lower},upperdir={bundle}/upper,workdir={bundle}/work"
        if self.overlay:
            rc, _, err = await self._run("mount", "-t", "overlay", "overlay", "-o", opts, rootfs)
            if rc == 0:
                return "overlay"
            log.warning(
                "overlay mount failed (%s); copying the image for %s instead",
                err.decode(errors="replace").strip(),
                os.path.basename(bundle),
            )
        # No overlayfs here (or the data dir is on overlayfs): a private copy keeps the
        # image unmodified at the price of disk and time.
        await asyncio.to_thread(shutil.copytree, lower, rootfs, symlinks=True, dirs_exist_ok=True)
        return "copy"

    async def _unmount_rootfs(self, bundle: str) -> None:
        rootfs = os.path.join(bundle, "rootfs")
        if _is_mount(rootfs):
            rc, _, _ = await self._run("umount", rootfs)
            if rc:
                await self._run("umount", "-l", rootfs)

    async def _create(
        self, pod: Mapping[str, Any], kind: str, name: str, image: str, build: Any
    ) -> str:
        meta_pod = pod.get("metadata") or {}
        cid = "hw" + secrets.token_hex(12)
        bundle = self._bundle(cid)
        os.makedirs(bundle)
        try:
            img = await asyncio.to_thread(self.images.get, image)
            mode = await self._mount_rootfs(bundle, img.rootfs)
            spec = build(img, os.path.join(bundle, "rootfs"), f"/hatchway/{cid}")
            _write_json(os.path.join(bundle, "config.json"), spec)
        except BaseException:
            await self._unmount_rootfs(bundle)
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        state = ContainerState(
            id=cid,
            kind=kind,
            status="created",
            pod_namespace=str(meta_pod.get("namespace") or "default"),
            pod_name=str(meta_pod.get("name") or ""),
            pod_uid=str(meta_pod.get("uid") or ""),
            container_name=name,
            image=image,
            created_at=time.time(),
            log_path=os.path.join(self.logs_dir, cid + ".log"),
            rootfs_mode=mode,
        )
        self._save_meta(cid, asdict(state))
        return cid

    # --- lifecycle ------------------------------------------------------------------

    async def create_sandbox(self, pod: Mapping[str, Any]) -> str:
        """Create and start the pod's sandbox (holder of its net/IPC/UTS namespaces)."""

        def build(img: Any, rootfs: str, cgroups: str) -> dict[str, Any]:
            return runtime_spec.sandbox_spec(
                pod,
                rootfs=rootfs,
                cgroups_path=cgroups,
                arch=platform.machine(),
                max_nofile=host_nofile_limit(),
            )

        cid = await self._create(pod, "sandbox", "POD", BUSYBOX, build)
        await self.start(cid)
        state = await self.state(cid)
        if not state.running:
            await self.delete(cid, force=True)
            raise ContainerRuntimeError(f"pod sandbox did not start: {state.error}")
        return cid

    async def create_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        *,
        sandbox_id: str | None = None,
        volumes: Mapping[str, str] | None = None,
    ) -> str:
        """Create (not start) an app container of ``pod``; returns its id.

        It joins the sandbox ``sandbox_id`` (default: the pod's running sandbox). Raises
        :class:`~hatchway.node.runtime_image.ImageNotFoundError` for an unknown image and
        :class:`~hatchway.node.runtime_spec.SpecError` for an unrunnable spec.
        """
        sandbox_pid = None
        if sandbox_id is None:
            sandbox_id = await self._find_sandbox(pod)
        if sandbox_id:
            sb = await self.state(sandbox_id)
            if not sb.running:
                raise ContainerNotRunningError(f"pod sandbox {sandbox_id} is not running")
            sandbox_pid = sb.pid
        privileged = bool((container.get("securityContext") or {}).get("privileged"))
        devices = await asyncio.to_thread(host_devices) if privileged else []
        caps = host_capabilities() if privileged else None
        localhost = load_localhost_profile(self.seccomp_dir, pod, container)

        tty = bool(container.get("tty"))

        def build(img: Any, rootfs: str, cgroups: str) -> dict[str, Any]:
            spec = runtime_spec.container_spec(
                pod,
                container,
                rootfs=rootfs,
                image_entrypoint=img.entrypoint,
                image_cmd=img.cmd,
                image_env=img.env,
                image_workdir=img.working_dir,
                image_user=img.user,
                users=img.users(),
                sandbox_pid=sandbox_pid,
                cgroups_path=cgroups,
                host_devices=devices,
                volumes=volumes,
                host_caps=caps,
                pids_limit=self.pids_limit,
                arch=platform.machine(),
                localhost_seccomp=localhost,
                max_nofile=host_nofile_limit(),
                exec_init=self.exec_init,
            )
            if tty:
                runtime_spec.with_terminal(spec)
            return spec

        name = str(container.get("name") or "")
        cid = await self._create(pod, "container", name, str(container.get("image")), build)
        meta = self._meta(cid)
        meta["sandbox_id"] = sandbox_id or ""
        meta["exec_init"] = EXEC_INIT_PATH if self.exec_init else ""
        # The main process's stdio, for the shim: a pty, a stdin pipe, stdinOnce.
        meta["stdio"] = "".join(
            flag
            for flag, wanted in (
                ("t", tty),
                ("i", container.get("stdin")),
                ("o", container.get("stdinOnce")),
            )
            if wanted
        )
        self._save_meta(cid, meta)
        return cid

    async def _find_sandbox(self, pod: Mapping[str, Any]) -> str:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        name = str((pod.get("metadata") or {}).get("name") or "")
        for st in await self.list():
            if st.kind == "sandbox" and st.running and (st.pod_uid, st.pod_name) == (uid, name):
                return st.id
        return ""

    async def start(self, container_id: str, *, timeout: float = 30) -> None:
        """Start a created container; returns once it runs (or already exited)."""
        meta = self._meta(container_id)
        if meta.get("started_at"):
            raise ContainerRuntimeError(f"container {container_id} was already started")
        bundle = self._bundle(container_id)
        meta["started_at"] = time.time()
        self._save_meta(container_id, meta)
        argv = [self.runc, self.state_root, bundle, container_id, meta["log_path"]]
        argv += [str(meta.get("stdio") or "-"), str(self.log_max_bytes)]
        # The launcher forks the shim and exits (runtime_shim.main); the shim inherits
        # nothing of ours but /dev/null (runtime_proc: none of uvloop's stdio copies).
        launcher = runtime_proc.launch(
            [self.python, "-I", "-S", "-c", _SHIM_BOOT, *argv], timeout=timeout
        )
        if await launcher:
            raise ContainerRuntimeError(f"cannot launch the shim for {container_id}")
        async with asyncio.timeout(timeout):
            while True:
                if _read_exit(bundle) is not None:
                    return
                st = await self._runc_state(container_id)
                if st and st.get("status") == "running":
                    return
                await asyncio.sleep(self.poll_interval)

    async def state(self, container_id: str) -> ContainerState:
        """The container's current state (raises ContainerNotFoundError)."""
        meta = self._meta(container_id)
        st = ContainerState(**{k: v for k, v in meta.items() if k in _FIELDS})
        if not meta.get("started_at"):
            return st
        bundle = self._bundle(container_id)
        for _ in range(25):
            code = _read_exit(bundle)
            if code is not None:
                self._alive.pop(container_id, None)
                return self._exited(st, bundle, code)
            known = self._alive.get(container_id)
            if known is not None and _start_time(known[0]) == known[1]:
                st.status, st.pid = "running", known[0]  # same init process: no runc call
                return st
            runc_state = await self._runc_state(container_id)
            if runc_state and runc_state.get("status") in ("running", "created", "paused"):
                st.status = "running" if runc_state["status"] != "created" else "created"
                st.pid = int(runc_state.get("pid") or 0)
                if st.status == "running" and st.pid:
                    self._alive[container_id] = (st.pid, _start_time(st.pid))
                return st
            await asyncio.sleep(0.02)  # the shim is between runc's exit and the exit file
        if time.time() - float(meta["started_at"]) < 30:
            return st  # still being started by the shim
        st.error = "container vanished without an exit status (shim lost)"
        return self._exited(st, bundle, 255)

    async def init_pid(self, container_id: str) -> int:
        """The host pid of the container's init process while it runs, else 0."""
        try:
            st = await self.state(container_id)
        except ContainerNotFoundError:
            return 0
        return st.pid if st.running else 0

    def _exited(self, st: ContainerState, bundle: str, code: int) -> ContainerState:
        st.status = "exited"
        st.exit_code = code
        st.pid = 0
        with contextlib.suppress(OSError):
            st.finished_at = os.stat(os.path.join(bundle, "exit")).st_mtime
        st.error = st.error or runc_error(os.path.join(bundle, "runc.log")) or _shim_error(bundle)
        st.oom_killed = os.path.exists(os.path.join(bundle, "oom"))
        return st

    async def wait_exit(self, container_id: str, timeout: float | None = None) -> int:
        """Wait until the container has exited; its exit code."""
        bundle = self._bundle(container_id)
        async with asyncio.timeout(timeout):
            while _read_exit(bundle) is None:
                if not _is_dir(bundle):
                    raise ContainerNotFoundError(f"container {container_id!r} not found")
                await asyncio.sleep(0.05)
        return (await self.state(container_id)).exit_code or 0

    async def kill(self, container_id: str, signal: str | int = "TERM") -> None:
        """Send ``signal`` to the container's init; nothing if it is not running."""
        st = await self.state(container_id)
        if st.status != "running":
            return
        sig = str(signal)
        rc, _, err = await self.runc_cmd("kill", container_id, sig, check=False)
        if rc and (await self.state(container_id)).running:
            raise ContainerRuntimeError(
                f"runc kill failed: {err.decode().strip()}", stderr=err.decode()
            )

    async def delete(self, container_id: str, force: bool = False) -> None:
        """Remove a container, its mount, bundle and log. A running one needs ``force``
        (it is killed with SIGKILL first)."""
        st = await self.state(container_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while st.status == "created" and st.started_at:
                    # Launched, but runc has not created it yet: removing the bundle now
                    # would leave runc starting a container on a vanished root.
                    await asyncio.sleep(0.05)
                    st = await self.state(container_id)
        if st.status == "running":
            if not force:
                raise ContainerRuntimeError(f"container {container_id} is running")
            await self.kill(container_id, "KILL")
            await self._gone(container_id, timeout=10)
        await self.runc_cmd("delete", "--force", container_id, check=False)
        bundle = self._bundle(container_id)
        await self._unmount_rootfs(bundle)
        shutil.rmtree(bundle, ignore_errors=True)
        remove_cgroups(f"hatchway/{container_id}")
        self._alive.pop(container_id, None)
        with contextlib.suppress(FileNotFoundError, UnsafePathError):
            os.unlink(inside(self.logs_dir, container_id + ".log"))

    async def _gone(self, container_id: str, timeout: float) -> None:
        """Wait until the init process is dead: the shim wrote the exit status, or (shim
        lost) runc no longer sees it running."""
        bundle = self._bundle(container_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while _read_exit(bundle) is None:
                    if not _shim_alive(bundle, container_id):
                        st = await self._runc_state(container_id)
                        if st is None or st.get("status") not in ("running", "paused"):
                            return
                    await asyncio.sleep(0.02)

    async def list(self) -> list[ContainerState]:
        """Every container this runtime has a bundle for (survives agent restarts)."""
        result = []
        for cid in sorted(os.listdir(self.containers_dir)):
            with contextlib.suppress(ContainerNotFoundError):
                result.append(await self.state(cid))
        return result

    # --- logs and exec ----------------------------------------------------------------

    def log_path(self, container_id: str) -> str:
        return str(self._meta(container_id)["log_path"])

    def attach_socket(self, container_id: str) -> str | None:
        """The shim's attach socket while the container runs, else None."""
        path = os.path.join(self._bundle(container_id), ATTACH_SOCKET)
        return path if os.path.exists(path) else None

    def keep_previous_log(self, container_id: str, key: str) -> str | None:
        """Keep the log of a container about to be deleted as the previous instance's
        (``logs/previous/<key>.log``, replacing the one kept before: one restart deep, as
        the kubelet keeps it); its path, or None when it had no log. ``key`` is the
        runtime's own (pod uid and container name, checked by the caller)."""
        try:
            source = inside(self.logs_dir, container_id + ".log")
            target = inside(self.previous_dir, key + ".log")
            os.replace(source, target)
        except (FileNotFoundError, UnsafePathError):
            return None
        return target

    def drop_previous_logs(self, prefix: str) -> None:
        """Remove the kept previous logs whose key starts with ``prefix`` (a pod uid)."""
        for name in os.listdir(self.previous_dir):
            if name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.previous_dir, name))

    async def read_logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
        path: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The container's output as ``kubectl logs`` shows it (see
        :func:`~hatchway.node.logs.read_log`): from the start, or its last ``tail_lines``
        records, at most ``limit_bytes``; with ``follow``, until it exits. ``path``: a
        log other than the container's own (a previous instance's, which never grows)."""
        options = LogOptions(
            follow=follow and path is None,
            tail_lines=tail_lines,
            limit_bytes=limit_bytes,
            since=since,
            timestamps=timestamps,
        )
        bundle = self._bundle(container_id) if path is None else ""
        f = _open_log(path or self.log_path(container_id))
        if f is None:
            return

        def ended() -> bool:
            return not _is_dir(bundle) or _read_exit(bundle) is not None

        with f:
            async for chunk in read_log(f, options, ended):
                yield chunk

    async def exec(
        self,
        container_id: str,
        options: ExecOptions,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecProcess:
        """Run ``options.command`` in a running container, with the streams and TTY that
        ``options`` asks for (see :mod:`hatchway.node.runtime_exec`)."""
        st = await self.state(container_id)
        if not st.running:
            raise ContainerNotRunningError(
                f"container {st.container_name or container_id} is not running ({st.status})"
            )
        cgroup = await asyncio.to_thread(self._exec_cgroup, st.pid)
        argv0 = options.command[0] if options.command else ""
        proc = await start_exec(
            [self.runc, "--root", self.state_root],
            container_id,
            options,
            env=env,
            cwd=cwd,
            init=await asyncio.to_thread(
                self._exec_init_for, container_id, st.pid, argv0, env, cwd
            ),
            cgroup=cgroup,
        )
        # Written even when the command already exited (a quick ``sh -c 'sleep 9 &'``
        # under load): what it left in its cgroup is a normal end's, which ``wait()``
        # writes into this record; without one the sweep would take it for a leftover.
        root = proc._root
        if root is not None or proc.cgroup is not None:
            name = f"{root.pid}-{root.since}" if root else os.path.basename(proc.cgroup or "")
            path = os.path.join(self.execs_dir, f"{name}.json")
            with contextlib.suppress(OSError):
                doc = {"container": container_id, "cgroup": proc.cgroup}
                doc.update(asdict(root) if root else {})
                _write_json(path, doc)
                proc.record = path
        return proc

    def _exec_cgroup(self, init_pid: int) -> ExecCgroup | None:
        """A new cgroup of its own for an exec in the container whose init is
        ``init_pid`` (see :mod:`runtime_tree`); None where it cannot be made (the exec
        then runs in the container's cgroup, found by parent links and session only)."""
        if not init_pid:
            return None
        try:
            return make_exec_cgroup(init_pid, secrets.token_hex(8))
        except OSError as e:
            if not self._cgroup_warned:
                self._cgroup_warned = True
                log.warning("exec cgroups unavailable (%s): execs run in the container's", e)
            return None

    def _exec_init_for(
        self, cid: str, init_pid: int, argv0: str, env: Mapping[str, str] | None, cwd: str | None
    ) -> str | None:
        """The container's exec init if it has one and ``argv0`` is found in it. (In a
        thread: the look-up walks the container's file system.)"""
        init = str(self._meta(cid).get("exec_init") or "")
        if not init or not init_pid:
            return None
        try:
            with open(os.path.join(self._bundle(cid), "config.json")) as f:
                process = json.load(f)["process"]
        except (OSError, ValueError, KeyError):
            return None
        path = runtime_spec.DEFAULT_PATH
        for item in [*process.get("env", []), *(f"{k}={v}" for k, v in (env or {}).items())]:
            if item.startswith("PATH="):
                path = item[5:]
        where = cwd or str(process.get("cwd") or "/")
        return init if resolves_in(f"/proc/{init_pid}/root", argv0, path, where) else None

    async def kill_leftover_execs(self) -> int:
        """Kill every exec'd process tree an earlier node agent left in this runtime's
        running containers (its exec helper was killed with it); how many trees.

        Found three ways: the exec records (``execs/``: one per exec while it runs,
        removed once it exited, so what a session that ended normally left running is
        not touched, as in Kubernetes), which also find the session's processes after its
        root exited; exec roots without a record (:func:`runtime_tree.leftover_roots`);
        and the execs' own cgroups (``exec-*``), whose processes are killed unless their
        record says the session ended normally (that cgroup is removed once empty).
        """
        running = {st.id: st.pid for st in await self.list() if st.running and st.pid}
        roots: dict[tuple[int, int], tuple[Root | None, str | None]] = {}
        records: list[str] = []
        ended: dict[str, str] = {}  # cgroup → record of a session that ended normally
        cgroups_of: dict[tuple[int, int], str] = {}
        for name in os.listdir(self.execs_dir):
            path = os.path.join(self.execs_dir, name)
            records.append(path)
            found = _read_record(path)
            if found is None or found.container not in running:
                continue
            if found.ended:
                if found.cgroup:
                    ended[found.cgroup] = path
            elif found.root is not None:
                roots[(found.root.pid, found.root.since)] = (found.root, found.cgroup)
            # (no root: the exec's process was gone when it was recorded; its cgroup is
            # found by the sweep of exec-* cgroups below)
        for init_pid in running.values():
            for root in leftover_roots(init_pid):
                roots.setdefault((root.pid, root.since), (root, None))
        keep: set[str] = set()
        for init_pid in running.values():
            for cgroup in exec_cgroups(init_pid):
                if cgroup in {cg for _, cg in roots.values()}:
                    continue
                inside = set(cgroup_procs(cgroup))
                owner = next((k for k, (r, _) in roots.items() if r and r.pid in inside), None)
                if cgroup in ended and owner is None:
                    if not remove_exec_cgroup(cgroup):
                        keep.add(ended[cgroup])  # its survivors still run
                    continue
                if owner is not None:  # (an exec root still runs there: no normal end)
                    cgroups_of[owner] = cgroup
                elif inside:
                    roots[(0, len(roots))] = (None, cgroup)
                else:
                    remove_exec_cgroup(cgroup)
        for key, cgroup in cgroups_of.items():
            roots[key] = (roots[key][0], cgroup)
        count = 0
        for root, cgroup in roots.values():
            alive = bool(cgroup and cgroup_procs(cgroup))
            if root is not None and process_tree(root.pid, root.since, guard=root):
                alive = True
            if alive:
                what = f"exec {root.pid}" if root else f"cgroup {cgroup}"
                log.warning("killing %s left by an earlier node agent", what)
                count += 1
                for attempt in range(2000):
                    if kill_step(root, attempt, cgroup):
                        break
                    await asyncio.sleep(0.005)
            if cgroup:
                remove_exec_cgroup(cgroup)
        for path in records:
            if path not in keep:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return count


@dataclass(frozen=True)
class _Record:
    """An exec record (``execs/``): its container, root, cgroup, and whether the session
    ended normally (what it left running keeps its cgroup)."""

    container: str
    root: Root | None  # None: the exec's process had exited before it was recorded
    cgroup: str | None
    ended: bool


_FIELDS = set(ContainerState.__dataclass_fields__)


def _read_record(path: str) -> _Record | None:
    """An exec record; None if unreadable. Its cgroup must be an ``exec-*`` directory
    under /sys/fs/cgroup (the sweep only uses cgroups it finds itself anyway)."""
    try:
        with open(path) as f:
            doc = json.load(f)
        root = None
        if "pid" in doc:
            pid, since, pid_ns, mnt_ns = (int(doc[k]) for k in ("pid", "since", "pid_ns", "mnt_ns"))
            root = Root(pid, since, pid_ns, mnt_ns, bool(doc["tini"]))
        cgroup = doc.get("cgroup")
        if not isinstance(cgroup, str):
            cgroup = None
        if root is None and cgroup is None:
            return None
        return _Record(str(doc["container"]), root, cgroup, bool(doc.get("ended")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _usable_init(path: str | None) -> str | None:
    """``path`` if it is a root-owned regular file nobody else can write (it is mounted
    into containers), else None: exec then runs commands directly."""
    if not path:
        return None
    try:
        info = os.stat(path)
    except OSError:
        log.warning("no exec init at %s (Debian package tini): exec runs commands directly", path)
        return None
    if not os.path.isfile(path) or info.st_uid != 0 or info.st_mode & 0o022:
        log.warning("exec init %s is not a root-owned, read-only file: not used", path)
        return None
    return os.path.realpath(path)


def _is_mount(path: str) -> bool:
    return os.path.ismount(path)


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _write_json(path: str, doc: Any) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def _open_log(path: str) -> Any:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _shim_alive(bundle: str, container_id: str) -> bool:
    """Whether the container's shim still runs (then it will write the exit status)."""
    try:
        with open(os.path.join(bundle, "shim.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return container_id.encode() in f.read() and _start_time(pid) >= 0
    except (OSError, ValueError):
        return False


def _start_time(pid: int) -> int:
    """The process's start time (/proc/PID/stat field 22), -1 if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return -1
    return -1 if fields[0] in (b"Z", b"X") else int(fields[19])


def _shim_error(bundle: str) -> str:
    """What the shim said before it gave up (``shim-error``), else ""."""
    try:
        with open(os.path.join(bundle, "shim-error")) as f:
            return f.read(4096).strip()
    except OSError:
        return ""


def _read_exit(bundle: str) -> int | None:
    try:
        with open(os.path.join(bundle, "exit")) as f:
            return int(f.read().strip() or 255)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return 255
