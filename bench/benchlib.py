"""What the benchmarks share: a local registry in a temporary directory and a gallery pointing at it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import Registry, running_registry  # noqa: E402

GALLERY = ROOT / ".venv" / "bin" / "gallery"

# ext4 without a journal (this VM's root filesystem) passes over every inode freed in the last
# 60 s — 360 s while its inode-table block is dirty, which allocating a neighbour makes it — when
# it allocates one, at a buffer-cache lookup each (fs/ext4/ialloc.c, recently_deleted). After a
# 40,000-file tree is removed, creating files in the same block groups costs up to 0.7 ms of
# kernel CPU each (perf: 70% of an extraction in find_inode_bit and recently_deleted), for
# whichever tool runs next: `tar -xzf` of the many-files layers took 15.8 s a minute after a
# removal and 5.5 s six minutes after one. That was the several-fold "disk noise" of the runs
# before 2026-12-07.
RECENTLY_FREED_S = 361.0


class Trash:
    """Trees a measurement leaves are moved aside (a rename frees no inode), never removed while
    the bench measures: they go with its temporary directory at the end (``after_removal``
    waits out the window before anything is measured again)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._count = 0
        root.mkdir(parents=True, exist_ok=True)

    def discard(self, *paths: Path) -> None:
        for path in paths:
            if path.exists():
                self._count += 1
                path.rename(self._root / str(self._count))

    def fresh(self, path: Path) -> Path:
        """``path`` as a new empty directory (what was there moved aside)."""
        self.discard(path)
        path.mkdir(parents=True)
        return path


def after_removal() -> None:
    """Wait until the inodes a removal just freed no longer slow file creation (above)."""
    os.sync()  # the removal's inode-table blocks written back
    time.sleep(RECENTLY_FREED_S)


@contextmanager
def local_registry() -> Iterator[tuple[Path, Registry]]:
    """A scratch directory and Debian's docker-registry on 127.0.0.1 (exits if it is missing)."""
    if shutil.which("docker-registry") is None:
        sys.stderr.write("docker-registry is not installed (apt-get install -y docker-registry)\n")
        raise SystemExit(1)
    with tempfile.TemporaryDirectory() as name, running_registry(Path(name) / "registry") as registry:
        yield Path(name), registry


def write_gallery(tmp: Path, registry: Registry, entries: list[dict[str, Any]]) -> Path:
    """An index of ``entries`` and a config (no policy) whose roots are in ``tmp``; returns the config."""
    (tmp / "index.yaml").write_text(yaml.safe_dump(entries))
    config = tmp / "gallery.yaml"
    config.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "insecure_registries": [registry.host], "galleries": [{"name": "bench", "url": "./index.yaml"}],
    }))  # fmt: skip
    return config


def replace_marked(doc: Path, marker: str, block: str, *, heading: str) -> None:
    """Put ``block`` between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``doc`` (added at the
    end under ``heading`` when the markers are not there yet)."""
    text = doc.read_text() if doc.exists() else ""
    if f"<!-- {marker} -->" not in text:
        text = text.rstrip() + f"\n\n{heading}\n\n<!-- {marker} -->\n<!-- /{marker} -->\n"
    head, _, rest = text.partition(f"<!-- {marker} -->")
    tail = rest.partition(f"<!-- /{marker} -->")[2]
    doc.write_text(f"{head}<!-- {marker} -->\n{block}\n<!-- /{marker} -->{tail}")
