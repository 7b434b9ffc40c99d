"""The installer: every operation on backends, over one ``Session`` (see ``gallery.operations``).

    resolve -> plan what each candidate must prove (gallery.trust; refusal before any write)
    -> backend lock (recover an interrupted operation first) -> for each candidate and registry
    endpoint: the trust gate pins and proves -> fetch by digest, extract into staging, run.sh,
    metadata.json -> journaled swap into place

Replacing a different installed version is ``upgrade``'s job (it keeps the old version as a
generation for ``rollback``), so ``install`` refuses it and says so. Upgrade, preload, lock,
export, repair and ``install --from`` run the very same candidate loop and gate; only their
``Mode`` differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from pydantic import ValidationError

from gallery.catalog.capability import CapabilityDetector
from gallery.catalog.galleries import Catalog, GalleryState
from gallery.catalog.index import IndexEntry
from gallery.catalog.resolve import Resolution, resolve_backend
from gallery.config.models import Config
from gallery.errors import GalleryError, Interrupted, OperationalError, UsageError
from gallery.oci.registry import RegistryClient
from gallery.operations.bundles import export_bundle, install_from_bundle
from gallery.operations.fsck import FsckOutcome, check_and_repair
from gallery.operations.gate import Unchanged
from gallery.operations.hooks import run_on_change
from gallery.operations.localai_dirs import system_backends
from gallery.operations.lockfile import LockEntry
from gallery.operations.locking import lock_entry, locked_resolution, locked_unverified
from gallery.operations.maintenance import adopt, qualified_name, repair, rollback, uninstall, verify_backends
from gallery.operations.modes import DRY_RUN, INSTALL, LOCK, PRELOAD, UPGRADE
from gallery.operations.runner import Runner, timed
from gallery.operations.session import Session
from gallery.place.fsops import FsOps
from gallery.place.interrupts import interrupt_handled, raise_if_interrupted
from gallery.place.metadata import BackendMetadata
from gallery.place.swap import RecoveryReport, Step, recover_pending
from gallery.prepare.blobcache import BlobCache
from gallery.progress import NoProgress, ProgressReporter
from gallery.results import BatchResult, InstallResult, UpdateCheck
from gallery.validation import describe_validation
from gallery.verify.evidence import Verifier
from gallery.verify.recheck import recorded_gallery

__all__ = ["BatchResult", "InstallResult", "Installer", "NoProgress", "ProgressReporter", "UpdateCheck"]


class Installer:
    """Owns one run's session: catalog, registry client, blob cache, verifier, backend store."""

    def __init__(
        self,
        config: Config,
        *,
        client: httpx.Client,
        verifier: Verifier,
        detector: CapabilityDetector,
        progress: ProgressReporter | None = None,
        registry: RegistryClient | None = None,
        catalog: Catalog | None = None,
        fs: FsOps | None = None,
        step: Step | None = None,
    ) -> None:
        """``fs`` and ``step`` are test seams: the filesystem operations of the swap (fault
        injection, order of operations) and a hook called at every step of it (crash tests)."""
        self.session = Session(config, client=client, verifier=verifier, detector=detector, progress=progress,
                               registry=registry, catalog=catalog, fs=fs, step=step)  # fmt: skip
        self._runner = Runner(self.session)

    @property
    def config(self) -> Config:
        return self.session.config

    @property
    def cache(self) -> BlobCache:
        return self.session.cache

    @property
    def verifier(self) -> Verifier:
        return self.session.verifier

    @property
    def registry(self) -> RegistryClient:
        return self.session.registry

    @property
    def catalog(self) -> Catalog:
        return self.session.catalog

    @property
    def capability_preferences(self) -> tuple[str, ...]:
        """Capability keys for meta-backends, best first (configured, or detected once)."""
        return self.session.selector.preferences

    # -- install, upgrade, preload ------------------------------------------------------------

    def install(self, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        """Install each name; go on past failures unless ``fail_fast``."""
        return self._batch(names, self.install_one, fail_fast=fail_fast)

    def install_one(self, requested: str) -> InstallResult:
        return timed(requested, lambda: self._runner.place(self._resolve(requested), INSTALL))

    def install_uri(
        self, uri: str, name: str, *, gallery: str, alias: str | None = None, sha256: str | None = None
    ) -> BatchResult:
        """Install an image reference, OCI layout, tarball or directory that no index lists, as
        ``name``, under gallery ``gallery``'s verification policy (LocalAI's ``backends install
        REF --name``): the same gate, candidates (tag fallbacks) and swap as any install.

        Raises:
            UsageError: no such gallery, or the entry would be invalid.
        """

        def action() -> InstallResult:
            made = ad_hoc_resolution(self.config, uri, name, gallery=gallery, alias=alias, sha256=sha256)
            return self._runner.place(made, INSTALL)

        return BatchResult((timed(name, action),))

    def upgrade(
        self,
        names: Sequence[str],
        *,
        all_installed: bool = False,
        dry_run: bool = False,
        fail_fast: bool = False,
        allow_downgrade: bool = False,
    ) -> BatchResult:
        """Upgrade each installed backend (``all_installed``: every one; meta-backends through
        their concrete backend) to what its gallery offers now; ``dry_run`` pins and verifies only.
        A build signed before the installed one is refused unless ``allow_downgrade``."""
        skipped: dict[str, InstallResult] = {}
        if all_installed:
            backends = [m for m in self.installed() if m.meta_backend_for is None]
            names = [m.name for m in backends]
            skipped = {m.name: _not_from_a_gallery(m) for m in backends if self._ad_hoc(m)}

        def one(name: str) -> InstallResult:
            if name in skipped:
                return skipped[name]
            return self.upgrade_one(name, dry_run=dry_run, allow_downgrade=allow_downgrade)

        return self._batch(names, one, fail_fast=fail_fast)

    def upgrade_one(
        self, name: str, *, dry_run: bool = False, allow_downgrade: bool = False
    ) -> InstallResult:
        def action() -> InstallResult:
            installed = self.session.store.concrete(name)
            mode = DRY_RUN if dry_run else UPGRADE
            requested = qualified_name(installed, self.config)
            return self._runner.place(self._resolve(requested), mode, allow_downgrade=allow_downgrade)

        return timed(name, action)

    def preload_one(self, requested: str) -> InstallResult:
        """Install or upgrade ``requested`` to what its gallery offers now (a worker converging)."""
        return timed(requested, lambda: self._runner.place(self._resolve(requested), PRELOAD))

    def preload_locked(self, locked: LockEntry) -> InstallResult:
        """Install exactly the locked digest (every candidate bound to it), verified again under
        the current policy of its gallery; already installed: one local check, no network."""

        def action() -> InstallResult:
            resolution = locked_resolution(locked, self.config)
            return self._runner.place(resolution, PRELOAD, locked=locked, wanted=locked.resolved_digest,
                                      unverified_pin=locked_unverified(locked))  # fmt: skip

        return timed(locked.name, action)

    # -- fleet and bundles --------------------------------------------------------------------

    def lock_one(self, requested: str) -> LockEntry:
        """Resolve, pin and verify ``requested`` (for this installer's platform and capability) and
        describe it as a lock entry; writes nothing.

        Raises:
            GalleryError: as install would fail.
        """
        outcome = self._runner.run(self._resolve(requested), LOCK, lock_entry)
        if isinstance(outcome, Unchanged):  # LOCK never stops at "unchanged" (modes.LOCK)
            raise OperationalError(f"{requested}: nothing was pinned to lock")
        return outcome

    def export(self, names: Sequence[str], output: Path) -> BatchResult:
        """Pin and verify each name as install would, and write a bundle of them to ``output``
        (a directory, or a tar when it ends in ``.tar``) only if every one could be exported."""
        return export_bundle(self._runner, self._resolve, names, output)

    def install_from(self, bundle: Path, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        """Install from an exported bundle, offline, under this machine's policies (each entry
        names its gallery; the config must have it)."""
        return install_from_bundle(self._runner, bundle, names, fail_fast=fail_fast)

    # -- maintenance --------------------------------------------------------------------------

    def repair(self, names: Sequence[str]) -> BatchResult:
        """Rebuild damaged backends from their *recorded* digest (verified under the current
        policy, as an install would); the damaged tree goes to the trash, not to a generation."""
        return self._batch(names, self.repair_one, fail_fast=False)

    def repair_one(self, name: str) -> InstallResult:
        return timed(name, lambda: repair(self._runner, name, self._resolve))

    def adopt(self, names: Sequence[str]) -> BatchResult:
        """Replace LocalAI-installed or sideloaded backends with the verified builds of their
        gallery entries (LocalAI's recorded digest when there is one)."""
        return self._batch(names, self.adopt_one, fail_fast=False)

    def adopt_one(self, name: str) -> InstallResult:
        return timed(name, lambda: adopt(self._runner, name, self._resolve))

    def rollback(self, name: str) -> InstallResult:
        """Put back the newest kept generation of ``name`` (the current version is discarded)."""
        return timed(name, lambda: rollback(self.session, name))

    def uninstall(self, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        return self._batch(names, self.uninstall_one, fail_fast=fail_fast)

    def uninstall_one(self, name: str) -> InstallResult:
        return timed(name, lambda: uninstall(self.session, name))

    def recover(self) -> RecoveryReport:
        """Finish or undo operations interrupted by a crash (backends whose lock is free)."""
        config = self.config
        return recover_pending(config.backends_path, keep_generations=config.keep_generations,
                               fs=self.session.swapper.fs)  # fmt: skip

    def verify(self, names: Sequence[str] = ()) -> BatchResult:
        """Re-check installed backends (all when ``names`` is empty) offline, against the current
        policy and trusted root, from the bundle each one's metadata recorded."""
        return verify_backends(self.config, names, verifier=self.verifier)

    def fsck(self, *, repair: bool = False) -> FsckOutcome:
        """Check installed backends, leftovers and the blob cache; with ``repair``, fix what can be
        fixed and rebuild damaged backends from their recorded digest."""
        return check_and_repair(self.config, self.repair if repair else None)

    def installed(self) -> list[BackendMetadata]:
        """Every backend under ``backends_path`` with readable metadata (LocalAI's included)."""
        return self.session.store.installed()

    def check_updates(self, backends: Sequence[BackendMetadata]) -> dict[str, UpdateCheck]:
        """For each installed backend (not meta-backends; LocalAI's from a configured gallery): is
        a newer signed build on offer? Pins and verifies like ``upgrade --dry-run``; fetches and
        changes nothing."""
        return {
            backend.name: UpdateCheck.from_result(self.upgrade_one(backend.name, dry_run=True))
            for backend in backends
            if backend.meta_backend_for is None and not self._ad_hoc(backend)
        }

    def notify(self, batch: BatchResult) -> BatchResult:
        """Run the ``on_change`` hook when ``batch`` changed what is installed; its outcome is in
        the returned batch."""
        return run_on_change(batch, self.config.on_change, timeout=self.config.on_change_timeout)

    def sideloaded(self) -> list[str]:
        """Backends put into ``backends_path`` by hand (run.sh, no metadata): LocalAI loads them."""
        return self.session.store.sideloaded()

    def system_backends(self) -> list[str]:
        """LocalAI's read-only system backends (``system_backends_path``)."""
        return system_backends(self.config.system_backends_path)

    # -- helpers ------------------------------------------------------------------------------

    def _batch(
        self, names: Sequence[str], action: Callable[[str], InstallResult], *, fail_fast: bool
    ) -> BatchResult:
        """Each name in turn, each result reported as soon as it is known. Ctrl-C ends the batch
        with an ``interrupted`` result saying what is installed now (the swap itself is never
        interrupted halfway: see ``place.swap``); the names not reached are not started."""
        results: list[InstallResult] = []
        for position, name in enumerate(names):
            before = self._installed_digest(name)
            try:
                result = action(name)
                raise_if_interrupted()  # lost on the way (see place.interrupts): it ends the batch here
            except KeyboardInterrupt:
                interrupt_handled()
                results.append(InstallResult.failed(name, self._interrupted(name, before)))
                results.extend(InstallResult.failed(rest, Interrupted(f"{rest}: not started"))
                               for rest in names[position + 1 :])  # fmt: skip
                for done in results[position:]:
                    self.session.progress.finished(done)
                break
            results.append(result)
            self.session.progress.finished(result)
            if fail_fast and result.error is not None:
                break
        return BatchResult(tuple(results))

    def _installed_digest(self, name: str) -> str | None:
        try:
            installed = self.session.store.current(name)
        except GalleryError:  # not ours (sideloaded, LocalAI's leftovers): the action says so
            return None
        return None if installed is None else installed.digest or "unknown"

    def _interrupted(self, name: str, before: str | None) -> Interrupted:
        now = self._installed_digest(name)
        if now == before:
            state = f"{name} is still at its old version ({before})" if before else f"{name} is not installed"
            return Interrupted(
                f"{name}: interrupted: nothing was changed; {state}",
                hint="partial downloads are kept in the cache: run the command again to resume",
            )
        state = f"{name} is now at {now}" if now else f"{name} is no longer installed"
        return Interrupted(f"{name}: interrupted after its change completed: {state}")

    def _resolve(self, requested: str) -> Resolution:
        self.session.progress.phase(requested, "resolving")
        return resolve_backend(self.catalog, requested, capabilities=self.session.selector)

    def _ad_hoc(self, installed: BackendMetadata) -> bool:
        """Installed from a reference, not a gallery entry: ``install --uri``, or by LocalAI from
        no configured gallery (an ad-hoc ``local-ai backends install``)."""
        if installed.ad_hoc:
            return True
        return installed.written_by_localai and recorded_gallery(installed, self.config) is None


def ad_hoc_resolution(
    config: Config, uri: str, name: str, *, gallery: str, alias: str | None, sha256: str | None
) -> Resolution:
    """The resolution of ``install --uri``: an entry of gallery ``gallery`` that its index does
    not have (so no ``-development`` fallback), given by the operator (so it may name local paths).

    Raises:
        UsageError: no such gallery, or the entry would be invalid.
    """
    gallery_config = config.gallery(gallery)
    if gallery_config is None:
        known = ", ".join(g.name for g in config.galleries) or "none"
        raise UsageError(f"no gallery named {gallery!r} (configured: {known})",
                         hint="--gallery names the gallery whose verification policy applies")  # fmt: skip
    fields = {"name": name, "uri": uri, "alias": alias, "sha256": sha256}
    try:
        entry = IndexEntry.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(f"install --uri {uri}: {describe_validation(exc)}") from exc
    state = GalleryState(gallery_config, None, None)
    return Resolution(requested=name, gallery=state, entry=entry, meta=None, capability=None, via_alias=False,
                      shadowed_in=(), origin="local", ad_hoc=True)  # fmt: skip


def _not_from_a_gallery(installed: BackendMetadata) -> InstallResult:
    if installed.ad_hoc:
        warning = f"installed from {installed.uri} with install --uri, not a gallery entry: not upgraded"
    else:
        source = (
            f"gallery {installed.gallery_url}" if installed.gallery_url else installed.uri or "a reference"
        )
        warning = f"installed by LocalAI from {source}, not from a configured gallery: not upgraded"
    return InstallResult(installed.name, "unchanged", installed.name, installed.digest, warnings=(warning,))
