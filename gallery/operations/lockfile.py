"""Lock files: exactly which bytes a fleet runs, written by ``gallery lock``, read by ``preload --lock``.

A lock file pins each backend to the digest that was verified when it was locked, per platform
(and, for meta-backends, per capability). It is *not* a trust root: ``preload --lock`` verifies
every digest again under the worker's current policy, and strict mode refuses an entry that was
not verified when locked. The format is stable and diff-friendly: JSON with sorted keys, entries
sorted, no timestamps of its own (the signature's integrated time is part of the evidence).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from gallery.digests import Digest
from gallery.errors import ConfigError
from gallery.files import atomic_write_bytes, read_at_most
from gallery.names import validate_name
from gallery.place.metadata import LayerRecord
from gallery.validation import describe_validation
from gallery.verify.evidence import Evidence

__all__ = ["LOCK_FORMAT_VERSION", "LockEntry", "LockFile", "read_lock", "write_lock"]

LOCK_FORMAT_VERSION = 1
_MAX_LOCK_BYTES = 64 * 1024 * 1024


class LockEntry(BaseModel):
    """One concrete backend on one platform, as it was pinned and verified."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gallery: str
    platform: str
    meta: str | None = None  # the meta-backend this entry was chosen for, with ``capability``
    capability: str | None = None
    candidate: str  # the URI that was pinned (the entry's uri, a mirror or a fallback)
    mirrors: tuple[str, ...] = ()  # the entry's other candidates, tried at the same digest
    resolved_digest: Digest
    manifest_digest: Digest
    layers: tuple[LayerRecord, ...]
    sha256: str | None = None  # tarballs: the file's sha256 (also its resolved digest)
    signature: str | None = None  # tarballs: where the sign-blob bundle was found
    verification: Evidence

    @field_validator("name", "gallery", "meta")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value)

    def key(self) -> tuple[str, str, str, str]:
        return (self.meta or "", self.capability or "", self.name, self.platform)


class LockFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = LOCK_FORMAT_VERSION
    backends: tuple[LockEntry, ...]

    @field_validator("format_version")
    @classmethod
    def _known(cls, value: int) -> int:
        if value > LOCK_FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is newer than this gallery understands (upgrade gallery)"
            )
        return value

    def blob_digests(self) -> set[str]:
        """Every layer the lock file pins (what ``cache prune --lock`` keeps)."""
        return {layer.digest for entry in self.backends for layer in entry.layers}

    def sorted(self) -> LockFile:
        return self.model_copy(update={"backends": tuple(sorted(self.backends, key=LockEntry.key))})


def write_lock(path: Path, lock: LockFile) -> None:
    data = lock.sorted().model_dump(mode="json", exclude_none=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_lock(path: Path) -> LockFile:
    """Raises: ConfigError (exit 2) for a missing, oversized, damaged or newer lock file."""
    try:
        with path.open("rb") as handle:
            data = read_at_most(handle, _MAX_LOCK_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read lock file {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_LOCK_BYTES:
        raise ConfigError(f"lock file {path} is larger than {_MAX_LOCK_BYTES} bytes")
    try:
        return LockFile.model_validate_json(data)
    except ValidationError as exc:
        problems = describe_validation(exc, limit=5)
        raise ConfigError(
            f"lock file {path} is not valid: {problems}", hint="write it again with 'gallery lock'"
        ) from exc
