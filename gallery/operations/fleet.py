"""Fleet operations over an Installer: ``gallery lock`` and ``gallery preload [--lock]``.

``lock`` resolves, pins and verifies each requested backend once per platform (and, for
meta-backends, per capability) and collects the lock entries; nothing is written but the lock file
(by the caller). ``preload`` installs in parallel: from a lock file exactly the locked digests
(this worker's platform; for a meta-backend the entry of the best capability this worker has),
or by name what the galleries offer now. Results come back in request order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from gallery.config.models import Config
from gallery.errors import BackendNotFound, GalleryError, UsageError
from gallery.operations.installer import BatchResult, Installer, InstallResult
from gallery.operations.lockfile import LockEntry, LockFile

__all__ = ["LockOutcome", "lock_backends", "lock_fleet", "preload", "select_locked"]

InstallerFactory = Callable[[Config], Installer]


@dataclass(frozen=True)
class LockOutcome:
    lock: LockFile
    batch: BatchResult  # one result per (name, platform, capability); the lock is complete only if all passed

    @property
    def exit_code(self) -> int:
        return self.batch.exit_code


def lock_backends(
    config: Config,
    names: Sequence[str],
    *,
    make_installer: InstallerFactory,
    platforms: Sequence[str] = (),
    capabilities: Sequence[str] = (),
) -> LockOutcome:
    """Pin and verify every name for every platform (default: the configured one) and capability
    (default: the configured or detected one); entries are de-duplicated."""
    entries: dict[tuple[str, str, str, str], LockEntry] = {}
    results: list[InstallResult] = []
    for platform in platforms or (config.platform,):
        for capability in capabilities or (None,):
            variant = config.with_overrides(capability=capability, platform=platform)
            installer = make_installer(variant)
            for name in names:
                label = f"{name} ({platform}" + (f", capability {capability})" if capability else ")")
                try:
                    entry = installer.lock_one(name)
                except GalleryError as exc:
                    results.append(InstallResult(label, "failed", error=exc))
                    continue
                entries.setdefault(entry.key(), entry)
                results.append(
                    InstallResult(label, "locked", entry.name, entry.resolved_digest, entry.candidate,
                                  entry.verification.verified)
                )  # fmt: skip
    return LockOutcome(LockFile(backends=tuple(entries.values())).sorted(), BatchResult(tuple(results)))


def lock_fleet(
    installer: Installer,
    names: Sequence[str],
    *,
    platforms: Sequence[str] = (),
    capabilities: Sequence[str] = (),
) -> LockOutcome:
    """``lock_backends`` for every platform and capability, each variant sharing ``installer``'s
    HTTP client, registry client, verifier and loaded galleries (the indexes are read once)."""
    session = installer.session

    def variant(config: Config) -> Installer:
        return Installer(config, client=session.client, verifier=session.verifier, detector=session.detector,
                         registry=session.registry, catalog=session.catalog)  # fmt: skip

    return lock_backends(session.config, names, make_installer=variant, platforms=platforms,
                         capabilities=capabilities)  # fmt: skip


def select_locked(
    lock: LockFile, *, platform: str, preferences: Sequence[str], names: Sequence[str] = ()
) -> list[LockEntry]:
    """The entries this worker installs: its platform; for each meta-backend the entry of the first
    capability in ``preferences`` the lock has; only ``names`` (concrete or meta) when given.

    Raises:
        UsageError: the lock has nothing for this platform, or a requested name is not in it.
    """
    mine = [e for e in lock.backends if e.platform == platform]
    if not mine:
        offered = sorted({e.platform for e in lock.backends})
        raise UsageError(
            f"the lock file has no backends for platform {platform} (it has {', '.join(offered)})",
            hint="lock with --platform for every platform of the fleet",
        )
    chosen = [e for e in mine if e.meta is None]
    for meta in sorted({e.meta for e in mine if e.meta is not None}):
        group = {e.capability: e for e in mine if e.meta == meta}
        best = next((group[c] for c in preferences if c in group), None)
        if best is None:
            raise BackendNotFound(
                f"the lock file has {meta} only for capabilities {', '.join(sorted(str(c) for c in group))}, "
                f"none of this worker's ({', '.join(preferences)})",
                hint="lock it with --capability for this worker's capability",
            )
        chosen.append(best)
    if names:
        missing = [n for n in names if not any(n in (e.name, e.meta) for e in chosen)]
        if missing:
            raise BackendNotFound(f"not in the lock file for this worker: {', '.join(missing)}")
        chosen = [e for e in chosen if e.name in names or e.meta in names]
    return chosen


def preload(
    installer: Installer,
    *,
    names: Sequence[str] = (),
    lock: LockFile | None = None,
    jobs: int = 1,
    fail_fast: bool = False,
) -> BatchResult:
    """Install in parallel (``jobs`` backends at a time); per-backend locks keep other processes
    doing the same from colliding, and the blob cache downloads each blob once."""
    if lock is not None:
        chosen = select_locked(
            lock,
            platform=installer.config.platform,
            preferences=installer.capability_preferences,
            names=names,
        )
        tasks: list[Callable[[], InstallResult]] = [partial(installer.preload_locked, e) for e in chosen]
    else:
        if not names:
            raise UsageError(
                "give backend names or --lock FILE", hint="gallery preload NAME... | --lock FILE"
            )
        installer.catalog  # noqa: B018  (load the indexes once, before the threads start)
        tasks = [partial(installer.preload_one, n) for n in names]
    return BatchResult(tuple(_run_parallel(tasks, jobs=jobs, fail_fast=fail_fast)))


def _run_parallel(
    tasks: Sequence[Callable[[], InstallResult]], *, jobs: int, fail_fast: bool
) -> list[InstallResult]:
    if jobs <= 1 or len(tasks) <= 1:
        results: list[InstallResult] = []
        for task in tasks:
            results.append(task())
            if fail_fast and results[-1].error is not None:
                break
        return results
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="preload") as pool:
        futures = [pool.submit(task) for task in tasks]
        done: list[Any] = []
        for future in futures:
            result = future.result()
            done.append(result)
            if fail_fast and result.error is not None:
                for pending in futures:
                    pending.cancel()
                break
        return done
