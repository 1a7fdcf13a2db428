"""Where the samples of a py-spy raw (collapsed) profile go, by category.

    .venv/bin/python bench/profile_summary.py /tmp/prof/*.txt

Each stack (root first, ``;``-separated, then a count) is put in the first category
whose pattern matches its innermost frames (leaf first): TLS (OpenSSL and the ``ssl``
module: record layer and cipher), copies (memcpy/memmove, ``bytes()``), syscalls (socket
and pipe reads/writes, epoll), and otherwise the Python function nearest the leaf
(per-chunk Python work, the event loop). Prints a table per file: share of samples and,
given ``--cpu NAME=SECONDS``, the CPU seconds that share stands for. Native frames
without symbols count under their library. Not a timed test.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re

#: (category, pattern over one frame), matched leaf first.
CATEGORIES = [
    ("TLS cipher (AES-GCM)", re.compile(r"aes|gcm|ghash|AES|GCM|EVP_(En|De)crypt|Cipher", re.I)),
    ("TLS record layer (OpenSSL)", re.compile(r"SSL_|ssl3_|tls1?_|libssl|BIO_|libcrypto")),
    ("copies (memcpy/memmove)", re.compile(r"memcpy|memmove|__memcpy|bytes_new|PyBytes_From")),
    (
        "syscalls (send/recv/read/write)",
        re.compile(r"\b(send|recv|sendmsg|recvmsg|writev|__libc_(send|recv|write|read))\b"),
    ),
    ("event loop wait (epoll)", re.compile(r"epoll_wait|select\.epoll|poll \(")),
]


def _frames(stack: str) -> list[str]:
    return stack.split(";")[::-1]


def categorise(stack: str) -> str:
    frames = _frames(stack)
    for frame in frames[:6]:
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    for frame in frames:
        if "(" in frame and ".py:" in frame:
            func, _, where = frame.partition(" (")
            module = where.split(":")[0].rsplit("/", 2)[-2:]
            return f"Python: {'/'.join(module)} {func}"
    return f"native: {frames[0][:60]}"


def summarise(path: pathlib.Path, top: int) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if "idle" in stack and "epoll" not in stack:
            continue
        counts[categorise(stack)] += int(count)
    return counts.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    for path in args.files:
        rows = summarise(path, args.top)
        total = sum(c for _, c in summarise(path, 10**6))
        print(f"\n{path.name}: {total} samples")
        for name, count in rows:
            print(f"  {100 * count / max(total, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
