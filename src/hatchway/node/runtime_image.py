"""The node's image store: root filesystems plus their image config, on local disk.

Layout: ``<data_dir>/images/<quoted name>/{rootfs/, config.json}``. ``config.json`` is the
OCI image config (its ``config`` object carries Entrypoint, Cmd, Env, WorkingDir, User).

Images come from two places: the built-in ``busybox`` image, assembled from the host's
static ``/bin/busybox`` with every applet linked, and :meth:`ImageStore.import_archive`
for OCI image-layout tarballs and ``docker save`` tarballs. Layers are applied in order
with whiteouts; a layer that tries to escape the root (``..``, absolute names, writing
through a symlink) fails the whole import and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

from hatchway.errors import ConfigError, HatchwayError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "busybox:latest"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class ImageNotFoundError(HatchwayError):
    """The image is not in the node's store (there is no registry pull)."""

    def __init__(self, name: str) -> None:
        super().__init__(f'image "{name}" not found in the node\'s image store')
        self.name = name


class ImageFormatError(HatchwayError):
    """An image archive is malformed or unsafe (path traversal, symlink escape)."""


@dataclass(frozen=True)
class Image:
    """An image on disk: where its root is and what its config says."""

    name: str
    rootfs: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_config(cls, name: str, rootfs: str, config: dict[str, Any]) -> Image:
        c = config.get("config") or {}
        return cls(
            name=name,
            rootfs=rootfs,
            entrypoint=list(c.get("Entrypoint") or []),
            cmd=list(c.get("Cmd") or []),
            env=list(c.get("Env") or []),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
        )

    def users(self) -> dict[str, tuple[int, int]]:
        """Names of /etc/passwd in the image → (uid, gid), for ``User: name``."""
        found: dict[str, tuple[int, int]] = {}
        try:
            with open(os.path.join(self.rootfs, "etc/passwd")) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
                        found[parts[0]] = (int(parts[2]), int(parts[3]))
        except OSError:
            pass
        return found


def normalize_name(name: str) -> str:
    """``docker.io/library/busybox`` → ``busybox:latest``; a missing tag is ``latest``."""
    ref = name.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    ref = ref.removeprefix("library/")
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


