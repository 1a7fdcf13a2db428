"""cli/fdio.py: everything reaches a non-blocking descriptor that fills, in order."""

from __future__ import annotations

import os
import threading

from hatchway.cli.fdio import write_all, write_views


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 4096):
        into += chunk


def test_a_full_non_blocking_pipe_takes_everything_in_order() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    got = bytearray()
    reader = threading.Thread(target=_drain, args=(r, got))
    reader.start()
    try:
        data = os.urandom(1 << 20)  # 16 pipe buffers: the writes must wait and resume
        write_all(w, data)
        parts: list[bytes | memoryview] = [b"", data[:3], memoryview(data)[3:100_000], b"z"]
        write_views(w, parts)
    finally:
        os.close(w)
        reader.join(30)
        os.close(r)
    assert bytes(got) == data + data[:100_000] + b"z"
