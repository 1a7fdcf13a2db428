"""Where the node keeps what it knows about each pod, keyed by the pod's uid.

Under the pod manager's state directory:

* ``<uid>.json`` — the pod as last seen, its sandbox and container ids, restart counts
  and last terminations (re-adopted after an agent restart);
* ``volumes/<uid>/<volume>/`` — its emptyDir volumes.

Every path comes from :func:`hatchway.node.paths.inside` with a uid that passed
:func:`~hatchway.node.paths.check_uid`: a uid such as ``/`` or ``../..`` never names a
file or directory here (issue 9).

State files of earlier versions were named ``<namespace>_<name>.json``. On start they
are adopted when the pod they hold has a canonical uid (rewritten as ``<uid>.json``, so
the pod's running containers are kept), and otherwise removed (the containers are then
unowned and the pod manager deletes them; no directory named by such a uid is touched).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from hatchway.node.paths import check_uid, inside, is_uid

log = logging.getLogger(__name__)

VOLUMES = "volumes"


class PodStateDir:
    """The state directory: one JSON document per pod uid, and the volume roots."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(os.path.join(root, VOLUMES), exist_ok=True)

    def state_path(self, uid: str) -> str:
        return inside(self.root, check_uid(uid) + ".json")

    def volume_root(self, uid: str) -> str:
        return inside(self.root, VOLUMES, check_uid(uid))

    def volume_dir(self, uid: str, volume: str) -> str:
        """The emptyDir ``volume`` of pod ``uid``, created if missing."""
        path = inside(self.root, VOLUMES, check_uid(uid), volume)
        os.makedirs(path, exist_ok=True)
        return path

    def save(self, uid: str, doc: dict[str, Any]) -> None:
        path = self.state_path(uid)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)

    def remove(self, uid: str) -> None:
        """Forget pod ``uid``: its state file and its volumes."""
        try:
            os.unlink(self.state_path(uid))
        except FileNotFoundError:
            pass
        shutil.rmtree(self.volume_root(uid), ignore_errors=True)

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Every saved document by pod uid, legacy ``<ns>_<name>.json`` files migrated."""
        docs: dict[str, dict[str, Any]] = {}
        for name in sorted(os.listdir(self.root)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.root, name)
            doc = _read(path)
            uid = _uid(doc)
            if doc is None or not is_uid(uid):
                log.warning("removing pod state %s: no valid pod uid in it", name)
                _unlink(path)
                continue
            if name != uid + ".json":
                if uid in docs or os.path.exists(self.state_path(uid)):
                    _unlink(path)  # a newer state file for the same pod wins
                    continue
                self.save(uid, doc)
                _unlink(path)
                log.info("pod state %s migrated to %s.json", name, uid)
            docs[uid] = doc
        return docs


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("pod"), dict) else None


def _uid(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return ""
    meta = doc["pod"].get("metadata")
    return str(meta.get("uid") or "") if isinstance(meta, dict) else ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
