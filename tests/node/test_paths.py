"""The node's path guard with hostile inputs (issue 9: a pod uid of ``/`` must never
become ``rmtree('/')``)."""

from __future__ import annotations

import os
import pathlib
import uuid

import pytest

from hatchway.node.paths import UnsafePathError, check_uid, inside, is_uid


@pytest.mark.parametrize(
    "part", ["/", "..", ".", "", "../../etc", "/etc", "a/b", "a\x00b", "volumes/../..", None, 5]
)
def test_hostile_segments_are_refused(tmp_path: pathlib.Path, part: object) -> None:
    with pytest.raises(UnsafePathError):
        inside(str(tmp_path), "volumes", part)  # type: ignore[arg-type]


def test_plain_segments_stay_inside(tmp_path: pathlib.Path) -> None:
    uid = str(uuid.uuid4())
    assert inside(str(tmp_path), "volumes", uid, "data") == os.path.join(
        os.path.realpath(tmp_path), "volumes", uid, "data"
    )
    assert inside(str(tmp_path), "..a", "b..").endswith("/..a/b..")


def test_a_symlink_out_of_the_root_is_refused(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    (root / "volumes").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "volumes" / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="leads out of"):
        inside(str(root), "volumes", "link")
    with pytest.raises(UnsafePathError, match="leads out of"):
        inside(str(root), "volumes", "link", "x")
    (root / "volumes" / "dangling").symlink_to("/")
    with pytest.raises(UnsafePathError):
        inside(str(root), "volumes", "dangling")


def test_a_symlink_within_the_root_is_fine(tmp_path: pathlib.Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert inside(str(tmp_path), "alias", "x").endswith("/alias/x")


def test_the_root_itself_is_never_a_target(tmp_path: pathlib.Path) -> None:
    (tmp_path / "self").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(str(tmp_path), "self")


@pytest.mark.parametrize(
    "uid",
    [
        "/",
        "..",
        "/tmp/somedir",
        "",
        None,
        "x" * 36,
        str(uuid.uuid4()).upper(),
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()) + "/..",
        str(uuid.uuid4()).replace("-", ""),
    ],
)
def test_uids_that_are_not_canonical_are_refused(uid: object) -> None:
    assert not is_uid(uid)
    with pytest.raises(UnsafePathError, match="invalid pod uid"):
        check_uid(uid)


def test_a_canonical_uid_passes() -> None:
    uid = str(uuid.uuid4())
    assert is_uid(uid) and check_uid(uid) == uid