class ImageStore:
    """Images under ``<data_dir>/images``; methods are synchronous (run them in a thread
    from asyncio code when they may unpack large archives)."""

    def __init__(self, data_dir: str, *, busybox: str = "/bin/busybox") -> None:
        self.root = os.path.join(os.path.abspath(data_dir), "images")
        self.busybox_binary = busybox
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, quote(normalize_name(name), safe=""))

    def get(self, name: str) -> Image:
        """The image called ``name``; builds ``busybox`` on first use."""
        norm = normalize_name(name)
        path = self._dir(norm)
        if not os.path.isdir(path) and norm == BUSYBOX:
            self.ensure_busybox()
        try:
            with open(os.path.join(path, "config.json")) as f:
                config = json.load(f)
        except FileNotFoundError:
            raise ImageNotFoundError(name) from None
        return Image.from_config(norm, os.path.join(path, "rootfs"), config)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except ImageNotFoundError:
            return False
        return True

    def list(self) -> list[str]:
        from urllib.parse import unquote

        return sorted(unquote(d) for d in os.listdir(self.root) if not d.startswith("."))

    def ensure_busybox(self) -> Image:
        """Assemble ``busybox:latest`` from the host's static busybox if not there yet."""
        with self._lock:
            if not os.path.isdir(self._dir(BUSYBOX)):
                check_static(self.busybox_binary)
                self._install(BUSYBOX, self._build_busybox)
        return self.get(BUSYBOX)

    def import_archive(self, name: str, path: str) -> Image:
        """Import an OCI image-layout or ``docker save`` tarball as ``name``."""
        with tarfile.open(path) as archive:
            config, layers = _read_archive(archive)

            def build(staging: str) -> dict[str, Any]:
                rootfs = os.path.join(staging, "rootfs")
                os.mkdir(rootfs, 0o755)
                for member in layers:
                    with _open_layer(archive, member) as layer:
                        apply_layer(layer, rootfs)
                return config

            self._install(normalize_name(name), build)
        return self.get(name)

    def remove(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def _install(self, name: str, build: Any) -> None:
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=self.root)
        try:
            config = build(staging)
            with open(os.path.join(staging, "config.json"), "w") as f:
                json.dump(config, f)
            final = self._dir(name)
            if os.path.isdir(final):
                old = tempfile.mkdtemp(prefix=".old-", dir=self.root)
                os.rename(final, os.path.join(old, "x"))
                shutil.rmtree(old, ignore_errors=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _build_busybox(self, staging: str) -> dict[str, Any]:
        rootfs = os.path.join(staging, "rootfs")
        for d in ("bin", "etc", "root", "home", "var", "dev", "proc", "sys", "usr"):
            os.makedirs(os.path.join(rootfs, d), 0o755, exist_ok=True)
        os.makedirs(os.path.join(rootfs, "tmp"), exist_ok=True)
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        target = os.path.join(rootfs, "bin", "busybox")
        shutil.copy2(self.busybox_binary, target)
        os.chmod(target, 0o755)
        for applet in _applets(self.busybox_binary):
            link = os.path.join(rootfs, "bin", applet)
            if applet != "busybox" and not os.path.lexists(link):
                os.symlink("busybox", link)
        os.symlink("../bin", os.path.join(rootfs, "usr", "bin"))
        os.symlink("bin", os.path.join(rootfs, "sbin"))
        files = {
            "etc/passwd": (
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
            ),
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        }
        for rel, text in files.items():
            with open(os.path.join(rootfs, rel), "w") as f:
                f.write(text)
        return {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
        }


def check_static(path: str) -> None:
    """Refuse a busybox that is dynamically linked (it would not run in the image)."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:
                raise ConfigError(f"{path} is not a 64-bit ELF executable")
            (phoff,) = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e} (install busybox-static)") from e
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            raise ConfigError(f"{path} is dynamically linked; install busybox-static")


def _applets(binary: str) -> list[str]:
    import subprocess

    out = subprocess.run([binary, "--list"], capture_output=True, check=True, timeout=30)
    return [a for a in out.stdout.decode().split() if a and "/" not in a]


# --- archives -----------------------------------------------------------------------


def _read_json(archive: tarfile.TarFile, name: str) -> Any:
    try:
        f = archive.extractfile(name.removeprefix("./"))
    except KeyError:
        f = None
    if f is None:
        raise ImageFormatError(f"archive has no file {name!r}")
    with f:
        return json.load(f)


def _names(archive: tarfile.TarFile) -> set[str]:
    return {m.name.removeprefix("./") for m in archive.getmembers()}


def _read_archive(archive: tarfile.TarFile) -> tuple[dict[str, Any], list[str]]:
    """(image config, layer member names in order) of a docker-save or OCI archive."""
    names = _names(archive)
    if "manifest.json" in names:
        manifest = _read_json(archive, "manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise ImageFormatError("manifest.json lists no image")
        entry = manifest[0]
        return _read_json(archive, entry["Config"]), [str(x) for x in entry["Layers"]]
    if "index.json" in names:
        index = _read_json(archive, "index.json")
        manifest = _resolve_manifest(archive, index)
        config = _read_json(archive, _blob(manifest["config"]["digest"]))
        return config, [_blob(layer["digest"]) for layer in manifest.get("layers", [])]
    raise ImageFormatError("not an image archive: neither manifest.json nor index.json")


def _blob(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if not algo.isalnum() or not hexpart.isalnum():
        raise ImageFormatError(f"bad digest {digest!r}")
    return f"blobs/{algo}/{hexpart}"


def _resolve_manifest(archive: tarfile.TarFile, index: dict[str, Any]) -> dict[str, Any]:
    for _ in range(4):  # an index may point at a nested index
        manifests = index.get("manifests") or []
        if not manifests:
            raise ImageFormatError("index.json lists no manifest")
        chosen = manifests[0]
        for m in manifests:
            plat = m.get("platform") or {}
            if plat.get("architecture") == "amd64" and plat.get("os", "linux") == "linux":
                chosen = m
                break
        doc = _read_json(archive, _blob(chosen["digest"]))
        if "layers" in doc or "config" in doc:
            return doc
        index = doc
    raise ImageFormatError("index nesting too deep")


def _open_layer(archive: tarfile.TarFile, name: str) -> tarfile.TarFile:
    try:
        f = archive.extractfile(name.removeprefix("./"))
    except KeyError:
        f = None
    if f is None:
        raise ImageFormatError(f"archive has no layer {name!r}")
    try:
        return tarfile.open(fileobj=f, mode="r:*")
    except tarfile.TarError as e:
        raise ImageFormatError(f"layer {name!r} is not a (gzipped) tar: {e}") from e


# --- layers -------------------------------------------------------------------------


def _safe_parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise ImageFormatError(f"absolute path in layer: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageFormatError(f"path traversal in layer: {name!r}")
    return parts


def _parent_dir(rootfs: str, parts: list[str]) -> str:
    """The real directory that will hold ``parts[-1]``; refuses symlinked parents."""
    path = rootfs
    for p in parts[:-1]:
        path = os.path.join(path, p)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ImageFormatError(f"layer writes through a symlink: {'/'.join(parts)!r}")
        if not stat.S_ISDIR(st.st_mode):
            raise ImageFormatError(f"layer path crosses a non-directory: {'/'.join(parts)!r}")
    return path


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def apply_layer(layer: tarfile.TarFile, rootfs: str) -> None:
    """Apply one layer tar onto ``rootfs`` (whiteouts honoured, escapes refused)."""
    touched: set[str] = set()
    for member in layer:
        parts = _safe_parts(member.name)
        if not parts:
            continue
        parent = _parent_dir(rootfs, parts)
        base = parts[-1]
        rel = "/".join(parts)
        if base == _OPAQUE:
            prefix = "/".join(parts[:-1])
            for child in os.listdir(parent):
                if f"{prefix}/{child}".lstrip("/") not in touched:
                    _remove(os.path.join(parent, child))
            continue
        if base.startswith(_WHITEOUT):
            _remove(os.path.join(parent, base[len(_WHITEOUT) :]))
            continue
        touched.add(rel)
        _extract_member(layer, member, os.path.join(parent, base), rootfs)


def _extract_member(layer: tarfile.TarFile, m: tarfile.TarInfo, dest: str, rootfs: str) -> None:
    if m.isdir():
        if not os.path.isdir(dest) or os.path.islink(dest):
            _remove(dest)
            os.mkdir(dest, 0o755)
    else:
        _remove(dest)
        if m.isreg():
            src = layer.extractfile(m)
            assert src is not None
            _write_file(src, dest)
        elif m.issym():
            os.symlink(m.linkname, dest)
        elif m.islnk():
            parts = _safe_parts(m.linkname)
            target = os.path.join(_parent_dir(rootfs, parts), parts[-1]) if parts else ""
            if not target or not os.path.isfile(target) or os.path.islink(target):
                raise ImageFormatError(f"hard link to a missing file: {m.linkname!r}")
            os.link(target, dest)
        elif m.isfifo():
            os.mkfifo(dest)
        else:
            return  # device nodes: containers get /dev from the runtime
    os.lchown(dest, m.uid, m.gid)
    if not m.issym():
        os.chmod(dest, m.mode & 0o7777)
    os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)


def _write_file(src: IO[bytes], dest: str) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
