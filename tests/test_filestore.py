"""The file store: identical files stored once across kept generations and backends, checked by
fsck, pruned when no tree uses them (OCI layouts on a real filesystem, no network)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.place import filestore, filewriter

from .conftest import REPO
from .fsfaults import tree
from .tarbuild import Member, file, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LIBRARY = 256 * 1024
LIBRARIES = 60
_rng = random.Random(20261202)
SHARED = [_rng.randbytes(LIBRARY) for _ in range(LIBRARIES)]  # the "CUDA runtime" every image has


def image(own: dict[str, bytes]) -> bytes:
    """One layer, as LocalAI's backends are built (FROM scratch + COPY): run.sh, the 60 shared
    libraries, and the image's own files."""
    members: list[Member] = [file("run.sh", b"#!/bin/sh\nexec ./backend\n", mode=0o755)]
    members += [file(f"lib/libcuda{n}.so", data, mode=0o755) for n, data in enumerate(SHARED)]
    members += [file(name, data) for name, data in own.items()]
    return gzip.compress(tar_bytes(members), compresslevel=1, mtime=0)


A_V1 = {"backend": _rng.randbytes(LIBRARY)}
A_V2 = {"backend": _rng.randbytes(LIBRARY)}  # the one file an upgrade changes
B = {"backend": _rng.randbytes(LIBRARY)}


