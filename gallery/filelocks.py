"""Process locks on files (filelock), with a timeout and a message naming the lock (edge module):
per backend and for recovery under ``backends_path/.gallery/locks/``, per blob being fetched
under ``cache_path/locks/``.

One lock per backend serialises install, upgrade, rollback, uninstall and repair of that backend
across processes; a second process waits up to ``timeouts.lock`` seconds and then fails with exit 1
and a message naming the lock. Readers never take these locks: they only *try* one (without
waiting) to recover a journaled operation whose owner died.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import filelock

from gallery.errors import OperationalError

__all__ = ["LockBusy", "backend_lock", "held", "lock_path", "recovery_lock"]

_RECOVERY = ".recovery"


class LockBusy(OperationalError):
    """Another process holds the lock (after waiting the configured time)."""


def lock_path(state_dir: Path, name: str) -> Path:
    return state_dir / "locks" / f"{name}.lock"


@contextlib.contextmanager
def backend_lock(state_dir: Path, name: str, *, timeout: float) -> Iterator[None]:
    """Hold ``name``'s lock; ``timeout`` 0 means try once.

    Raises:
        LockBusy: another process held it for ``timeout`` seconds.
        OperationalError: the lock file cannot be created (read-only backends directory).
    """
    path = lock_path(state_dir, name)
    with held(path, timeout, f"another gallery process is changing {name}"):
        yield


@contextlib.contextmanager
def recovery_lock(state_dir: Path, *, timeout: float) -> Iterator[None]:
    """The short global lock under which pending operations are recovered (one recoverer at a time)."""
    with held(lock_path(state_dir, _RECOVERY), timeout, "another gallery process is recovering"):
        yield


@contextlib.contextmanager
def held(path: Path, timeout: float, busy: str) -> Iterator[None]:
    """Hold the lock file ``path``, waiting up to ``timeout`` seconds (0: try once).

    Raises:
        LockBusy: another process holds it (``busy`` says what it is doing).
        OperationalError: the lock file cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationalError(
            f"cannot create lock directory {path.parent}: {exc.strerror or exc}",
            hint="check that backends_path is writable by this user",
        ) from exc
    lock = filelock.FileLock(path, timeout=timeout, blocking=timeout > 0)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        waited = f"; waited {timeout:g}s" if timeout > 0 else ""
        raise LockBusy(
            f"{busy} (lock {path}){waited}",
            hint="wait for it to finish and retry, or raise timeouts.lock in the config",
        ) from exc
    except OSError as exc:
        raise OperationalError(
            f"cannot take lock {path}: {exc.strerror or exc}",
            hint="check that backends_path is writable by this user",
        ) from exc
    try:
        yield
    finally:
        lock.release()
