"""Property: any tree we extract (random depth, modes down to 0000, symlinks pointing anywhere,
hardlinks) is removed completely by the removal every uninstall, prune and recovery uses — as
root and as an unprivileged owner — and nothing outside it is touched.

The unprivileged run re-executes this module's examples as ``nobody`` with ``setpriv`` (skipped,
saying so, when the tests do not run as root or setpriv is missing).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gallery.place.extract import ExtractLimits, TreeBuilder
from gallery.trees import remove_tree, scanned_tree

REPO = Path(__file__).resolve().parents[1]
LIMITS = ExtractLimits(max_bytes=1 << 20, max_files=500, max_path_length=1024, max_depth=64)
MODES_DIR = [0o000, 0o100, 0o400, 0o500, 0o555, 0o700, 0o755, 0o1777]
MODES_FILE = [0o000, 0o400, 0o444, 0o600, 0o755, 0o4755]
TARGETS = ["../../outside/bait", "/etc/passwd", "x", "../x", "/", "missing/deeper"]

segment = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, int, str]]:
    """Members (kind, path, mode, link target): directories first, then what goes in them."""
    dirs = draw(st.lists(st.lists(segment, min_size=1, max_size=6).map("/".join), max_size=12, unique=True))
    members: list[tuple[str, str, int, str]] = []
    for path in sorted(dirs, key=lambda p: p.count("/")):
        members.append(("dir", path, draw(st.sampled_from(MODES_DIR)), ""))
    parents = ["", *dirs]
    files: list[str] = []
    for index in range(draw(st.integers(0, 10))):
        parent = draw(st.sampled_from(parents))
        path = f"{parent}/f{index}" if parent else f"f{index}"
        kind = draw(
            st.sampled_from(["file", "file", "symlink", "hardlink"] if files else ["file", "symlink"])
        )
        if kind == "file":
            files.append(path)
            members.append(("file", path, draw(st.sampled_from(MODES_FILE)), ""))
        elif kind == "symlink":
            members.append(("symlink", path, 0o777, draw(st.sampled_from(TARGETS))))
        else:
            members.append(("hardlink", path, 0o644, draw(st.sampled_from(files))))
    return members


def layer(members: list[tuple[str, str, int, str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for kind, path, mode, target in members:
            info = tarfile.TarInfo(path)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, target
            else:
                data = path.encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            archive.addfile(info)
    return buffer.getvalue()


def check_one(base: Path, members: list[tuple[str, str, int, str]]) -> None:
    """Extract into base/backends/x, remove it, and check nothing is left and nothing else moved."""
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    bait = outside / "bait"
    bait.write_text("untouched")
    bait.chmod(0o644)
    staging = base / "backends" / "x"
    staging.mkdir(parents=True)
    builder = TreeBuilder(staging, LIMITS)
    try:
        builder.apply_layer(io.BytesIO(layer(members)), layer="sha256:random")
        builder.finish()
    except Exception as exc:  # refused trees are fine here; only removal is under test
        if type(exc).__name__ != "UnsafeArchiveError":
            raise
    with scanned_tree(staging) as scan:  # the scan gives back the modes it lent
        before = {str(Path(e.path).relative_to(staging)) for _d, entries in scan.walk() for e in entries}
    remove_tree(staging)
    assert not os.path.lexists(staging), before
    assert bait.read_text() == "untouched" and stat.S_IMODE(bait.stat().st_mode) == 0o644
    assert sorted(p.name for p in base.iterdir()) == ["backends", "outside"]
    assert list((base / "backends").iterdir()) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=trees())
def test_every_extracted_tree_is_removed_completely(members: list[tuple[str, str, int, str]]) -> None:
    with tempfile.TemporaryDirectory() as base:
        check_one(Path(base), members)


def run_as_owner(examples: int) -> None:
    """Entry point of the unprivileged run (``python -m tests.test_tree_removal N``)."""

    @settings(max_examples=examples, deadline=None, database=None)
    @given(members=trees())
    def prop(members: list[tuple[str, str, int, str]]) -> None:
        with tempfile.TemporaryDirectory(dir=os.environ["GALLERY_TEST_BASE"]) as base:
            check_one(Path(base), members)

    prop()


def test_every_extracted_tree_is_removed_completely_by_an_unprivileged_owner() -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="gallery-owner-", dir="/tmp"))
    os.chown(base, 65534, 65534)
    try:
        done = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
             "import sys; from tests.test_tree_removal import run_as_owner; run_as_owner(40)"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={"PATH": os.environ.get("PATH", ""), "GALLERY_TEST_BASE": str(base), "HOME": str(base)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    run_as_owner(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
