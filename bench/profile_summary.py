"""Where a process's CPU samples go, by category, from ``perf record`` files.

    .venv/bin/python bench/profile_summary.py /tmp/prof/*.perf
    .venv/bin/python bench/profile_summary.py --cpu 4.2 /tmp/prof/this-out-apiserver.perf

``bench/cpu.py --profile DIR`` writes one ``perf record`` file per process and direction
(on-CPU samples only, so a thread blocked in a read or an idle worker costs nothing).
This reads each with ``perf report --sort dso,sym`` and puts every symbol in one
category: TLS (libcrypto: AES-GCM and the rest; libssl: the record layer and the memory
BIOs), user-space copies (memmove/memcpy/memset in libc), the kernel split into socket
and pipe copies, page faults and page allocation, and the rest (TCP, epoll, scheduler),
the Python interpreter (libpython and extension modules: per-chunk Python), uvloop, and
the rest of libc (malloc). With ``--cpu S`` (the process's CPU seconds per GiB, from
``bench/cpu.py``) each share is also given in seconds. Not a timed test.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import subprocess

KERNEL_COPY = re.compile(r"_copy_(to|from)_iter|copy_user|copy_page_(to|from)_iter|memcpy_orig")
KERNEL_MEMORY = re.compile(
    r"page_fault|clear_page|anonymous_page|unmap_page|handle_mm_fault|memcg|folio|"
    r"alloc_pages|free_pages|frozen_pages|page_counter|lruvec|set_ptes|zap_|mmap|munmap|"
    r"tlb_|pte_|free_pcppages|rmqueue|obj_cgroup"
)
LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")


def category(dso: str, kind: str, symbol: str) -> str:
    if dso.startswith("libcrypto"):
        return "TLS: libcrypto (AES-GCM, ...)"
    if dso.startswith("libssl"):
        return "TLS: libssl (records, BIOs)"
    if kind == "k" or dso.startswith("[kernel"):
        if KERNEL_COPY.search(symbol):
            return "kernel: socket/pipe copies"
        if KERNEL_MEMORY.search(symbol):
            return "kernel: page faults, page alloc/free"
        return "kernel: TCP, epoll, scheduler, other"
    if dso.startswith("libc"):
        if re.search(r"mem(move|cpy|set)", symbol):
            return "user copies (memmove/memcpy/memset)"
        return "libc other (malloc, ...)"
    if dso.startswith("loop.cpython"):
        return "uvloop"
    if dso.startswith("libpython") or ".cpython-" in dso:
        return "Python interpreter + C extensions"
    return f"other ({dso})"


def summarise(path: pathlib.Path) -> dict[str, float]:
    report = subprocess.run(
        ["perf", "report", "-i", str(path), "--no-children", "--sort", "dso,sym",
         "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shares: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        match = LINE.match(line)
        if match:
            share, dso, kind, symbol = match.groups()
            shares[category(dso, kind, symbol)] += float(share)
    return dict(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    parser.add_argument("--cpu", type=float, help="the process's CPU seconds per GiB")
    args = parser.parse_args()
    for path in args.files:
        shares = summarise(path)
        print(f"\n{path.name}")
        for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
            seconds = f"  {share / 100 * args.cpu:5.2f} s" if args.cpu else ""
            print(f"  {share:5.1f} %{seconds}  {name}")


if __name__ == "__main__":
    main()
