"""The image store: the built-in busybox image and imported OCI / docker-save archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from hatchway.errors import ConfigError, HatchwayError
from hatchway.node.runtime_image import (
    BUSYBOX,
    ImageFormatError,
    ImageNotFoundError,
    ImageStore,
    check_static,
    normalize_name,
)

# --- archive builders -------------------------------------------------------------------


def layer(entries: list[tuple], *, gz: bool = False) -> bytes:
    """A layer tar from (name, kind, payload) with kind in file/exec/dir/symlink/link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind in ("file", "exec"):
                info.size = len(payload)
                info.mode = 0o755 if kind == "exec" else 0o644
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            tar.addfile(info)
    data = buf.getvalue()
    return gzip.compress(data) if gz else data


def archive(path: str, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve"],
        "Env": ["PATH=/bin", "MODE=test"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
    },
}

LAYER1 = [
    ("bin", "dir", None),
    ("bin/app", "file", b"#!/bin/sh\necho app\n"),
    ("etc", "dir", None),
    ("etc/old.conf", "file", b"old"),
    ("etc/keep.conf", "file", b"keep"),
    ("cache", "dir", None),
    ("cache/a", "file", b"a"),
    ("cache/b", "file", b"b"),
]
LAYER2 = [
    ("etc/.wh.old.conf", "file", b""),
    ("cache/.wh..wh..opq", "file", b""),
    ("cache/new", "file", b"new"),
    ("etc/link", "symlink", "keep.conf"),
    ("etc/hard", "link", "etc/keep.conf"),
    ("srv", "dir", None),
]


def docker_save(path: str, layers: list[bytes], config: dict | None = None) -> str:
    image_config = {**CONFIG, "config": config} if config else CONFIG
    files = {"cfg.json": json.dumps(image_config).encode()}
    names = []
    for i, data in enumerate(layers):
        files[f"l{i}/layer.tar"] = data
        names.append(f"l{i}/layer.tar")
    manifest = [{"Config": "cfg.json", "RepoTags": ["app:1"], "Layers": names}]
    files["manifest.json"] = json.dumps(manifest).encode()
    return archive(path, files)


def oci_layout(path: str, layers: list[bytes]) -> str:
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{digest}"] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "config": blob(json.dumps(CONFIG).encode()),
        "layers": [blob(data) for data in layers],
    }
    index = {"schemaVersion": 2, "manifests": [blob(json.dumps(manifest).encode())]}
    files["index.json"] = json.dumps(index).encode()
    return archive(path, files)


def check_app_image(store: ImageStore, name: str) -> None:
    img = store.get(name)
    root = img.rootfs
    assert img.entrypoint == ["/bin/app"] and img.cmd == ["--serve"]
    assert img.env == ["PATH=/bin", "MODE=test"]
    assert (img.working_dir, img.user) == ("/srv", "1000:1000")
    assert open(os.path.join(root, "bin/app"), "rb").read().startswith(b"#!/bin/sh")
    assert not os.path.exists(os.path.join(root, "etc/old.conf"))  # whiteout
    assert open(os.path.join(root, "etc/keep.conf"), "rb").read() == b"keep"
    assert sorted(os.listdir(os.path.join(root, "cache"))) == ["new"]  # opaque dir
    assert os.readlink(os.path.join(root, "etc/link")) == "keep.conf"
    assert (
        os.stat(os.path.join(root, "etc/hard")).st_ino
        == os.stat(os.path.join(root, "etc/keep.conf")).st_ino
    )
    assert os.path.isdir(os.path.join(root, "srv"))
    assert not [n for n in os.listdir(os.path.join(root, "etc")) if n.startswith(".wh.")]


# --- tests ----------------------------------------------------------------------------


