"""The bookkeeping of the swap under ``backends_path/.gallery/``: the journal of an in-flight
transaction, the state directory's layout, and what an interrupted command left behind."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gallery.errors import OperationalError
from gallery.files import read_at_most
from gallery.names import is_valid_name

__all__ = [
    "JOURNAL_FORMAT_VERSION",
    "STATE_DIR",
    "Journal",
    "Op",
    "RecoveryFailed",
    "StateDir",
    "pending_names",
    "read_journal",
]

STATE_DIR = ".gallery"
JOURNAL_FORMAT_VERSION = 1
_MAX_JOURNAL_BYTES = 1024 * 1024  # ours are a few hundred bytes; a larger file is not one of ours

Op = Literal["install", "upgrade", "rollback", "uninstall", "repair"]


class Journal(BaseModel):
    """One in-flight transaction on one backend. Paths are relative to the state directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = JOURNAL_FORMAT_VERSION
    op: Op
    name: str
    incoming: str | None  # the directory being put in place (staging or a kept generation)
    incoming_ino: int | None
    old_ino: int | None  # the live directory when the transaction began (None: nothing installed)
    outgoing: str  # where the displaced live directory goes
    aside: str  # a free path in the trash, for moving a directory out of the way during undo
    discard_incoming: bool  # undo deletes the incoming directory (staging) or puts it back (generation)
    started_at: datetime


@dataclass(frozen=True)
class StateDir:
    """Paths of our bookkeeping under ``backends_path/.gallery``."""

    backends: Path

    @property
    def root(self) -> Path:
        return self.backends / STATE_DIR

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    @property
    def journals(self) -> Path:
        return self.root / "journal"

    def journal(self, name: str) -> Path:
        return self.journals / f"{name}.json"

    def generations(self, name: str) -> Path:
        return self.root / "generations" / name

    def kept(self, name: str) -> list[Path]:
        """Kept generations of ``name``, oldest first."""
        directory = self.generations(name)
        if not directory.is_dir():
            return []
        numbered = [p for p in directory.iterdir() if p.name.isdigit() and p.is_dir() and not p.is_symlink()]
        return sorted(numbered, key=lambda p: int(p.name))

    def rel(self, path: Path) -> str:
        """``path`` as a journal records it: relative to the state directory."""
        return str(path.relative_to(self.root))

    def absolute(self, rel: str | None) -> Path | None:
        return None if rel is None else self.root / rel

    def next_generation(self, name: str) -> Path:
        kept = self.kept(name)
        number = int(kept[-1].name) + 1 if kept else 1
        return self.generations(name) / str(number)

    def leftovers(self, name: str) -> list[Path]:
        """Staging and trash directories of ``name`` (``<name>.<rand>``), sorted."""
        found = []
        for parent in (self.staging, self.trash):
            if parent.is_dir():
                found += [p for p in parent.iterdir() if p.name.rpartition(".")[0] == name]
        return sorted(found)

    def new_trash_path(self, name: str) -> Path:
        return self.trash / f"{name}.{secrets.token_hex(6)}"

    def new_staging(self, name: str) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self.staging / f"{name}.{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        return path


class RecoveryFailed(OperationalError):
    """A journaled operation cannot be finished or undone; the message says what is where."""


def read_journal(path: Path, root: Path) -> Journal:
    """A journal file, checked: our format, naming its own backend, paths inside ``root``.

    Raises:
        RecoveryFailed: it is unreadable, newer, or names something it must not.
    """
    try:
        with path.open("rb") as handle:
            raw = read_at_most(handle, _MAX_JOURNAL_BYTES)
        if len(raw) > _MAX_JOURNAL_BYTES:
            raise ValueError(f"larger than {_MAX_JOURNAL_BYTES} bytes")
        journal = Journal.model_validate_json(raw)
    except (OSError, ValidationError, ValueError) as exc:
        raise RecoveryFailed(
            f"journal {path} is unreadable: {exc}",
            hint="inspect it; 'gallery fsck' reports the directories it names",
        ) from exc
    if journal.format_version > JOURNAL_FORMAT_VERSION:
        raise RecoveryFailed(f"journal {path} was written by a newer gallery", hint="upgrade gallery")
    if journal.name != path.stem or not is_valid_name(journal.name):
        raise RecoveryFailed(f"journal {path} names {journal.name!r}")
    for rel in (journal.incoming, journal.outgoing, journal.aside):
        if rel is not None and (rel.startswith("/") or ".." in Path(rel).parts):
            raise RecoveryFailed(f"journal {path} names a path outside {root}: {rel!r}")
    return journal


def pending_names(backends: Path) -> list[str]:
    """Backends with a journal, staging or trash left by an interrupted command (no lock, no write)."""
    state = StateDir(backends)
    names: set[str] = set()
    if state.journals.is_dir():
        names |= {p.stem for p in state.journals.glob("*.json")}
    for parent in (state.staging, state.trash):
        if parent.is_dir():
            names |= {p.name.rpartition(".")[0] for p in parent.iterdir()}
    return sorted(n for n in names if is_valid_name(n))
