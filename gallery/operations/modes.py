"""What each operation is, as data: the candidate loop and the deployer read these flags instead
of comparing mode names (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gallery.results import Status

__all__ = ["ADOPT", "DRY_RUN", "EXPORT", "INSTALL", "LOCK", "PRELOAD", "REPAIR", "UPGRADE", "Mode"]


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    done: Status  # the status of a success
    verb: str  # for "no candidate could be ..."
    needs_installed: bool = False  # it replaces something: the backend must be installed
    refuses_other_installed: bool = False  # install: another installed version is upgrade's job
    writes: bool = True  # places the backend (dry-run, lock and export only pin and verify)
    target: Literal["offered", "recorded"] = "offered"  # repair re-fetches the recorded digest
    checks_downgrade: bool = False  # refuse a build signed before the installed one
    shortcut_unchanged: bool = True  # the installed digest is offered: done after one HEAD
    reverify_unverified: bool = False  # ... unless it was installed unverified and a policy exists now
    fetch_blobs: bool = False  # export: bring config and layers into the cache without placing
    replaces_foreign: bool = False  # adopt: replaces what LocalAI or a person put there

    @property
    def takes_lock(self) -> bool:
        return self.writes


INSTALL = Mode("install", "installed", "installed", refuses_other_installed=True)
UPGRADE = Mode(
    "upgrade", "upgraded", "upgraded", needs_installed=True, checks_downgrade=True, reverify_unverified=True
)
DRY_RUN = Mode(
    "dry-run",
    "would-upgrade",
    "upgraded",
    needs_installed=True,
    writes=False,
    checks_downgrade=True,
    reverify_unverified=True,
)
# A worker converging: installs what is absent, upgrades what is installed.
PRELOAD = Mode("preload", "installed", "installed", checks_downgrade=True, reverify_unverified=True)
# Lock and export need the pinned image and its evidence, so they never stop at "unchanged".
LOCK = Mode("lock", "locked", "locked", writes=False, shortcut_unchanged=False)
EXPORT = Mode("export", "exported", "exported", writes=False, shortcut_unchanged=False, fetch_blobs=True)
REPAIR = Mode(
    "repair", "repaired", "repaired", needs_installed=True, target="recorded", shortcut_unchanged=False
)
# A LocalAI-installed or sideloaded backend replaced by the verified build of its gallery entry.
ADOPT = Mode("adopt", "adopted", "adopted", shortcut_unchanged=False, replaces_foreign=True)
