"""``backends/<name>/metadata.json``: what is installed, from where, and how it was verified.

LocalAI-compatible fields first (``name, gallery_url, installed_at, version, uri, alias, digest``),
then ours. A file without ``format_version`` was written by LocalAI: it is read, listed and can be
upgraded in place. A newer ``format_version`` is refused with a message.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .digests import Digest, is_digest
from .errors import OperationalError
from .fsutil import atomic_write_bytes, read_at_most
from .verification import Evidence

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
    try:
        with path.open("rb") as handle:
            data = read_at_most(handle, _MAX_METADATA_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationalError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(data)
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > METADATA_FORMAT_VERSION:
            raise OperationalError(
                f"{path} has format_version {version}, newer than this gallery understands",
                hint="upgrade gallery",
            )
        return BackendMetadata.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise OperationalError(f"{path} is damaged: {exc}", hint="run 'gallery fsck' or reinstall") from exc


def write_metadata(backend_dir: Path, metadata: BackendMetadata) -> None:
    # Serialised by pydantic-core straight to JSON: no Python copy of a file list that can have
    # tens of thousands of entries (bench/performance.py: 41,000 files).
    data = metadata.model_dump_json(exclude_none=True, indent=2)
    atomic_write_bytes(backend_dir / METADATA_FILE, data.encode("utf-8") + b"\n")
