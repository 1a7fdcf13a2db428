"""RFC 6455 masking (section 5.3) for a client that imports no ``websockets`` package.

``websockets`` ships the fastest masking there is here, a C extension
(``websockets/speedups``: ~8 us per 64 KiB, against ~400 us for Python's big-integer
XOR); importing it through its package costs the package (~60 ms of imports, with
``importlib.metadata``). :data:`apply_mask` is that extension, loaded from its file on
its own (its init function is named for its last component, so it loads under the name
``speedups`` and the package is never imported), else a pure-Python fallback. It is
loaded at the first payload of :data:`SMALL` bytes or more: a session that sends only
its close frame, or keystrokes, never loads it (``importlib.machinery`` and
``warnings`` with it: ~0.6 ms of an ``exec``'s start-up), and below that size the
Python XOR costs about what the call into C does (~1 us).
"""

from __future__ import annotations

from collections.abc import Callable

Buffer = bytes | bytearray | memoryview


def mask_python(data: Buffer, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (the slow, always available way)."""
    n = len(data)
    if not n:
        return b""
    repeated = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def _load_speedups() -> Callable[[Buffer, bytes], bytes] | None:
    try:
        from importlib.machinery import ExtensionFileLoader, PathFinder

        package = PathFinder.find_spec("websockets")
        if package is None or not package.submodule_search_locations:
            return None
        spec = PathFinder.find_spec("speedups", list(package.submodule_search_locations))
        if spec is None or not isinstance(spec.loader, ExtensionFileLoader):
            return None
        module = spec.loader.create_module(spec)
        spec.loader.exec_module(module)
        found: Callable[[Buffer, bytes], bytes] = module.apply_mask
        if found(b"\x01\x02\x03\x04\x05", b"\xff\x00\xff\x00") != b"\xfe\x02\xfc\x04\xfa":
            return None
        return found
    except (ImportError, OSError, AttributeError):
        return None


#: The payload size from which the C extension masks (loaded then).
SMALL = 256

_fast: Callable[[Buffer, bytes], bytes] | None = None


def apply_mask(data: Buffer, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key``: the C extension from :data:`SMALL`
    bytes on (loaded at the first such call), the Python XOR below it."""
    global _fast
    if len(data) < SMALL:
        return mask_python(data, key)
    if _fast is None:
        _fast = _load_speedups() or mask_python
    return _fast(data, key)
