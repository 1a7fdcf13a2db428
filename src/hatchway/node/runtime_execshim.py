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
"init": bool}`` (``init``: the command runs under tini) with SCM_RIGHTS fds
``[report, *the wanted stdio fds]``. On ``report`` (a socket of the job's own) the helper
writes::

    started <host pid>
    exit <code>          (128+N when killed by signal N)

then closes it. If runc fails only ``exit <runc's status>`` is written; runc's message is
in its ``--log`` file. If the helper dies, every report socket reads EOF.

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
from typing import Any

from hatchway.node.runtime_tree import Root, kill_step

PR_SET_CHILD_SUBREAPER = 36
MAX_JOB = 256 * 1024
#: Exit statuses of re-parented processes not (yet) known as an exec's (a process can be
#: reaped before the runc that started it); bounded, oldest dropped.
MAX_EARLY = 4096
#: How long the helper, its agent gone, waits for runcs to finish and trees to die.
ORPHAN_KILL_TIMEOUT = 10.0


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _report(sock: socket.socket, text: str) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(text.encode())


class _Helper:
    """The helper process's state: runc children by pid, started processes by pid."""

    def __init__(self, jobs: socket.socket) -> None:
        self.jobs = jobs
        self.runcs: dict[int, tuple[socket.socket, str, bool]] = {}
        self.procs: dict[int, socket.socket] = {}
        self.roots: dict[int, Root] = {}
        self.early: dict[int, int] = {}

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
        job = json.loads(data)
        report = socket.socket(fileno=fds[0])
        given = iter(fds[1:])
        stdio: list[Any] = [next(given) if want else subprocess.DEVNULL for want in job["stdio"]]
        try:
            child = subprocess.Popen(
                job["argv"],
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                start_new_session=True,
            )
        except OSError as e:
            _report(report, f"exit {126 if e.errno == 13 else 127}\n")
            report.close()
        else:
            self.runcs[child.pid] = (report, job["pid_file"], bool(job.get("init")))
            child.returncode = 0  # reaped below, by pid; keep Popen's finaliser away
        finally:
            # The process has its own copies; ours would hold EOF back.
            for fd in fds[1:]:
                os.close(fd)
        return True

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
        if pid in self.runcs:
            report, pid_file, init = self.runcs.pop(pid)
            started = self._pid(pid_file) if code == 0 else 0
            if not started:
                _report(report, f"exit {code or 255}\n")
                report.close()
                return
            _report(report, f"started {started}\n")
            if started in self.early:
                _report(report, f"exit {self.early.pop(started)}\n")
                report.close()
            else:
                self.procs[started] = report
                root = Root.of(started, tini=init)
                if root is not None:
                    self.roots[started] = root
        elif pid in self.procs:
            report = self.procs.pop(pid)
            self.roots.pop(pid, None)
            _report(report, f"exit {code}\n")
            report.close()
        else:
            self.early[pid] = code
            if len(self.early) > MAX_EARLY:
                del self.early[next(iter(self.early))]

    def kill_all(self, timeout: float = ORPHAN_KILL_TIMEOUT) -> None:
        """The agent is gone: kill every tree this helper started, all in step."""
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
                if kill_step(root, attempt):
                    del pending[pid]
            self.reap()
            attempt += 1
            time.sleep(0.005)
        self.reap()

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
    helper = _Helper(jobs)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(jobs, selectors.EVENT_READ, "job")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                helper.reap()
            elif not helper.take_job():
                helper.kill_all()
                return 0
        helper.reap()


class ExecHelperError(OSError):
    """The helper could not be started or reached."""


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
        self, argv: list[str], pid_file: str, stdio: list[int], *, init: bool = False
    ) -> socket.socket:
        """Start ``runc``'s ``argv`` with ``stdio`` (-1: /dev/null; the caller closes its
        copies); ``init``: it runs the command under tini. Returns the job's report socket
        (ours to read and close)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        wanted = [fd >= 0 for fd in stdio]
        job = json.dumps({"argv": argv, "pid_file": pid_file, "stdio": wanted, "init": init})
        fds = [theirs.fileno(), *(fd for fd in stdio if fd >= 0)]
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
