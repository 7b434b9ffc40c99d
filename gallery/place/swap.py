"""Placing, replacing, restoring and removing backend directories, journaled (edge module).

``backends/<name>`` must be the complete old or the complete new version after a crash at any
point, never a mix and never missing when it existed. Every change is one *transaction*:

    stage completely (elsewhere) -> sync files, then directories -> write the journal
    -> exchange staged and live (renameat2 RENAME_EXCHANGE; else two renames) -> fsync parents
    -> check the placed backend (failure: swap back) -> retire the old version (to a kept
    generation, or the trash) -> prune generations -> delete the journal

The journal (``.gallery/journal/<name>.json``) records the inode of the incoming directory and of
the live one. Whether the transaction *committed* is read from the disk, not from the journal: it
did when ``backends/<name>`` is the incoming inode (uninstall: when it no longer is the old one).
Recovery, run under the backend's lock by the next command, finishes a committed transaction and
undoes any other, finding each directory by inode wherever the crash left it. Every step is
idempotent, so a crash during recovery is recovered the same way.

Layout under ``backends_path/.gallery/`` (same filesystem as the backends, so renames are atomic):
``staging/<name>.<rand>``, ``generations/<name>/<seq>``, ``trash/<name>.<rand>``,
``journal/<name>.json``, ``locks/<name>.lock``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gallery.errors import GalleryError, OperationalError
from gallery.filelocks import LockBusy, backend_lock, recovery_lock
from gallery.place.fsops import FsOps
from gallery.place.interrupts import interrupts_deferred, raise_if_interrupted
from gallery.place.journal import (
    STATE_DIR,
    Journal,
    Op,
    RecoveryFailed,
    StateDir,
    pending_names,
    read_journal,
)
from gallery.place.metadata import read_metadata_name

__all__ = [
    "STATE_DIR",
    "STEPS",
    "Journal",
    "Op",
    "RecoveryFailed",
    "RecoveryReport",
    "StateDir",
    "Swapper",
    "check_backend",
    "pending_names",
    "recover_pending",
]


# Every point of a transaction where a test hook is called (and where a crash is survivable).
STEPS = (
    "synced",  # staging flushed (files, then directories)
    "journaled",  # journal durable; nothing live has changed
    "exchanged",  # live and staged swapped in one step (RENAME_EXCHANGE)
    "moved-live",  # two-rename fallback, first half: live moved to its retirement path
    "placed",  # the incoming directory is at backends/<name> (install; fallback second half)
    "checked",  # the placed backend passed its check: the transaction will finish
    "retired",  # the old version is a kept generation (or in the trash)
    "pruned",  # generations beyond keep_generations and the trash are gone
    "done",  # journal deleted
)

Step = Callable[[str], None]


def _no_step(_step: str) -> None:
    return None


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery did (for the CLI to tell the operator) and what it had to leave."""

    actions: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # busy locks or errors: recovered by a later command


