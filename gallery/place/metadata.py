"""``backends/<name>/metadata.json``: what is installed, from where, and how it was verified.

LocalAI-compatible fields first (``name, gallery_url, installed_at, version, uri, alias, digest``),
then ours. A file without ``format_version`` was written by LocalAI: it is read, listed and can be
upgraded in place. A newer ``format_version`` is refused with a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from gallery.digests import Digest, is_digest
from gallery.errors import OperationalError
from gallery.files import atomic_write_chunks, read_at_most
from gallery.verify.evidence import Evidence

__all__ = ["METADATA_FORMAT_VERSION", "BackendMetadata", "LayerRecord", "read_metadata", "write_metadata"]

METADATA_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
_MAX_METADATA_BYTES = 256 * 1024 * 1024


class LayerRecord(BaseModel):
    """One layer of an installed (or locked) image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: Digest
    size: int
    media_type: str


class BackendMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    format_version: int | None = None
    name: str
    gallery_url: str | None = None
    installed_at: datetime | None = None
    version: str | None = None
    uri: str | None = None
    alias: str | None = None
    digest: str | None = None
    gallery: str | None = None
    resolved_digest: str | None = None
    manifest_digest: str | None = None
    platform: str | None = None
    candidate: str | None = None
    layers: tuple[LayerRecord, ...] = ()
    files: tuple[dict[str, Any], ...] = ()
    verification: Evidence | None = None
    meta_backend_for: str | None = None
    ad_hoc: bool | None = None  # installed from a reference (install --uri), not a gallery entry
    copied_links: tuple[str, ...] | None = None  # links written as copies (link_fallback: copy)

    @field_validator("meta_backend_for")
    @classmethod
    def _meta_for(cls, value: str | None) -> str | None:
        # LocalAI writes "meta_backend_for": "" for a concrete backend: not a meta-backend of "".
        return value or None

    @field_validator("digest", "resolved_digest", "manifest_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not is_digest(value):
            raise ValueError(f"{value!r} is not a sha256 digest")
        return value

    @property
    def written_by_localai(self) -> bool:
        return self.format_version is None


def read_metadata(backend_dir: Path) -> BackendMetadata | None:
    """The metadata of an installed backend, or ``None`` if the directory has none.

    Raises:
        OperationalError: the file is unreadable, damaged or from a newer gallery.
    """
    path = backend_dir / METADATA_FILE
    data = _read(path)
    if data is None:
        return None
    try:
        # Parsed by pydantic-core straight into the model: no intermediate Python tree of a file
        # list that can have tens of thousands of entries.
        metadata = BackendMetadata.model_validate_json(data)
    except ValidationError as exc:
        _refuse_newer(path, data)
        raise _damaged(path, exc) from exc
    _refuse_newer(path, data, metadata.format_version)
    return metadata


class _NameOnly(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str


def read_metadata_name(backend_dir: Path) -> str | None:
    """Only the ``name`` of a backend's metadata (the rest is skipped by the parser, not built):
    what the post-swap check needs, without materialising a file list of 40,000 entries.

    Raises:
        OperationalError: unreadable or damaged.
    """
    path = backend_dir / METADATA_FILE
    data = _read(path)
    if data is None:
        return None
    try:
        return _NameOnly.model_validate_json(data).name
    except ValidationError as exc:
        raise _damaged(path, exc) from exc


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return read_at_most(handle, _MAX_METADATA_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationalError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _damaged(path: Path, exc: Exception) -> OperationalError:
    return OperationalError(f"{path} is damaged: {exc}", hint="run 'gallery fsck' or reinstall")


def _refuse_newer(path: Path, data: bytes, version: object = None) -> None:
    if version is None:
        try:
            raw = json.loads(data)
        except ValueError:
            return
        version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > METADATA_FORMAT_VERSION:
        raise OperationalError(
            f"{path} has format_version {version}, newer than this gallery understands",
            hint="upgrade gallery",
        )


def write_metadata(backend_dir: Path, metadata: BackendMetadata) -> None:
    atomic_write_chunks(backend_dir / METADATA_FILE, _metadata_json(metadata))


def _metadata_json(metadata: BackendMetadata) -> Iterator[bytes]:
    """The file, one file record per line, written as it is produced: the file list can have
    tens of thousands of entries (bench/performance.py: 41,000), never held as one string."""
    head = json.dumps(metadata.model_dump(mode="json", exclude={"files"}, exclude_none=True), indent=2)
    if not metadata.files:
        yield head.encode("utf-8") + b"\n"
        return
    yield head[: head.rindex("}")].rstrip().encode("utf-8") + b',\n  "files": [\n'
    last = len(metadata.files) - 1
    batch: list[str] = []
    for number, record in enumerate(metadata.files):
        batch.append("    " + json.dumps(record) + (",\n" if number < last else "\n"))
        if len(batch) == 1024:
            yield "".join(batch).encode("utf-8")
            batch.clear()
    yield ("".join(batch) + "  ]\n}\n").encode("utf-8")
