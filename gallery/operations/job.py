"""One backend's run through the candidate loop: what every candidate of it shares (pure value)."""

from __future__ import annotations

from dataclasses import dataclass

from gallery.catalog.resolve import Resolution
from gallery.operations.lockfile import LockEntry
from gallery.operations.modes import Mode
from gallery.place.metadata import BackendMetadata
from gallery.verify.plan import EntryPlan

__all__ = ["Job"]


@dataclass(frozen=True)
class Job:
    resolution: Resolution
    mode: Mode
    plan: EntryPlan  # what each candidate must prove, decided before anything is written
    installed: BackendMetadata | None  # what is there now (what an upgrade replaces)
    locked: LockEntry | None = None  # preload --lock: what the pinned image must match
    allow_downgrade: bool = False

    @property
    def name(self) -> str:
        return self.resolution.entry.name
