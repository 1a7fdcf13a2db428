"""What ``hatchway exec`` does before its imports, so that a one-shot exec pays for
less of them (each measured in instructions, bench/README.md "Where an exec's time
goes"). Standard library only: this runs before anything else is imported."""

from __future__ import annotations

import gc
import sys
import types

_METADATA = "importlib.metadata"


def import_websockets_without_metadata() -> None:
    """Import the ``websockets`` package without ``importlib.metadata``.

    ``websockets/version.py`` imports ``importlib.metadata`` at module level, yet uses
    it only in a development checkout (``released = False``); for a release the version
    is a literal. That import pulls in email, zipfile, csv and pathlib: about a tenth of
    an exec's instructions. A placeholder stands in while the package is imported and
    is removed afterwards, so a later ``import importlib.metadata`` loads the real one.
    """
    if "websockets" in sys.modules or _METADATA in sys.modules:
        return
    placeholder = types.ModuleType(_METADATA)
    sys.modules[_METADATA] = placeholder
    try:
        import websockets  # noqa: F401
    except ImportError:
        pass  # reported where a WebSocket is needed
    finally:
        if sys.modules.get(_METADATA) is placeholder:
            del sys.modules[_METADATA]


def pause_collection() -> None:
    """No garbage collection while the modules load: the collector would walk the
    growing heap of module objects again and again (~4 % of an exec's instructions),
    and nothing made at import time is garbage. :func:`resume_collection` ends it."""
    gc.disable()


def resume_collection() -> None:
    """Move what exists now (modules, classes, the session's long-lived objects) out of
    the collector's sight, and collect again from here on: an interactive session can
    last hours, and its garbage must be collected."""
    gc.freeze()
    gc.enable()