class Project:
    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.config = root / "gallery.yaml"
        self.config.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
            "galleries": [{"name": "g", "url": "./index.yaml"}], **config,
        }))  # fmt: skip
        self.offered: dict[str, str] = {}

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    @property
    def objects(self) -> Path:
        return self.backends / ".gallery" / "store" / "objects"

    def offer(self, name: str, version: str, own: dict[str, bytes]) -> None:
        layout = self.root / "layouts" / f"{name}-{version}"
        if not layout.exists():
            write_layout(layout, [(image(own), LAYER)])
        self.offered[name] = f"ocifile://layouts/{name}-{version}"
        entries = [{"name": n, "uri": uri} for n, uri in self.offered.items()]
        (self.root / "index.yaml").write_text(yaml.safe_dump(entries))

    def gallery(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args: str) -> Any:
        result = self.gallery(*args)
        assert result.exit_code == 0, result.output
        return result

    def fsck(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        """The exit code and the damage found (unreferenced blobs are not damage)."""
        result = self.gallery("fsck", "--json", *args)
        return result.exit_code, [f for f in json.loads(result.stdout)["findings"] if f["damage"]]


def content(backend: Path) -> dict[str, Any]:
    """A backend's files, modes and link targets; metadata.json aside (it says when it was made)."""
    return {path: entry for path, entry in tree(backend).items() if path != "metadata.json"}


def du_bytes(path: Path) -> int:
    """``du``'s apparent size: a file with several hard links is counted once."""
    output = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(output.split()[0])


def one_copy(project: Project, name: str) -> int:
    return sum(p.stat().st_size for p in (project.backends / name).rglob("*") if p.is_file())


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the extractor writes into files (a file linked from the store writes none)."""
    counts: list[int] = []
    real = filewriter.write_all

    def counting(fd: int, data: Any) -> None:
        counts.append(len(data))
        real(fd, data)

    monkeypatch.setattr(filewriter, "write_all", counting)
    return counts


def test_three_trees_of_shared_libraries_take_little_more_than_one(
    tmp_path: Path, written: list[int]
) -> None:
    """The issue's scenario: A v1, the upgrade to A v2 (v1 kept for rollback), B."""
    project = Project(tmp_path)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    copy = one_copy(project, "a")
    assert sum(written) >= LIBRARIES * LIBRARY  # the first install writes everything once

    project.offer("a", "v2", A_V2)
    written.clear()
    project.ok("upgrade", "a")
    assert sum(written) == LIBRARY, "the upgrade writes only the changed file"
    assert (project.backends / "a" / "backend").read_bytes() == A_V2["backend"]

    project.offer("b", "v1", B)
    written.clear()
    project.ok("install", "b")
    assert sum(written) == LIBRARY

    total = du_bytes(project.backends)
    assert total <= 1.25 * copy, f"backends_path is {total / copy:.2f}x one copy"
    # The same inode in every tree: the kept generation, the new live tree, the other backend.
    generation = project.backends / ".gallery" / "generations" / "a" / "1"
    inodes = {os.stat(root / "lib" / "libcuda7.so").st_ino for root in
              (project.backends / "a", project.backends / "b", generation)}  # fmt: skip
    assert len(inodes) == 1
    # Read-only, as recorded: nobody writes into a file shared by three trees by accident.
    recorded = json.loads((project.backends / "b" / "metadata.json").read_text())["files"]
    modes = {f["path"]: f["mode"] for f in recorded}
    assert modes["lib/libcuda7.so"] == "0555" and modes["backend"] == "0444"
    assert stat.S_IMODE((project.backends / "b" / "lib" / "libcuda7.so").stat().st_mode) == 0o555

    # Rollback, uninstall and fsck work as without the store.
    project.ok("rollback", "a")
    assert (project.backends / "a" / "backend").read_bytes() == A_V1["backend"]
    assert project.fsck() == (0, [])


def test_prune_removes_only_what_no_tree_uses(tmp_path: Path) -> None:
    project = Project(tmp_path, keep_generations=0)
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    stored = {p.name for p in project.objects.rglob("*-*")}
    assert len(stored) == LIBRARIES + 3  # the libraries, run.sh, and each backend's own file

    project.ok("uninstall", "a")
    result = json.loads(project.ok("cache", "prune", "--json").stdout)
    assert result["stored_files_removed"] == 1  # a's own file; the libraries are b's too
    assert len(list((project.backends / ".gallery" / "store" / "layers").iterdir())) == 1  # b's layer
    project.ok("uninstall", "b")
    result = json.loads(project.ok("cache", "prune", "--json").stdout)
    assert result["stored_files_removed"] == LIBRARIES + 2
    assert not list(project.objects.rglob("*-*"))
    assert not list((project.backends / ".gallery" / "store" / "layers").iterdir())


def test_a_modified_stored_file_is_found_once_and_every_tree_sharing_it_is_repaired(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    before = {name: tree(project.backends / name) for name in ("a", "b")}
    # As root (or the owner, after a chmod) a backend can still write into a read-only file:
    # here into a library three trees share. One write, two damaged backends.
    victim = project.backends / "a" / "lib" / "libcuda3.so"
    with victim.open("r+b") as handle:
        handle.write(b"\0" * 16)
    code, findings = project.fsck()
    assert code == 3
    kinds = sorted((f["kind"], f["subject"] if f["kind"] != "bad-stored-file" else "") for f in findings)
    assert kinds == [("bad-stored-file", ""), ("modified", "a"), ("modified", "b")], findings
    assert "2 installed files share it" in next(
        f["detail"] for f in findings if f["kind"] == "bad-stored-file"
    )

    code, findings = project.fsck("--repair")
    assert code == 0 and all(f["repaired"] for f in findings if f["damage"]), findings
    assert {name: tree(project.backends / name) for name in ("a", "b")} == before
    assert project.fsck() == (0, [])
    # The repaired trees share a good copy again.
    assert (project.backends / "a" / "lib" / "libcuda3.so").stat().st_ino == (
        project.backends / "b" / "lib" / "libcuda3.so"
    ).stat().st_ino


def test_a_kept_generation_linking_a_damaged_stored_file_is_not_rolled_back_to(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    project.offer("a", "v2", A_V2)
    project.ok("upgrade", "a")
    (project.backends / "a" / "run.sh").chmod(0o777)  # the inode v1, v2 and the store share
    code, findings = project.fsck("--repair")
    assert code == 0, findings
    assert {f["kind"] for f in findings} == {"bad-stored-file", "modified", "damaged-generation"}
    assert not (project.backends / ".gallery" / "generations" / "a" / "1").exists()
    assert stat.S_IMODE((project.backends / "a" / "run.sh").stat().st_mode) == 0o555


def test_with_read_only_files_off_writable_files_are_copies_of_their_own(tmp_path: Path) -> None:
    project = Project(tmp_path, file_store={"read_only_files": False})
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    a, b = project.backends / "a", project.backends / "b"
    # lib/*.so are 0755 in the image (writable): copies; nothing in the store
    assert stat.S_IMODE((a / "lib" / "libcuda1.so").stat().st_mode) == 0o755
    assert (a / "lib" / "libcuda1.so").stat().st_ino != (b / "lib" / "libcuda1.so").stat().st_ino
    assert not project.objects.exists() or not list(project.objects.rglob("*-*"))
    # ... and a repair keeps the modes the backend was installed with
    (a / "backend").write_bytes(b"damaged")
    assert project.fsck("--repair")[0] == 0
    assert stat.S_IMODE((a / "backend").stat().st_mode) == 0o644


def test_link_off_gives_every_backend_its_own_copies(tmp_path: Path) -> None:
    project = Project(tmp_path, file_store={"link": "off"})
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    assert du_bytes(project.backends) >= 2 * LIBRARIES * LIBRARY
    assert not project.objects.exists()


def test_a_filesystem_refusing_hard_links_gets_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CIFS, some FUSE filesystems: link() fails with EPERM. Files are then cloned (reflink) or
    copied from the store, and the installs are as correct as ever."""
    real_link = os.link

    def refused(src: Any, dst: Any, **kwargs: Any) -> None:
        if ".gallery/store" in str(src) or ".gallery/store" in str(dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(filestore.os, "link", refused)
    project = Project(tmp_path)
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    a, b = project.backends / "a", project.backends / "b"
    assert (a / "lib" / "libcuda1.so").read_bytes() == SHARED[1] == (b / "lib" / "libcuda1.so").read_bytes()
    assert (a / "lib" / "libcuda1.so").stat().st_ino != (b / "lib" / "libcuda1.so").stat().st_ino
    assert project.fsck() == (0, [])


def test_an_object_pruned_between_check_and_link_is_written_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent `cache prune` removes an object after the extractor found it: the file is
    written from the data in hand, never left missing."""
    project = Project(tmp_path, keep_generations=0)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    project.ok("uninstall", "a")  # every object unused, still stored
    real_place = filestore.FileStore.place

    def pruned_first(self: filestore.FileStore, sha256: str, mode: int, dest: Path) -> None:
        self.path_of(sha256, mode).unlink(missing_ok=True)
        real_place(self, sha256, mode, dest)

    monkeypatch.setattr(filestore.FileStore, "place", pruned_first)
    project.ok("install", "a")
    assert project.fsck() == (0, [])
    assert (project.backends / "a" / "backend").read_bytes() == A_V1["backend"]


def _stored_file(directory: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = directory / name
    path.write_bytes(data)
    path.chmod(0o444)
    return path, hashlib.sha256(data).hexdigest()


def test_a_shard_listed_once_still_sees_what_changed_since(tmp_path: Path) -> None:
    """``has`` reads each shard's names once per build: what another build stores afterwards is
    missed (and still shared, by ``adopt``), what is pruned afterwards is never linked, and what
    this build stores is found by its next file with the same content."""
    root, work = tmp_path / "store", tmp_path / "work"
    work.mkdir()
    ours, other = filestore.FileStore(root), filestore.FileStore(root)
    first, sha_first = _stored_file(work, "first", b"first")
    assert not ours.has(sha_first, 0o444, 5)  # lists the shard: empty
    other.adopt(first, sha_first, 0o444)  # another build stores it after our listing
    assert not ours.has(sha_first, 0o444, 5)
    copy, _ = _stored_file(work, "copy", b"first")
    ours.adopt(copy, sha_first, 0o444)  # our own copy, written meanwhile, becomes a link to it
    assert copy.stat().st_ino == first.stat().st_ino
    assert ours.has(sha_first, 0o444, 5)
    assert not ours.has(sha_first, 0o444, 6)  # the size is checked on the object itself
    ours.path_of(sha_first, 0o444).unlink()  # pruned after the listing
    assert not ours.has(sha_first, 0o444, 5)
    second, sha_second = _stored_file(work, "second", b"second")
    ours.adopt(second, sha_second, 0o444)
    assert ours.has(sha_second, 0o444, 6)


_PRUNE_KILLED_AFTER = """
import os, signal, sys
from pathlib import Path
from gallery.config.models import load_config
from gallery.operations.prune import prune_cache
from gallery.place import filestore

removed = 0
real = filestore.FileStore.remove

def remove(self, item):
    global removed
    real(self, item)
    removed += 1
    if removed == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

filestore.FileStore.remove = remove
prune_cache(load_config(Path(sys.argv[1])))
"""


def test_kill_9_in_the_middle_of_a_prune_leaves_every_backend_and_the_store_whole(tmp_path: Path) -> None:
    project = Project(tmp_path, keep_generations=0)
    own = {f"data/{n}": _rng.randbytes(2000) for n in range(200)}
    project.offer("b", "v1", B)
    project.offer("c", "v1", own)
    project.ok("install", "b", "c")
    before = tree(project.backends / "b")
    project.ok("uninstall", "c")  # 200 stored files unused; the libraries are b's too
    process = subprocess.run(
        [sys.executable, "-c", _PRUNE_KILLED_AFTER, str(project.config), "50"], cwd=REPO, timeout=120
    )
    assert process.returncode == -9
    left = len(list(project.objects.rglob("*-*")))
    assert LIBRARIES + 2 < left < LIBRARIES + 2 + 200  # killed half-way
    assert tree(project.backends / "b") == before
    assert project.fsck() == (0, [])
    project.ok("install", "c")  # links what is left, writes what was pruned
    assert {n: (project.backends / "c" / n).read_bytes() for n in own} == own
    assert project.fsck() == (0, [])


def test_list_and_doctor_show_the_bytes_on_disk_and_the_bytes_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(tmp_path)
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a", "b")
    data = json.loads(project.ok("list", "--installed", "--offline", "--json").stdout)
    rows = {row["name"]: row for row in data["installed"]}
    common = LIBRARIES * LIBRARY + len(b"#!/bin/sh\nexec ./backend\n")  # the libraries and run.sh
    assert rows["a"]["bytes"] == common + LIBRARY and rows["a"]["shared_bytes"] == common
    assert data["disk"]["without_sharing_bytes"] == 2 * (common + LIBRARY)
    assert data["disk"]["on_disk_bytes"] == common + 2 * LIBRARY
    table = project.ok("list", "--installed", "--offline").stdout
    assert "16.0 MB (15.7 MB shared)" in table and "16.3 MB on disk for 32.0 MB of files" in table, table

    checks = {c["check"]: c for c in json.loads(project.gallery("doctor", "--json").stdout)["checks"]}
    assert "(15.7 MB shared through the file store)" in checks["disk usage"]["message"]
    assert "file store" not in checks  # hard links work here: nothing to say

    from gallery.operations import disk_usage

    def refused(src: Any, dst: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(disk_usage.os, "link", refused)
    checks = {c["check"]: c for c in json.loads(project.gallery("doctor", "--json").stdout)["checks"]}
    assert checks["file store"]["status"] == "warning"
    assert "refuses hard links (Operation not permitted)" in checks["file store"]["message"]


def test_a_reinstall_from_the_store_reads_no_blob_and_writes_no_file(
    tmp_path: Path, written: list[int]
) -> None:
    """The layer was extracted once, its digest matched, its members were recorded: installing
    it again replays the record from the store — no blob is fetched or read, nothing is written."""
    project = Project(tmp_path, keep_generations=0)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    before = content(project.backends / "a")
    project.ok("uninstall", "a")
    records = list((project.backends / ".gallery" / "store" / "layers").iterdir())
    assert len(records) == 1
    layout = project.root / "layouts" / "a-v1" / "blobs" / "sha256"
    layer_blob = layout / records[0].stem
    layer_blob.rename(layer_blob.with_suffix(".away"))  # the layer's blob is gone from everywhere
    written.clear()
    result = json.loads(project.ok("install", "a", "--json").stdout)
    assert result["results"][0]["status"] == "installed"
    assert sum(written) == 0
    assert content(project.backends / "a") == before
    assert project.fsck() == (0, [])


def test_a_recorded_layer_whose_file_was_pruned_is_extracted_from_its_blob(tmp_path: Path) -> None:
    project = Project(tmp_path, keep_generations=0)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    before = content(project.backends / "a")
    project.ok("uninstall", "a")
    own = next(p for p in project.objects.rglob("*-0444"))  # the backend's own file
    own.unlink()
    project.ok("install", "a")
    assert content(project.backends / "a") == before
    assert project.fsck() == (0, [])


@pytest.mark.parametrize("damage", ["checksum", "traversal", "garbage"])
def test_a_damaged_layer_record_is_ignored(tmp_path: Path, damage: str, written: list[int]) -> None:
    project = Project(tmp_path, keep_generations=0)
    project.offer("a", "v1", A_V1)
    project.ok("install", "a")
    before = content(project.backends / "a")
    project.ok("uninstall", "a")
    record = next((project.backends / ".gallery" / "store" / "layers").iterdir())
    lines = record.read_text().splitlines()
    entry = json.loads(lines[1])
    if damage == "checksum":
        entry[2] = 0o4777  # a mode changed, the checksum not
        lines[1] = json.dumps(entry, separators=(",", ":"))
    elif damage == "traversal":  # ... and the checksum made to match: the entry itself is refused
        entry[6] = "../../../../etc/passwd"
        lines[1] = json.dumps(entry, separators=(",", ":"))
        body = "".join(line + "\n" for line in lines[:-1]).encode()
        trailer = json.loads(lines[-1])
        trailer["sha256"] = hashlib.sha256(body).hexdigest()
        lines[-1] = json.dumps(trailer)
    else:
        lines = ["{not json"]
    record.write_text("".join(line + "\n" for line in lines))
    written.clear()
    project.ok("install", "a")
    assert sum(written) == 0  # the blob was extracted, every file linked from the store
    assert content(project.backends / "a") == before


@pytest.fixture
def xfs(tmp_path: Path) -> Any:
    """A real reflink filesystem: XFS with reflink=1 in a loop-mounted image (root, xfsprogs)."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("needs root and mkfs.xfs (xfsprogs) for a loop-mounted XFS")
    image, mountpoint = tmp_path / "xfs.img", tmp_path / "xfs"
    mountpoint.mkdir()
    with image.open("wb") as handle:
        handle.truncate(400 * 1024 * 1024)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _used(path: Path) -> int:
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def test_reflinks_share_the_blocks_on_a_real_reflink_filesystem(xfs: Path) -> None:
    """`link: reflink` clones each file (FICLONE): every tree has inodes of its own, so nothing a
    backend writes reaches another, and the data blocks are still stored once."""
    project = Project(xfs, file_store={"link": "reflink"})
    project.offer("a", "v1", A_V1)
    project.offer("b", "v1", B)
    project.ok("install", "a")
    before = _used(xfs)
    project.ok("install", "b")
    grown = _used(xfs) - before
    blob = LIBRARIES * LIBRARY + LIBRARY  # b's layer in the cache: random data, as big as its files
    assert grown < blob + 4 * 1024 * 1024, f"installing b took {grown} bytes: its libraries were copied"
    a, b = project.backends / "a", project.backends / "b"
    assert (a / "lib" / "libcuda1.so").stat().st_ino != (b / "lib" / "libcuda1.so").stat().st_ino
    assert (a / "lib" / "libcuda1.so").read_bytes() == SHARED[1] == (b / "lib" / "libcuda1.so").read_bytes()
    assert project.fsck() == (0, [])


_KILLED_WHILE_LINKING = """
import os, signal, sys
from pathlib import Path
import httpx
from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.place import filestore
from gallery.verify.signatures import SigstoreVerifier

calls = 0
def killing(real):
    def wrapped(*args, **kwargs):
        global calls
        calls += 1
        if calls == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped

filestore.FileStore.adopt = killing(filestore.FileStore.adopt)
filestore.FileStore.place = killing(filestore.FileStore.place)
with httpx.Client(trust_env=False) as client:
    installer = Installer(load_config(Path(sys.argv[1])), client=client, verifier=SigstoreVerifier(),
                          detector=lambda: HostFacts("linux", "amd64"))
    op = installer.upgrade_one if sys.argv[2] == "upgrade" else installer.install_one
    print(op(sys.argv[4]).status)
"""


@pytest.mark.parametrize("op", ["install", "upgrade"])
def test_kill_9_while_files_are_linked_or_stored_leaves_every_backend_whole(tmp_path: Path, op: str) -> None:
    """SIGKILL at the first, a middle and the last store call of an install (b next to a, whose
    libraries it links) and of an upgrade (a v1 -> v2, the same libraries): every backend is old
    or new, never a mix, the store has no damaged file, and the next install completes."""
    for kill_at in (1, 31, 62):
        (tmp_path / f"{op}-{kill_at}").mkdir()
        project = Project(tmp_path / f"{op}-{kill_at}")
        project.offer("a", "v1", A_V1)
        project.offer("b", "v1", B)
        project.ok("install", "a")
        a_before = content(project.backends / "a")
        name = "b" if op == "install" else "a"
        if op == "upgrade":
            project.offer("a", "v2", A_V2)
        process = subprocess.run(
            [sys.executable, "-c", _KILLED_WHILE_LINKING, str(project.config), op, str(kill_at), name],
            cwd=REPO, timeout=120, capture_output=True, text=True,
        )  # fmt: skip
        assert process.returncode == -9, (kill_at, process.stdout, process.stderr)
        project.ok("list", "--installed")  # the next command recovers
        if op == "install":
            assert content(project.backends / "a") == a_before and not (project.backends / "b").exists()
        else:
            assert content(project.backends / "a") == a_before  # the kill came before the swap
        assert project.fsck() == (0, [])
        project.ok(op, name)
        assert (project.backends / name / "backend").read_bytes() == (B if op == "install" else A_V2)[
            "backend"
        ]
        assert project.fsck() == (0, [])


def test_a_link_with_a_time_no_clock_has_is_recorded_not_a_crash(tmp_path: Path) -> None:
    """Found reading the change: a symlink's pax mtime of "inf" (unused, so never checked by the
    extractor) made recording the layer raise OverflowError."""
    import io
    import tarfile

    from gallery.place.extract import ExtractLimits, TreeBuilder
    from gallery.place.filestore import FileStore
    from gallery.place.layer_records import RecordedLayers

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for when in ("inf", "nan"):
            link = tarfile.TarInfo(f"link-{when}")
            link.type, link.linkname, link.pax_headers = tarfile.SYMTYPE, "target", {"mtime": when}
            archive.addfile(link)
    (tmp_path / "staging").mkdir()
    store = FileStore(tmp_path / "store")
    builder = TreeBuilder(tmp_path / "staging", ExtractLimits(max_bytes=1 << 20, max_files=10, max_path_length=256),
                          store=store)  # fmt: skip
    records = RecordedLayers(store)
    writer = records.writer("sha256:" + "0" * 64)
    buffer.seek(0)
    builder.apply_layer(buffer, layer="l", recorder=writer)
    writer.commit()
    assert [r.path for r in builder.finish()] == ["link-inf", "link-nan"]
    assert (tmp_path / "store" / "layers" / f"{'0' * 64}.jsonl").is_file()
