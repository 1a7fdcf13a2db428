"""Per-container memory of the container shim: the Python shim (runtime_shim.py) against
the shell shim it replaced (``sh`` running ``runc run`` in the foreground), side by side.

    .venv/bin/python bench/shim_memory.py [--containers 5]

For each kind, N busybox containers running ``sleep`` are started in one pod; for each
container the processes that exist *for* it on the host, outside the container, are
measured: the Python shim alone (``runc create``/``start`` have exited); for the shell
shim, ``sh`` and its ``runc run`` child, which stays for the container's life. RSS
(``VmRSS``) and PSS (``smaps_rollup``) in KiB; PSS splits shared pages between the
processes that map them, so the per-container PSS with N containers is the fair
marginal cost. Prints a table and writes ``bench/results/shim_memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import tempfile
from typing import Any

from hatchway.node import runtime as runtime_module
from hatchway.node.runtime import RuncRuntime

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from memory import _children, _pss_kib, _status_kib, _tree

#: The shell shim of runtime.py before the Python shim (commit 9c70853), verbatim.
SHELL_SHIM = r"""
echo $$ >"$3/shim.pid"
in=/dev/null; [ -p "$3/stdin.fifo" ] && in="$3/stdin.fifo"
"$1" --root "$2" --log "$3/runc.log" --log-format json run --keep --bundle "$3" "$4" \
    <>"$in" >>"$5" 2>&1
code=$?
for f in /sys/fs/cgroup/memory/hatchway/"$4"/memory.oom_control \
    /sys/fs/cgroup/hatchway/"$4"/memory.events; do
    grep -qs '^oom_kill [1-9]' "$f" && : >"$3/oom"
done
echo $code >"$3/exit.tmp"
mv "$3/exit.tmp" "$3/exit"
"""
LAUNCH = 'script=$1; shift; /bin/sh -c "$script" hatchway-shim "$@" </dev/null >/dev/null 2>&1 &'


class ShellShimRuntime(RuncRuntime):
    """The runtime with the old launcher (for this measurement only)."""

    async def start(self, container_id: str, *, timeout: float = 30) -> None:
        meta = self._meta(container_id)
        bundle = self._bundle(container_id)
        meta["started_at"] = 1.0
        self._save_meta(container_id, meta)
        argv = [self.runc, self.state_root, bundle, container_id, meta["log_path"]]
        launcher = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", LAUNCH, "hatchway-launch", SHELL_SHIM, *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        await launcher.wait()
        async with asyncio.timeout(timeout):
            while not ((await self._runc_state(container_id)) or {}).get("status") == "running":
                await asyncio.sleep(0.05)


def _shim_pids(runtime: RuncRuntime, cid: str, init_pid: int) -> list[int]:
    """The shim and its descendants, without the container's own processes."""
    with open(os.path.join(runtime._bundle(cid), "shim.pid")) as f:
        shim = int(f.read())
    kids = _children()
    container = set(_tree(init_pid, kids)) if init_pid else set()
    return [p for p in _tree(shim, kids) if p not in container]


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


async def measure(kind: str, runtime: RuncRuntime, count: int) -> dict[str, Any]:
    pod = {
        "metadata": {"name": f"mem-{kind}", "namespace": "default", "uid": os.urandom(4).hex()},
        "spec": {"containers": []},
    }
    sandbox = await runtime.create_sandbox(pod)
    cids = []
    try:
        for i in range(count):
            spec = {"name": f"c{i}", "image": "busybox", "command": ["sleep", "3600"]}
            cid = await runtime.create_container(pod, spec, sandbox_id=sandbox)
            await runtime.start(cid)
            cids.append(cid)
        await asyncio.sleep(1.0)
        rss, pss, processes = [], [], []
        for cid in cids:
            st = await runtime.state(cid)
            pids = _shim_pids(runtime, cid, st.pid)
            processes.append(sorted(_comm(p) for p in pids))
            rss.append(sum(_status_kib(p, "VmRSS") for p in pids))
            pss.append(sum(_pss_kib(p) for p in pids))
        return {
            "processes": processes[0],
            "rss_kib": statistics.median(rss),
            "pss_kib": statistics.median(pss),
            "pss_kib_all": pss,
        }
    finally:
        for cid in [*cids, sandbox]:
            await runtime.delete(cid, force=True)


async def main(count: int) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="hw-shim-mem-") as tmp:
        for kind, cls in (("python", RuncRuntime), ("shell", ShellShimRuntime)):
            runtime = cls(os.path.join(tmp, kind))
            results[kind] = await measure(kind, runtime, count)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=5)
    args = parser.parse_args()
    assert runtime_module.SHIM_SCRIPT  # (the Python shim is the runtime's default)
    found = asyncio.run(main(args.containers))
    print(f"{'shim':8} {'processes':28} {'RSS KiB':>8} {'PSS KiB':>8}")
    for kind, r in found.items():
        print(f"{kind:8} {' + '.join(r['processes']):28} {r['rss_kib']:8.0f} {r['pss_kib']:8.0f}")
    out = pathlib.Path(__file__).parent / "results" / "shim_memory.json"
    out.write_text(json.dumps({"containers": args.containers, **found}, indent=1) + "\n")
