"""Changing what is installed without a new build: repair (the recorded digest placed again,
through the same trust gate), rollback (the newest kept generation) and uninstall."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gallery.catalog.candidates import Candidate
from gallery.catalog.galleries import GalleryState
from gallery.catalog.index import IndexEntry
from gallery.catalog.resolve import Resolution
from gallery.catalog.sources import OciLayoutSource, TarballSource, parse_backend_uri
from gallery.config.models import Config, GalleryConfig
from gallery.errors import BackendNotFound, OperationalError, UsageError
from gallery.filelocks import backend_lock
from gallery.names import is_valid_name
from gallery.operations.localai_dirs import is_sideloaded
from gallery.operations.modes import ADOPT, REPAIR
from gallery.operations.runner import Runner, installed_unverified
from gallery.operations.session import Session
from gallery.operations.store import BackendStore
from gallery.place.metadata import METADATA_FILE, BackendMetadata
from gallery.results import BatchResult, InstallResult
from gallery.verify.evidence import Verifier
from gallery.verify.recheck import recorded_gallery, verify_installed

__all__ = ["adopt", "qualified_name", "repair", "rollback", "uninstall", "verify_backends"]


def repair(runner: Runner, name: str, resolve: Callable[[str], Resolution]) -> InstallResult:
    """Rebuild ``name`` from its *recorded* digest: offline from the cache when every recorded
    layer is there (the rebuilt files must be the recorded ones), else fetched through the
    gallery's candidates at that digest. Either way the current policy must hold.

    Raises:
        BackendNotFound, OperationalError, GalleryError: as install would fail.
    """
    session = runner.session
    installed = session.store.get(name)
    if installed is None:
        raise BackendNotFound(f"{name} is not installed")
    digest = installed.resolved_digest or installed.digest
    if not digest:
        raise OperationalError(
            f"{name}: no digest recorded, so there is nothing to re-fetch",
            hint=f"reinstall it: gallery uninstall {name} && gallery install {name}",
        )
    unverified = installed_unverified(installed)
    if installed.layers and all(session.cache.has(layer.digest) for layer in installed.layers):
        resolution, candidate = _recorded(session, installed)
        return runner.place(
            resolution, REPAIR, wanted=digest, unverified_pin=unverified, candidates=(candidate,)
        )
    return runner.place(resolve(qualified_name(installed, session.config)), REPAIR, wanted=digest,
                        unverified_pin=unverified)  # fmt: skip


def qualified_name(installed: BackendMetadata, config: Config) -> str:
    """``GALLERY@NAME`` when the backend's gallery is still configured (LocalAI's: matched by its
    URL), so a name another gallery shadows is looked up where it came from."""
    gallery = recorded_gallery(installed, config)
    return f"{gallery.name}@{installed.name}" if gallery is not None else installed.name


def adopt(runner: Runner, name: str, resolve: Callable[[str], Resolution]) -> InstallResult:
    """Replace a backend LocalAI installed, or one sideloaded, with the verified build of its
    gallery entry: LocalAI's recorded digest when it recorded one (the same build, now verified
    under the gallery's policy), else what the gallery offers. The evidence is recorded like any
    install's; the replaced tree is kept like any replaced version (``keep_generations``). A
    LocalAI meta-backend directory adopts the backend it points at.

    Raises:
        BackendNotFound: nothing of that name is there. UsageError: it is already ours.
        GalleryError: as install would fail (nothing is changed then).
    """
    session = runner.session
    if not is_valid_name(name):
        raise BackendNotFound(f"{name!r} is not a backend name")
    directory = session.store.root / name
    installed = session.store.get(name)
    if installed is None and not is_sideloaded(directory):
        raise BackendNotFound(
            f"nothing to adopt: {directory} is not a LocalAI-installed or sideloaded backend"
        )
    if installed is not None and not installed.written_by_localai:
        raise UsageError(f"{name} was installed by gallery already", hint=f"use 'gallery verify {name}'")
    if installed is not None and installed.meta_backend_for:
        return adopt(runner, installed.meta_backend_for, resolve)
    if installed is None:  # sideloaded: what the galleries call it
        return runner.place(resolve(name), ADOPT)
    return runner.place(
        resolve(qualified_name(installed, session.config)), ADOPT, wanted=installed.digest or None
    )


def _recorded(session: Session, installed: BackendMetadata) -> tuple[Resolution, Candidate]:
    """The blob cache as the one candidate of a repair, under the recorded gallery's policy."""
    name = installed.name
    bundle = installed.verification.bundle if installed.verification is not None else None
    tarball = (bundle is not None and "messageSignature" in bundle) or (
        bundle is None and installed.candidate is not None and _is_tarball(installed.candidate)
    )
    cached = session.cache.root
    uri = f"file://{cached}/{name}.tar" if tarball else f"ocifile://{cached}"
    # The recorded bundle stands in for the entry's signature; the gate reads it from the metadata.
    signature = (
        f"file://{session.config.backends_path / name / METADATA_FILE}" if tarball and bundle else None
    )
    entry = IndexEntry(name=name, uri=uri, signature=signature)
    gallery = session.config.gallery(installed.gallery or "") or GalleryConfig.model_construct(
        name=installed.gallery or "unknown", url="", verification=None
    )
    source = TarballSource(uri) if tarball else OciLayoutSource(str(cached))
    candidate = Candidate("recorded", source, note=f"{name}'s recorded layers in the blob cache")
    resolution = Resolution(
        name, GalleryState(gallery, None, None), entry, None, None, False, (), origin="local"
    )
    return resolution, candidate


