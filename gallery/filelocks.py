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
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gallery.errors import OperationalError

__all__ = ["LockBusy", "backend_lock", "held", "holder", "lock_path", "recovery_lock"]

_RECOVERY = ".recovery"


class LockBusy(OperationalError):
    """Another process holds the lock (after waiting the configured time)."""


def lock_path(state_dir: Path, name: str) -> Path:
    return state_dir / "locks" / f"{name}.lock"


_MAX_OWNER_BYTES = 4096
OnWait = Callable[[str], None]


@contextlib.contextmanager
def backend_lock(
    state_dir: Path, name: str, *, timeout: float, operation: str = "", on_wait: OnWait | None = None
) -> Iterator[None]:
    """Hold ``name``'s lock; ``timeout`` 0 means try once. ``operation`` is recorded next to the
    lock (with our pid) for whoever waits; ``on_wait`` hears once, before we wait, who holds it
    and for how long we will wait.

    Raises:
        LockBusy: another process held it for ``timeout`` seconds.
        OperationalError: the lock file cannot be created (read-only backends directory).
    """
    path = lock_path(state_dir, name)
    with held(path, timeout, f"another gallery process is changing {name}", operation=operation,
              on_wait=on_wait):  # fmt: skip
        yield


def holder(path: Path) -> str:
    """Who holds the lock ``path``, as recorded by its holder: ``pid 123 (install) for 12 s``;
    ``""`` when unknown (an older gallery, or it is just being released)."""
    try:
        with (path.parent / f"{path.name}.owner").open("rb") as handle:
            data = json.loads(handle.read(_MAX_OWNER_BYTES))
        pid, operation, since = int(data["pid"]), str(data["operation"])[:40], float(data["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    what = f" ({operation})" if operation else ""
    return f"pid {pid}{what} for {max(0, round(time.time() - since))} s"


def _record_owner(path: Path, operation: str) -> Path:
    owner = path.parent / f"{path.name}.owner"
    temporary = path.parent / f".{path.name}.owner.{os.getpid()}"
    try:
        temporary.write_text(json.dumps({"pid": os.getpid(), "operation": operation, "since": time.time()}))
        temporary.replace(owner)
    except OSError:
        pass  # who holds it is a courtesy to waiters, never a reason to fail
    return owner


@contextlib.contextmanager
def recovery_lock(state_dir: Path, *, timeout: float) -> Iterator[None]:
    """The short global lock under which pending operations are recovered (one recoverer at a time)."""
    with held(lock_path(state_dir, _RECOVERY), timeout, "another gallery process is recovering"):
        yield


@contextlib.contextmanager
def held(
    path: Path, timeout: float, busy: str, *, operation: str = "", on_wait: OnWait | None = None
) -> Iterator[None]:
    """Hold the lock file ``path``, waiting up to ``timeout`` seconds (0: try once); while held,
    ``path.owner`` says who holds it (see ``backend_lock``).

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
    import filelock  # only where a lock is taken: readers' start-up does not pay for it

    lock = filelock.FileLock(path, timeout=timeout, blocking=timeout > 0)
    try:
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            if timeout <= 0:
                raise
            if on_wait is not None:
                who = holder(path)
                on_wait(f"{who or 'another gallery process'} holds the lock; waiting up to {timeout:g} s")
            lock.acquire()
    except filelock.Timeout as exc:
        who = holder(path)
        waited = f"; waited {timeout:g} s" if timeout > 0 else ""
        raise LockBusy(
            f"{busy}{f' ({who})' if who else ''} (lock {path}){waited}",
            hint="wait for it to finish and retry, or raise timeouts.lock in the config",
        ) from exc
    except OSError as exc:
        raise OperationalError(
            f"cannot take lock {path}: {exc.strerror or exc}",
            hint="check that backends_path is writable by this user",
        ) from exc
    owner = _record_owner(path, operation)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()
