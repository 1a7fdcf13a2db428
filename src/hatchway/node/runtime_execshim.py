"""The exec helper: one long-lived process per node agent that starts every ``runc exec``
and collects the exit status of what it started.

Why a helper at all: a foreground ``runc exec`` copies the process's output through pipes
of its own and only exits when every holder of those pipes closed them, so a background
child (``sh -c 'sleep 100 & echo hi'``) would hold the exec open; and runc hands out a pty
master (``--console-socket``) only when it detaches. So runc always runs detached
(``exec -d``): the process inherits our stdio fds directly, runc exits, and the process is
re-parented to the nearest child subreaper (prctl PR_SET_CHILD_SUBREAPER) — this helper,
which alone can then collect its exit status. The node agent itself is not made a
subreaper: it would inherit (and have to reap) every orphan below it.

Why one helper and not one per exec: a Python interpreter start per exec cost more than
``runc exec`` itself. The helper is started once (:class:`ExecHelper`, agent side) as
``python -m hatchway.node.runtime_execshim`` with a SOCK_SEQPACKET socket as its stdin.
Each job is one message on it: JSON ``{"argv", "pid_file", "stdio": [bool, bool, bool],
"init": bool, "cgroup": str | null}`` (``init``: the command runs under tini; ``cgroup``:
the exec's own cgroup directory, whose processes the kill takes too) with SCM_RIGHTS fds
``[report, *the wanted stdio fds]``. On ``report`` (a socket of the job's own) the helper
writes::

    started <host pid>
    exit <code>          (128+N when killed by signal N)

then closes it. If runc fails only ``exit <runc's status>`` is written; runc's message is
in its ``--log`` file. If the helper dies, every report socket reads EOF.

The helper also holds a copy of the agent's end of the command's stdin: the job's last
fd (a pipe's write end), or the pty master, sent later on ``report`` as ``hold`` with
SCM_RIGHTS. The agent ends stdin by closing its own copy and writing ``eof`` on
``report``; the helper then closes its copy. So a dying agent does not hand the command
an EOF or a hangup (on which it would exit, and tini with it, before the helper could
stop its tree and leave the orphans to tini): the helper lets go only once the tree is
dead. Held fds are closed when the job ends.

Where the exec has a cgroup of its own, each held fd also has a *holder*: a ``sleep`` (a
host process, started by the helper) that inherits a copy of it and is moved into the
exec's cgroup. The helper SIGKILLs it where it lets go of the fd. So if the agent and the
helper are both SIGKILLed, stdin still does not end: ``cat`` and tini keep running, and the
restarted agent finds the tree by its cgroup and kills it in tini's order (killing the
holder with it), leaving no zombie with the container's init. The holder counts against
the container's pids limit only for what it is (moving a process in is not limited).

When the agent's end of the job socket closes (the agent exited, or was killed), the
helper lets the runcs still starting finish, kills every process tree it started that
still runs (:mod:`runtime_tree`'s order, all trees at once), and exits: a node agent's
death leaves no exec'd process behind. (If the helper itself is SIGKILLed, a restarted
agent finds what it left: :meth:`RuncRuntime.kill_leftover_execs`.)
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from hatchway.errors import HatchwayError
from hatchway.node.runtime_tree import Root, kill_step

PR_SET_CHILD_SUBREAPER = 36
MAX_JOB = 256 * 1024
#: Exit statuses of re-parented processes not (yet) known as an exec's (a process can be
#: reaped before the runc that started it); bounded, oldest dropped.
MAX_EARLY = 4096
#: How long the helper, its agent gone, waits for runcs to finish and trees to die.
ORPHAN_KILL_TIMEOUT = 10.0
#: The holder (see the module docstring): a static busybox's ``sleep`` where there is one.
HOLDER_BUSYBOX = "/bin/busybox"
HOLDER_SECONDS = "2147483647"


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _report(sock: socket.socket, text: str) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(text.encode())


@dataclass
class _Job:
    """One exec: its report socket, runc's pid file, whether it runs under tini, and the
    agent-side fds the helper holds for it (see the module docstring)."""

    report: socket.socket
    pid_file: str
    init: bool
    cgroup: str | None = None
    held: dict[str, int] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)  # kind → the holder's pid
    live: set[int] = field(default_factory=set)  # the helper's unreaped holders

    def hold(self, kind: str, fd: int, live: set[int]) -> None:
        """Hold ``fd`` (and have a holder in the exec's cgroup hold a copy)."""
        self.held[kind] = fd
        if self.cgroup is None:
            return
        pid = _start_holder(fd, self.cgroup)
        if pid:
            self.holders[kind] = pid
            self.live = live
            live.add(pid)

    def release(self, kind: str | None = None) -> None:
        for name in [kind] if kind else list(self.held):
            fd = self.held.pop(name, None)
            if fd is not None:
                os.close(fd)
            pid = self.holders.pop(name, None)
            if pid is not None and pid in self.live:  # (not reaped: its pid is still its)
                self.live.discard(pid)
                _end_holder(pid)

    def finish(self, text: str) -> None:
        self.release()  # first: the holders leave the exec's cgroup before the agent empties it
        _report(self.report, text)
        self.report.close()


def _holder_argv() -> list[str]:
    """The holder's command: the static busybox's ``sleep`` where the node has one (the
    built-in image's binary; Debian ``busybox-static``). One runs per exec session with
    stdin, and a static binary keeps half the private memory of a dynamically linked
    ``sleep`` (measured: 52 vs 108 KiB dirty, as PSS of 200 idle sessions; issue 13)."""
    if os.access(HOLDER_BUSYBOX, os.X_OK):
        return [HOLDER_BUSYBOX, "sleep", HOLDER_SECONDS]
    return ["sleep", HOLDER_SECONDS]


def _start_holder(fd: int, cgroup: str) -> int:
    """A ``sleep`` holding a copy of ``fd`` (as its stdin, no other fd of ours), moved
    into ``cgroup``; its pid, 0 if it could not be started or moved (then it is killed:
    nothing else would find it)."""
    try:
        child = subprocess.Popen(
            _holder_argv(),
            stdin=fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return 0
    child.returncode = 0  # reaped by pid (see _Job.release); keep Popen's finaliser away
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(child.pid))
    except OSError:
        _end_holder(child.pid)
        return 0
    return child.pid


def _end_holder(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class _Helper:
    """The helper process's state: runc children by pid, started processes by pid."""

    def __init__(self, jobs: socket.socket, selector: selectors.BaseSelector) -> None:
        self.jobs = jobs
        self.selector = selector
        self.runcs: dict[int, _Job] = {}
        self.procs: dict[int, _Job] = {}
        self.roots: dict[int, Root] = {}
        self.early: dict[int, int] = {}
        self.holders: set[int] = set()  # pids of the holders (see the module docstring)

    def take_job(self) -> bool:
        """Start the next job's runc; False once the agent closed the job socket."""
        fds = array.array("i")
        try:
            data, anc, _, _ = self.jobs.recvmsg(MAX_JOB, socket.CMSG_SPACE(16 * fds.itemsize))
        except InterruptedError:
            return True
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        spec = json.loads(data)
        wanted = sum(1 for w in spec["stdio"] if w)
        cgroup = spec.get("cgroup")
        job = _Job(
            socket.socket(fileno=fds[0]),
            spec["pid_file"],
            bool(spec.get("init")),
            cgroup if isinstance(cgroup, str) else None,
        )
        given = iter(fds[1 : 1 + wanted])
        for fd in fds[1 + wanted :]:  # the stdin to hold; never more than one
            if "stdin" in job.held:
                os.close(fd)
            else:
                job.hold("stdin", fd, self.holders)
        stdio: list[Any] = [next(given) if want else subprocess.DEVNULL for want in spec["stdio"]]
        try:
            child = subprocess.Popen(
                spec["argv"],
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                start_new_session=True,
            )
        except OSError as e:
            job.finish(f"exit {126 if e.errno == 13 else 127}\n")
        else:
            self.runcs[child.pid] = job
            child.returncode = 0  # reaped below, by pid; keep Popen's finaliser away
            self.selector.register(job.report, selectors.EVENT_READ, job)
        finally:
            # The process has its own copies; ours would hold EOF back.
            for fd in fds[1 : 1 + wanted]:
                os.close(fd)
        return True

    def take_message(self, job: _Job) -> None:
        """The agent's word on one job: ``eof`` (let go of stdin) or ``hold`` with the
        pty master (SCM_RIGHTS). EOF: the agent let go of the job; the helper keeps what
        it holds until the job ends (or the agent is gone)."""
        if job.report.fileno() < 0:
            return  # finished earlier in the same round of events (its socket is closed)
        fds = array.array("i")
        try:
            data, anc, _, _ = job.report.recvmsg(256, socket.CMSG_SPACE(4 * fds.itemsize))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        for fd in fds:
            if "tty" in job.held:
                os.close(fd)
            else:
                job.hold("tty", fd, self.holders)
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(job.report)
        elif b"eof" in data.split():
            job.release("stdin")

    def _done(self, job: _Job, text: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(job.report)
        job.finish(text)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, _exit_code(status))

    def _reaped(self, pid: int, code: int) -> None:
        if pid in self.holders:
            self.holders.discard(pid)
        elif pid in self.runcs:
            job = self.runcs.pop(pid)
            started = self._pid(job.pid_file) if code == 0 else 0
            if not started:
                self._done(job, f"exit {code or 255}\n")
                return
            _report(job.report, f"started {started}\n")
            if started in self.early:
                self._done(job, f"exit {self.early.pop(started)}\n")
            else:
                self.procs[started] = job
                root = Root.of(started, tini=job.init)
                if root is not None:
                    self.roots[started] = root
        elif pid in self.procs:
            self.roots.pop(pid, None)
            self._done(self.procs.pop(pid), f"exit {code}\n")
        else:
            self.early[pid] = code
            if len(self.early) > MAX_EARLY:
                del self.early[next(iter(self.early))]

    def kill_all(self, timeout: float = ORPHAN_KILL_TIMEOUT) -> None:
        """The agent is gone: kill every tree this helper started, all in step. The fds
        it holds keep stdin and the pty open meanwhile, so no command sees an EOF or a
        hangup (and exits, with tini after it) before its tree is stopped."""
        deadline = time.monotonic() + timeout
        while self.runcs and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.005)
        for pid in self.runcs:  # stuck: whatever it started is not known
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        pending = dict(self.roots)
        attempt = 0
        while pending and time.monotonic() < deadline:
            for pid, root in list(pending.items()):
                job = self.procs.get(pid)
                if kill_step(root, attempt, job.cgroup if job is not None else None):
                    del pending[pid]
            self.reap()
            attempt += 1
            time.sleep(0.005)
        while self.procs and time.monotonic() < deadline:  # tini reaps, then exits
            self.reap()
            time.sleep(0.005)
        for job in self.procs.values():
            job.release()

    @staticmethod
    def _pid(pid_file: str) -> int:
        try:
            with open(pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return 0


def serve(jobs: socket.socket) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 125
    selector = selectors.DefaultSelector()
    helper = _Helper(jobs, selector)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(jobs, selectors.EVENT_READ, "job")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            try:
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    helper.reap()
                elif isinstance(key.data, _Job):
                    helper.take_message(key.data)
                elif not helper.take_job():
                    helper.kill_all()
                    return 0
            except Exception:  # one bad event must not take every exec's status with it
                traceback.print_exc()
        helper.reap()


class ExecHelperError(HatchwayError, OSError):
    """The helper could not be started or reached.

    Still an ``OSError``, as it was before it joined the tree: an unreachable helper is
    an I/O failure, and callers that catch ``OSError`` around an exec keep doing so."""


class ExecHelper:
    """Agent side: starts the helper on first use (again if it died) and hands it jobs.
    Thread-safe; not tied to an event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the helper now rather than on the first exec (~50 ms of Python start)."""
        with self._lock:
            self._ensure()

    def submit(
        self,
        argv: list[str],
        pid_file: str,
        stdio: list[int],
        *,
        init: bool = False,
        hold: int = -1,
        cgroup: str | None = None,
    ) -> socket.socket:
        """Start ``runc``'s ``argv`` with ``stdio`` (-1: /dev/null; the caller closes its
        copies); ``init``: it runs the command under tini; ``hold``: our end of the
        command's stdin pipe, for the helper to hold (see the module docstring); ``cgroup``:
        the exec's own cgroup directory (its processes are part of the tree). Returns
        the job's report socket (ours to read and close)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        wanted = [fd >= 0 for fd in stdio]
        job = json.dumps(
            {"argv": argv, "pid_file": pid_file, "stdio": wanted, "init": init, "cgroup": cgroup}
        )
        fds = [theirs.fileno(), *(fd for fd in stdio if fd >= 0), *([hold] if hold >= 0 else [])]
        try:
            with self._lock:
                for attempt in range(2):
                    sock = self._ensure()
                    try:
                        sock.sendmsg([job.encode()], [_rights(fds)])
                        break
                    except OSError as e:
                        self._stop()
                        if attempt:
                            raise ExecHelperError(f"exec helper unreachable: {e}") from e
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return mine

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self._stop()
        ours, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "hatchway.node.runtime_execshim"],
                stdin=child,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            raise ExecHelperError(f"cannot start the exec helper: {e}") from e
        finally:
            child.close()
        self._sock = ours
        return ours

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._reap_later(self._proc)
            self._proc = None

    @staticmethod
    def _reap_later(proc: subprocess.Popen[bytes]) -> None:
        threading.Thread(target=proc.wait, daemon=True).start()


def _rights(fds: list[int]) -> tuple[int, int, bytes]:
    return (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())


def main() -> None:
    jobs = socket.socket(fileno=os.dup(0))
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # runc must not inherit the job socket
    os._exit(serve(jobs))


if __name__ == "__main__":
    main()