def _is_tarball(candidate: str) -> bool:
    try:
        return isinstance(parse_backend_uri(candidate), TarballSource)
    except ValueError:
        return False


def rollback(session: Session, name: str) -> InstallResult:
    """Put back the newest kept generation of ``name`` (a meta-backend: of its concrete backend).

    Raises: BackendNotFound, OperationalError (no generation kept, lock busy)."""
    if not is_valid_name(name):
        raise BackendNotFound(f"{name!r} is not a backend name")
    current = session.store.get(name)
    if current is not None and current.meta_backend_for is not None:
        name = current.meta_backend_for
    if current is None and not session.store.state.kept(name):
        raise BackendNotFound(f"no installed backend named {name!r}", hint="see 'gallery list --installed'")
    with backend_lock(
        session.store.state.root, name, timeout=session.config.timeouts.lock, operation="rollback"
    ):
        session.swapper.recover(name)
        session.swapper.rollback(name)
        restored = session.store.get(name)
    if restored is None:  # the swap checked it; a second look that fails is still an error, typed
        raise OperationalError(f"{name}: the restored generation has no readable metadata.json")
    verified = restored.verification is not None and restored.verification.verified
    return InstallResult(name, "rolled-back", name, restored.digest, restored.candidate, verified)


def uninstall(session: Session, name: str) -> InstallResult:
    """Remove ``name`` (present or gone, never half-deleted; its generations go too), with the
    concrete backend of a meta-backend and the meta-backends pointing at it.

    Raises: BackendNotFound, OperationalError (lock busy, disk)."""
    if not is_valid_name(name):
        raise BackendNotFound(f"{name!r} is not a backend name")
    store = session.store
    metadata = store.get(name)
    if metadata is None:
        raise BackendNotFound(f"no installed backend named {name!r}", hint="see 'gallery list --installed'")
    also: list[str] = []
    if metadata.meta_backend_for and (store.root / metadata.meta_backend_for).is_dir():
        also.append(metadata.meta_backend_for)
    also += store.pointing_at(name)
    for victim in (name, *also):
        with backend_lock(
            store.state.root, victim, timeout=session.config.timeouts.lock, operation="uninstall"
        ):
            session.swapper.recover(victim)
            session.swapper.remove(victim)
    return InstallResult(name, "uninstalled", name=name, warnings=tuple(f"also removed {n}" for n in also))


def verify_backends(config: Config, names: Sequence[str] = (), *, verifier: Verifier) -> BatchResult:
    """``gallery verify``: installed backends (all when ``names`` is empty) re-checked offline
    against today's policy, from the bundle each one's metadata recorded; no network, no session."""
    return verify_installed(config, BackendStore(config.backends_path).installed(), names, verifier=verifier)