def test_busybox_image_is_assembled_with_every_applet(images: ImageStore):
    img = images.get("busybox")
    bindir = os.path.join(img.rootfs, "bin")
    for applet in ("tar", "sh", "cat", "dd", "wc", "stty", "sleep", "sha256sum", "nc"):
        assert os.path.realpath(os.path.join(bindir, applet)) == os.path.join(bindir, "busybox")
    assert len(os.listdir(bindir)) > 200
    assert "root:x:0:0" in open(os.path.join(img.rootfs, "etc/passwd")).read()
    assert "root:x:0:" in open(os.path.join(img.rootfs, "etc/group")).read()
    assert os.stat(os.path.join(img.rootfs, "tmp")).st_mode & 0o1777 == 0o1777
    assert img.cmd == ["sh"] and any(e.startswith("PATH=") for e in img.env)
    assert img.users()["root"] == (0, 0)


@pytest.mark.parametrize(
    "alias",
    ["busybox", "busybox:latest", "docker.io/library/busybox", "docker.io/library/busybox:latest"],
)
def test_busybox_aliases(images: ImageStore, alias: str):
    assert images.get(alias).name == BUSYBOX
    assert normalize_name(alias) == BUSYBOX


def test_unknown_image_is_a_clear_error(images: ImageStore):
    with pytest.raises(ImageNotFoundError, match=r'image "nginx:1\.25" not found') as info:
        images.get("nginx:1.25")
    assert isinstance(info.value, HatchwayError)
    assert not images.exists("nginx")


def test_check_static_refuses_a_dynamic_binary(tmp_path):
    check_static("/bin/busybox")
    with pytest.raises(ConfigError, match="dynamically linked"):
        check_static("/bin/ls")  # any dynamically linked host binary
    junk = tmp_path / "junk"
    junk.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ConfigError, match="not a 64-bit ELF"):
        check_static(str(junk))


def test_import_docker_save_archive_with_gzipped_layer_and_whiteouts(images, tmp_path):
    path = docker_save(str(tmp_path / "img.tar"), [layer(LAYER1), layer(LAYER2, gz=True)])
    images.import_archive("example.com/app:1", path)
    check_app_image(images, "example.com/app:1")
    assert "example.com/app:1" in images.list()


def test_import_oci_layout_archive(images, tmp_path):
    path = oci_layout(str(tmp_path / "oci.tar"), [layer(LAYER1, gz=True), layer(LAYER2)])
    images.import_archive("app", path)
    check_app_image(images, "app:latest")


@pytest.mark.parametrize(
    "evil",
    [
        [("../escape", "file", b"x")],
        [("a/../../escape", "file", b"x")],
        [("/abs", "file", b"x")],
        [("lnk", "symlink", "/"), ("lnk/escape", "file", b"x")],
        [("lnk", "symlink", "../../.."), ("lnk/escape", "file", b"x")],
        [("h", "link", "../../escape")],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink", "rel-symlink", "hardlink"],
)
def test_escaping_layers_are_refused_and_leave_nothing(images, tmp_path, evil):
    path = docker_save(str(tmp_path / "evil.tar"), [layer(LAYER1), layer(evil)])
    with pytest.raises(ImageFormatError):
        images.import_archive("evil", path)
    assert not images.exists("evil")
    assert not (tmp_path / "escape").exists()
    assert [n for n in os.listdir(images.root) if n.startswith(".")] == []


def test_not_an_image_archive(images, tmp_path):
    path = archive(str(tmp_path / "x.tar"), {"hello.txt": b"hi"})
    with pytest.raises(ImageFormatError, match=r"neither manifest\.json nor index\.json"):
        images.import_archive("x", path)


def test_reimport_replaces_the_image(images, tmp_path):
    path = docker_save(str(tmp_path / "a.tar"), [layer(LAYER1)])
    images.import_archive("app", path)
    assert os.path.exists(os.path.join(images.get("app").rootfs, "etc/old.conf"))
    path = docker_save(str(tmp_path / "b.tar"), [layer(LAYER1), layer(LAYER2)])
    images.import_archive("app", path)
    assert not os.path.exists(os.path.join(images.get("app").rootfs, "etc/old.conf"))