def _ino(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def check_backend(path: Path, name: str) -> None:
    """The placed backend is usable: ``run.sh`` is a regular file and its metadata names it.

    Raises:
        OperationalError: with what is wrong.
    """
    run_sh = path / "run.sh"
    if not run_sh.is_file() or run_sh.is_symlink():
        raise OperationalError(f"{path}: run.sh is missing after the swap")
    if read_metadata_name(path) != name:
        raise OperationalError(f"{path}: metadata.json is missing or names another backend after the swap")


class Swapper:
    """Runs transactions on ``backends_path``. The caller holds the backend's lock."""

    def __init__(
        self,
        backends: Path,
        *,
        keep_generations: int,
        fs: FsOps | None = None,
        step: Step | None = None,
    ) -> None:
        self.state, self.backends = StateDir(backends), backends
        self.keep = keep_generations
        self.fs = fs or FsOps()
        self._step = step or _no_step

    # -- transactions -----------------------------------------------------------------------

    def place(
        self,
        name: str,
        staged: Path,
        *,
        op: Op,
        check: Callable[[Path], None] | None = None,
    ) -> None:
        """Put the completely built ``staged`` directory at ``backends/<name>``; the live version
        (if any) becomes the newest kept generation (``repair``: goes to the trash).

        Raises:
            OperationalError: a filesystem step failed; the live version is as it was, or the
                journal is left for recovery (the message says so).
        """
        try:
            self.fs.sync_files(staged)
            self.fs.sync_dirs(staged)
            self._step("synced")
            raise_if_interrupted()  # one Python lost while the staged copy was built or flushed
        except OSError as exc:
            _discard(self.fs, staged)
            raise OperationalError(
                f"{op} of {name} failed: cannot flush the staged version ({_describe(exc)}); "
                "the installed version is unchanged",
                hint="fix the filesystem problem, then retry",
            ) from exc
        except BaseException:  # Ctrl-C before the transaction: nothing was changed
            _discard(self.fs, staged)
            raise
        target = self.backends / name
        old = _ino(target)
        keep_old = old is not None and self.keep > 0 and op != "repair"
        outgoing = self.state.next_generation(name) if keep_old else self.state.new_trash_path(name)
        self._transact(op, name, staged, old, outgoing, discard_incoming=True, check=check)

    def rollback(self, name: str) -> Path:
        """Put the newest kept generation back at ``backends/<name>``; the version rolled back
        from is discarded. Returns the generation that was restored (its old path).

        Raises:
            OperationalError: nothing is kept, or a filesystem step failed.
        """
        kept = self.state.kept(name)
        if not kept:
            raise OperationalError(
                f"no previous version of {name} is kept",
                hint="keep_generations (default 1) sets how many upgrades can be rolled back",
            )
        source = kept[-1]
        old = _ino(self.backends / name)
        self._transact("rollback", name, source, old, self.state.new_trash_path(name), discard_incoming=False)
        return source

    def remove(self, name: str) -> None:
        """Remove ``backends/<name>`` and its kept generations (present or gone, never half)."""
        old = _ino(self.backends / name)
        if old is None:
            return
        self._transact("uninstall", name, None, old, self.state.new_trash_path(name), discard_incoming=True)

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, name: str) -> str | None:
        """Settle ``name``'s journaled transaction (caller holds the lock) and remove its orphaned
        staging and trash directories. Returns what was done, or ``None`` if nothing was pending.

        Raises:
            RecoveryFailed: the journal is unreadable or a step failed (it stays for a later try).
        """
        done: str | None = None
        path = self.state.journal(name)
        if path.exists():
            journal = read_journal(path, self.state.root)
            committed = self._committed(journal)
            try:
                if committed:
                    self._finish(journal)
                else:
                    self._undo(journal)
            except OSError as exc:
                raise RecoveryFailed(
                    f"cannot recover the interrupted {journal.op} of {name}: {exc}",
                    hint="fix the filesystem problem; the next gallery command retries",
                ) from exc
            done = f"{journal.op} of {name} was interrupted; " + ("finished it" if committed else "undid it")
        for orphan in self.state.leftovers(name):  # we hold the lock: nobody is building them
            try:
                self.fs.remove_tree(orphan)
            except OSError as exc:
                raise RecoveryFailed(
                    f"cannot remove {orphan}, left by an interrupted operation on {name}: {_describe(exc)}",
                    hint="fix the filesystem problem; the next gallery command retries",
                ) from exc
            done = done or f"removed leftovers of an interrupted operation on {name}"
        return done

    # -- the sequence -----------------------------------------------------------------------

    def _transact(self, op: Op, name: str, incoming: Path | None, old: int | None, outgoing: Path, *,
                  discard_incoming: bool, check: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        """Journal, commit, finish: one transaction, which Ctrl-C never stops halfway."""
        with interrupts_deferred():
            self._run(self._begin(op, name, incoming, old, outgoing, discard_incoming), check)

    def _begin(
        self,
        op: Op,
        name: str,
        incoming: Path | None,
        old: int | None,
        outgoing: Path,
        discard_incoming: bool,
    ) -> Journal:
        journal = Journal(
            op=op,
            name=name,
            incoming=self.state.rel(incoming) if incoming is not None else None,
            incoming_ino=_ino(incoming) if incoming is not None else None,
            old_ino=old,
            outgoing=self.state.rel(outgoing),
            aside=self.state.rel(self.state.new_trash_path(name)),
            discard_incoming=discard_incoming,
            started_at=datetime.now(UTC),
        )
        self._wrap(lambda: self._write_journal(journal), journal, before_commit=True)
        self._step("journaled")
        return journal

    def _run(self, journal: Journal, check: Callable[[Path], None] | None) -> None:
        name = journal.name
        target = self.backends / name
        incoming = self.state.absolute(journal.incoming)
        outgoing = self.state.root / journal.outgoing

        def commit() -> None:
            if incoming is None:  # uninstall
                self.fs.mkdir(outgoing.parent)
                self.fs.rename(target, outgoing)
                self._step("moved-live")
            elif journal.old_ino is None:
                self.fs.rename(incoming, target)
                self._step("placed")
            elif self.fs.exchange(incoming, target):
                self._step("exchanged")
            else:
                self.fs.mkdir(outgoing.parent)
                self.fs.rename(target, outgoing)
                self._step("moved-live")
                self.fs.rename(incoming, target)
                self._step("placed")
            self._fsync_parents(journal)
            if incoming is not None:
                (check or (lambda path: check_backend(path, name)))(target)
            self._step("checked")

        self._wrap(commit, journal, before_commit=True)
        self._wrap(lambda: self._finish(journal), journal, before_commit=False)

    def _wrap(self, action: Callable[[], None], journal: Journal, *, before_commit: bool) -> None:
        """Run ``action``; on failure before the commit is final, undo (swap back) and re-raise
        as an ``OperationalError`` that says the live version is unchanged."""
        try:
            action()
        except (OSError, GalleryError) as exc:
            reason = exc.message if isinstance(exc, GalleryError) else _describe(exc)
            if not before_commit:
                raise OperationalError(
                    f"{journal.op} of {journal.name} is in place but could not be completed: {reason}",
                    hint="the next gallery command completes it (or run 'gallery fsck')",
                ) from exc
            try:
                self._undo(journal)
            except OSError as undo_exc:
                raise OperationalError(
                    f"{journal.op} of {journal.name} failed ({reason}) and could not be undone yet "
                    f"({_describe(undo_exc)})",
                    hint="the next gallery command recovers it; 'gallery doctor' shows pending recovery",
                ) from exc
            raise OperationalError(
                f"{journal.op} of {journal.name} failed: {reason}; the installed version is unchanged",
                hint="free space or fix the filesystem, then retry",
            ) from exc

    def _committed(self, journal: Journal) -> bool:
        target = self.backends / journal.name
        if journal.incoming_ino is None:
            return _ino(target) != journal.old_ino
        return _ino(target) == journal.incoming_ino

    def _finish(self, journal: Journal) -> None:
        name = journal.name
        outgoing = self.state.root / journal.outgoing
        if journal.old_ino is not None:
            old_at = self._find(journal, journal.old_ino)
            if old_at is not None and old_at != outgoing:
                self.fs.mkdir(outgoing.parent)
                self.fs.rename(old_at, outgoing)
                self.fs.fsync_dir(old_at.parent)
                self.fs.fsync_dir(outgoing.parent)
                self.fs.fsync_dir(outgoing.parent.parent)  # generations/<name> may be new
        self._step("retired")
        if journal.op == "uninstall":
            generations = self.state.generations(name)
            if generations.exists():
                doomed = self.state.new_trash_path(name)
                self.fs.rename(generations, doomed)
                self.fs.remove_tree(doomed)
        else:
            self._prune(name)
        if outgoing.parent == self.state.trash:
            self.fs.remove_tree(outgoing)
        self._step("pruned")
        self.fs.unlink(self.state.journal(name))
        self._step("done")

    def _undo(self, journal: Journal) -> None:
        target = self.backends / journal.name
        aside = self.state.absolute(journal.aside)
        if aside is None:
            raise RecoveryFailed(f"the journal of {journal.name} names no place for the old version")
        if journal.old_ino is not None:
            old_at = self._find(journal, journal.old_ino)
            if old_at is None:
                raise FileNotFoundError(f"the previous {journal.name} is nowhere to be found")
            if old_at != target:
                if _ino(target) is None:
                    self.fs.rename(old_at, target)
                elif not self.fs.exchange(old_at, target):
                    self.fs.mkdir(aside.parent)
                    self.fs.rename(target, aside)
                    self.fs.rename(old_at, target)
                self._fsync_parents(journal)
        elif journal.incoming_ino is not None and _ino(target) == journal.incoming_ino:
            self.fs.mkdir(aside.parent)
            self.fs.rename(target, aside)
            self._fsync_parents(journal)
        if journal.incoming_ino is not None:
            new_at = self._find(journal, journal.incoming_ino)
            incoming = self.state.absolute(journal.incoming)
            if incoming is None:
                raise RecoveryFailed(f"the journal of {journal.name} names no incoming directory")
            if new_at is not None and journal.discard_incoming:
                self.fs.remove_tree(new_at)
            elif new_at is not None and new_at != incoming:
                self.fs.rename(new_at, incoming)
                self.fs.fsync_dir(incoming.parent)
        self.fs.unlink(self.state.journal(journal.name))

    def _find(self, journal: Journal, ino: int) -> Path | None:
        for path in (
            self.backends / journal.name,
            self.state.absolute(journal.incoming),
            self.state.absolute(journal.outgoing),
            self.state.absolute(journal.aside),
        ):
            if path is not None and _ino(path) == ino:
                return path
        return None

    def _fsync_parents(self, journal: Journal) -> None:
        parents = {self.backends}
        for rel in (journal.incoming, journal.outgoing, journal.aside):
            path = self.state.absolute(rel)
            if path is not None and path.parent.exists():
                parents.add(path.parent)
        for parent in sorted(parents):
            self.fs.fsync_dir(parent)

    def _prune(self, name: str) -> None:
        kept = self.state.kept(name)
        for stale in kept[: max(0, len(kept) - self.keep)]:
            doomed = self.state.new_trash_path(name)
            self.fs.mkdir(doomed.parent)
            self.fs.rename(stale, doomed)
            self.fs.remove_tree(doomed)

    # -- journal files ----------------------------------------------------------------------

    def _write_journal(self, journal: Journal) -> None:
        self.fs.mkdir(self.state.journals)
        self.fs.write_file(self.state.journal(journal.name), journal.model_dump_json(indent=2).encode())


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _discard(fs: FsOps, staged: Path) -> None:
    with contextlib.suppress(OSError):  # else the next command removes it as an orphan
        fs.remove_tree(staged)


def recover_pending(backends: Path, *, keep_generations: int, fs: FsOps | None = None) -> RecoveryReport:
    """Recover every interrupted operation whose backend lock is free; never wait for a lock held
    by a live process (readers call this too): when another process is recovering, it is left to
    it. Writes nothing when nothing is pending.
    """
    names = pending_names(backends)
    if not names:
        return RecoveryReport()
    state = StateDir(backends)
    swapper = Swapper(backends, keep_generations=keep_generations, fs=fs)
    actions: list[str] = []
    skipped: list[str] = []
    try:
        with recovery_lock(state.root, timeout=0):
            for name in names:
                try:
                    with backend_lock(state.root, name, timeout=0):
                        done = swapper.recover(name)
                except LockBusy:
                    continue  # its owner is alive and will finish it
                except GalleryError as exc:
                    skipped.append(exc.message)
                    continue
                # One backend's broken leftovers never stop the others' recovery or the command.
                except Exception as exc:
                    skipped.append(
                        f"{name}: cannot recover ({type(exc).__name__}: {exc}); its journal "
                        f"{state.journal(name)} is kept: see 'recovery' in docs/troubleshooting.md"
                    )
                    continue
                if done:
                    actions.append(done)
    except LockBusy:
        pass  # another process is recovering right now
    except GalleryError as exc:
        skipped.append(exc.message)
    return RecoveryReport(tuple(actions), tuple(skipped))
