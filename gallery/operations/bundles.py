"""Air-gapped bundles through the pipeline: ``install --from`` resolves the bundle's entries under
this machine's galleries (their policies apply) and plans every requested one before the bundle
is unpacked; ``export`` pins and verifies as install would and writes the bundle only when every
backend could be exported."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from gallery.catalog.galleries import GalleryState
from gallery.catalog.index import IndexEntry
from gallery.catalog.resolve import Resolution, resolve_meta
from gallery.errors import (
    BackendNotFound,
    BrokenMetaBackend,
    ConfigError,
    GalleryError,
    OperationalError,
    TrustRefusal,
    UsageError,
)
from gallery.operations.bundle_format import (
    ExportItem,
    bundle_entries,
    open_bundle,
    read_bundle_index,
    write_bundle,
)
from gallery.operations.gate import Unchanged, Verified
from gallery.operations.job import Job
from gallery.operations.modes import EXPORT, INSTALL
from gallery.operations.runner import Runner, refuse_if_nothing_admitted, timed
from gallery.results import BatchResult, InstallResult
from gallery.verify.plan import plan_resolution

__all__ = ["export_bundle", "install_from_bundle"]


def install_from_bundle(
    runner: Runner, bundle: Path, names: Sequence[str], *, fail_fast: bool = False
) -> BatchResult:
    """Install ``names`` from a bundle, offline. Each requested entry is resolved and planned
    first; the bundle is unpacked only if one of them may be installed at all (strict mode refuses
    before anything is written)."""
    session = runner.session
    listed = read_bundle_index(bundle, max_bytes=session.config.limits.max_index_bytes)
    results: dict[str, InstallResult] = {}
    admitted: list[str] = []
    for requested in names:
        try:
            resolution = bundle_resolution(runner, listed, requested)
            refuse_if_nothing_admitted(resolution.entry.name, plan_resolution(resolution, session.config))
        except GalleryError as exc:
            results[requested] = InstallResult.failed(requested, exc)
            if fail_fast:
                break
            continue
        admitted.append(requested)
    if admitted and not (fail_fast and results):
        root = open_bundle(bundle, work=session.config.cache_path / "bundles", limits=session.limits)
        placed = bundle_entries(root, listed)
        for requested in admitted:
            result = timed(requested, partial(_install_one, runner, placed, requested))
            results[requested] = result
            if fail_fast and result.error is not None:
                break
    return BatchResult(tuple(results[n] for n in names if n in results))


def _install_one(runner: Runner, entries: Sequence[IndexEntry], requested: str) -> InstallResult:
    return runner.place(bundle_resolution(runner, entries, requested), INSTALL)


def bundle_resolution(runner: Runner, entries: Sequence[IndexEntry], requested: str) -> Resolution:
    """``requested`` among a bundle's entries, under the gallery of this config it names.

    Raises:
        BackendNotFound: the bundle lacks it. ConfigError: the config lacks its gallery.
        IndexFormatError: a meta-backend that cannot be resolved (see ``resolve_meta``).
    """
    by_name = {e.name: e for e in entries}
    entry = by_name.get(requested) or next((e for e in entries if e.alias == requested), None)
    if entry is None:
        raise BackendNotFound(f"the bundle has no backend {requested!r}", hint="see its index.yaml")
    gallery_name = (entry.model_extra or {}).get("gallery")
    gallery = runner.session.config.gallery(gallery_name) if isinstance(gallery_name, str) else None
    if gallery is None:
        raise ConfigError(
            f"bundle entry {entry.name} comes from gallery {gallery_name!r}, which the config lacks",
            hint="add that gallery (its verification policy applies to the bundle) to the config",
        )
    meta, choice = None, None
    if entry.is_meta:
        meta = entry
        try:
            choice, entry = resolve_meta(
                meta, by_name.get, capabilities=runner.session.selector, gallery=gallery.name
            )
        except BrokenMetaBackend as exc:  # export never writes one: the bundle was tampered with
            raise TrustRefusal(
                f"the bundle's index is not one 'gallery export' writes: {exc.message}"
            ) from exc
    # A bundle is a local file: its layouts are local paths, named by a local index.
    return Resolution(
        requested, GalleryState(gallery, None, None), entry, meta, choice, False, (), origin="local"
    )


def export_bundle(
    runner: Runner, resolve: Callable[[str], Resolution], names: Sequence[str], output: Path
) -> BatchResult:
    """Pin and verify each name as install would, bring its blobs into the cache, and write the
    bundle to ``output`` only when every one succeeded."""
    items: list[ExportItem] = []
    results: list[InstallResult] = []
    for name in names:
        try:
            item = _export_item(runner, resolve(name))
        except GalleryError as exc:
            results.append(InstallResult.failed(name, exc))
            continue
        items.append(item)
        pinned = item.pinned
        results.append(
            InstallResult(name, "exported", item.resolution.entry.name, pinned.resolved_digest, pinned.label,
                          item.evidence.verified)
        )  # fmt: skip
    batch = BatchResult(tuple(results))
    if batch.exit_code == 0:
        write_bundle(items, output, cache=runner.session.cache)
    return batch


def _export_item(runner: Runner, resolution: Resolution) -> ExportItem:
    def use(job: Job, verified: Verified) -> ExportItem:
        if not verified.pinned.documents:
            raise UsageError(
                f"{job.name}: only OCI images can be exported; "
                "copy a tarball entry's file and keep its sha256"
            )
        runner.deployer.fetch(verified, job.name)
        return ExportItem(job.resolution, verified.pinned, verified.evidence)

    outcome = runner.run(resolution, EXPORT, use)
    if isinstance(outcome, Unchanged):  # export never stops at "unchanged" (modes.EXPORT)
        raise OperationalError(f"{resolution.entry.name}: nothing was pinned to export")
    return outcome
