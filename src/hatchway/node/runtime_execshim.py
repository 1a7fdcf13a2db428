"""Helper process of every exec: ``python -m hatchway.node.runtime_execshim`` with
``HATCHWAY_EXECSHIM`` = JSON ``{"pid_file", "stdio": [in, out, err], "argv"}`` in the
environment (only cli/ reads argv).

Why: a foreground ``runc exec`` copies the process's output through pipes of its own and
only exits when every holder of those pipes closed them, so a background child
(``sh -c 'sleep 100 & echo hi'``) would hold the exec open; and runc hands out a pty
master (``--console-socket``) only when it detaches. So runc always runs detached
(``exec -d``): the process inherits ``stdio`` (fds passed to this helper) directly, and this
helper, a child subreaper (prctl PR_SET_CHILD_SUBREAPER), inherits the process when runc
exits and collects its exit status. It reports on stdout::

    started <host pid>
    exit <code>          (128+N when killed by signal N)

If runc fails no ``started`` line is printed; runc's message is in its ``--log`` file.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36
ENV = "HATCHWAY_EXECSHIM"


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run(pid_file: str, stdio: list[int], argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 125
    fds = [fd if fd >= 0 else subprocess.DEVNULL for fd in stdio]
    rc = subprocess.call(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2])
    for fd in stdio:  # the process has its own copies; ours would hold EOF back
        if fd >= 0:
            os.close(fd)
    if rc != 0:
        return rc
    with open(pid_file) as f:
        pid = int(f.read().strip())
    print(f"started {pid}", flush=True)
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            print("exit 255", flush=True)  # reaped by someone else: status unknown
            return 0
        if done == pid:
            print(f"exit {_exit_code(status)}", flush=True)
            return 0


def main() -> None:
    job = json.loads(os.environ.pop(ENV, "{}"))
    os._exit(run(job["pid_file"], job["stdio"], job["argv"]))


if __name__ == "__main__":
    main()
