"""``backends_path`` as the operations see it: which backends are installed, what a name holds,
and the meta-backend directories that point at concrete ones (edge module: reads and writes the
live directory; swaps themselves are ``gallery.swap``'s)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from gallery.catalog.index import IndexEntry
from gallery.config.models import Config
from gallery.errors import BackendNotFound, GalleryError, OperationalError
from gallery.files import fsync_directory
from gallery.names import is_valid_name
from gallery.operations.localai_dirs import Leftover, is_sideloaded, leftover_of
from gallery.place.filestore import FileStore
from gallery.place.metadata import METADATA_FORMAT_VERSION, BackendMetadata, read_metadata, write_metadata
from gallery.place.swap import StateDir

__all__ = ["BackendStore", "file_store_of"]


class BackendStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = StateDir(root)

    def directories(self) -> list[Path]:
        """Everything under ``backends_path`` but our own bookkeeping (dot entries) and LocalAI's
        leftovers (``leftovers``), sorted: backends, and whatever else someone put there (fsck
        reports it)."""
        return [child for child in self._entries() if leftover_of(child) is None]

    def leftovers(self) -> list[Leftover]:
        """What an interrupted LocalAI install or upgrade left (``<name>.upgrade-tmp``, ...)."""
        return [found for child in self._entries() if (found := leftover_of(child)) is not None]

    def sideloaded(self) -> list[str]:
        """Backends put there by hand (``run.sh``, no metadata): LocalAI loads them, unverified."""
        return [child.name for child in self.directories() if is_sideloaded(child)]

    def _entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [child for child in sorted(self.root.iterdir()) if not child.name.startswith(".")]

    def installed(self) -> list[BackendMetadata]:
        """Every backend under ``backends_path`` with readable metadata (LocalAI's included)."""
        found = []
        for child in self.directories():
            if not child.is_dir() or child.is_symlink():
                continue
            metadata = read_metadata(child)
            if metadata is not None:
                found.append(metadata)
        return found

    def recorded(self) -> Iterator[BackendMetadata]:
        """The metadata of installed backends and of their kept generations; unreadable metadata
        is skipped (it references nothing)."""
        directories: list[Path] = []
        for child in self.directories():
            if child.is_dir() and not child.is_symlink():
                directories.append(child)
                if is_valid_name(child.name):
                    directories += self.state.kept(child.name)
        for directory in directories:
            try:
                metadata = read_metadata(directory)
            except GalleryError:
                continue
            if metadata is not None:
                yield metadata

    def referenced_blobs(self) -> set[str]:
        """Layer digests of installed backends and of their kept generations (what the blob
        cache must keep)."""
        referenced: set[str] = set()
        for metadata in self.recorded():
            referenced |= {layer.digest for layer in metadata.layers}
            if metadata.digest and not metadata.layers:
                referenced.add(metadata.digest)
        return referenced

    def referenced_files(self) -> set[tuple[str, int]]:
        """(sha256, mode) of every regular file recorded by installed backends and kept
        generations (what the file store keeps even where trees hold clones, not links)."""
        return {
            (str(f["sha256"]), int(str(f["mode"]), 8))
            for metadata in self.recorded()
            for f in metadata.files
            if f.get("type") == "file" and f.get("sha256")
        }

    def get(self, name: str) -> BackendMetadata | None:
        """The metadata of the backend installed as ``name`` (``None``: not installed)."""
        if not is_valid_name(name):
            return None
        directory = self.root / name
        return read_metadata(directory) if directory.is_dir() and not directory.is_symlink() else None

    def require(self, name: str) -> BackendMetadata:
        """Raises: BackendNotFound (also for a name that cannot be a backend)."""
        if not is_valid_name(name):
            raise BackendNotFound(f"{name!r} is not a backend name")
        installed = self.get(name)
        if installed is None:
            raise BackendNotFound(f"{name} is not installed", hint=f"use 'gallery install {name}'")
        return installed

    def concrete(self, name: str) -> BackendMetadata:
        """``name``'s metadata, or for a meta-backend that of the backend it installed.

        Raises: BackendNotFound."""
        installed = self.require(name)
        if installed.meta_backend_for is None:
            return installed
        return self.require(installed.meta_backend_for)

    def current(self, name: str) -> BackendMetadata | None:
        """What an install of ``name`` would replace.

        Raises:
            OperationalError: ``backends/NAME`` exists but was not installed by a gallery.
        """
        installed = self.get(name)
        if installed is None and is_sideloaded(self.root / name):
            raise OperationalError(
                f"{self.root / name} is a sideloaded backend (run.sh, no metadata.json), which LocalAI loads",
                hint=f"'gallery adopt {name}' replaces it with the verified build of its gallery entry",
            )
        if installed is None and (self.root / name).exists():
            raise OperationalError(
                f"{self.root / name} exists but has no metadata.json; it was not installed by a gallery",
                hint="move it away, then install again",
            )
        return installed

    def pointing_at(self, name: str) -> list[str]:
        """Meta-backend directories that name ``name`` as their concrete backend."""
        return [m.name for m in self.installed() if m.meta_backend_for == name and m.name != name]

    def link_meta(self, meta: IndexEntry, concrete: IndexEntry, *, gallery: str, gallery_url: str) -> None:
        """Give the meta-backend ``<meta>/metadata.json`` naming the concrete backend it installed,
        with exactly LocalAI's fields and values (core/gallery/backends.go,
        InstallBackendFromGallery): name, meta_backend_for, gallery_url, installed_at (RFC 3339,
        seconds), the concrete entry's version, and no alias. An alias here would make LocalAI's
        ListSystemBackends take the meta directory itself, which has no run.sh, as a build of
        that alias (docs/localai.md).

        Raises:
            OperationalError: ``backends/<meta>`` exists and is not a meta-backend directory.
        """
        directory = self.root / meta.name
        existing = read_metadata(directory) if directory.is_dir() else None
        if existing is not None and existing.meta_backend_for == concrete.name and existing.alias is None \
                and existing.version == concrete.version:  # fmt: skip
            return
        if directory.exists() and (existing is None or existing.meta_backend_for is None):
            raise OperationalError(f"{directory} exists and is not a meta-backend directory; not touching it")
        record = BackendMetadata(
            format_version=METADATA_FORMAT_VERSION,
            name=meta.name,
            gallery_url=gallery_url,
            gallery=gallery,
            installed_at=datetime.now(UTC).replace(microsecond=0),
            version=concrete.version,
            meta_backend_for=concrete.name,
        )
        directory.mkdir(exist_ok=True)
        write_metadata(directory, record)
        fsync_directory(self.root)


def file_store_of(config: Config) -> FileStore:
    """The file store the installed trees link into (``backends_path/.gallery/store``)."""
    return FileStore(
        StateDir(config.backends_path).root / "store",
        link=config.file_store.link,
        read_only_files=config.file_store.read_only_files,
    )
