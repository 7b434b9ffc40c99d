"""Resolution: a requested name -> the concrete gallery entry to install (pure over a catalog).

Rules, in order:
  1. ``GALLERY@NAME`` looks only in that gallery.
  2. A name always wins over an alias: the first gallery (config order) with an entry of that name.
  3. Otherwise an alias: it must pick exactly one entry in the first gallery that uses it;
     several entries sharing an alias is ambiguous and the error lists them.
  4. A meta-backend (``capabilities``, no ``uri``) resolves to the entry of its own gallery that its
     capability map names for the chosen capability: the configured one if not ``auto`` (stepped
     down: ``nvidia-cuda-13`` -> ``nvidia-cuda-12`` -> ``nvidia``), else LocalAI's capability file,
     else the detected ones, best first; then ``default``, then ``cpu``. A build that cannot run on
     the host (LocalAI's name/URI rule) is passed over, with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gallery.catalog.capability import (
    DEFAULT_MIN_GPU_MEMORY,
    DETECTABLE,
    CapabilityChoice,
    CapabilityDetector,
    choose_capability,
    incompatibility,
    is_detectable,
    preferred_capabilities,
    skipped_builds,
    stepped_down,
)
from gallery.catalog.galleries import Catalog, GalleryState
from gallery.catalog.index import IndexEntry
from gallery.errors import (
    AmbiguousName,
    BackendNotFound,
    BrokenMetaBackend,
    IndexFormatError,
    IndexUnavailable,
    TrustRefusal,
    UsageError,
)
from gallery.suggest import closest, did_you_mean

__all__ = ["CapabilitySelector", "Resolution", "resolve_backend", "resolve_meta"]


class CapabilitySelector:
    """The capability preference list, detected at most once and only when a meta-backend needs it.

    ``configured`` (``capability`` in the config) wins and steps down like any key; ``auto``
    takes LocalAI's capability file when the host has one, else detection."""

    def __init__(
        self, configured: str, detector: CapabilityDetector, *, min_gpu_memory: int = DEFAULT_MIN_GPU_MEMORY
    ) -> None:
        self._configured = configured
        self._detector = detector
        self._min_gpu_memory = min_gpu_memory
        self._preferences: tuple[str, ...] | None = None
        self._source = "config"
        self._lock = threading.Lock()

    @property
    def configured(self) -> str:
        """``capability`` as configured (``auto``: detected)."""
        return self._configured

    @property
    def source(self) -> str:
        """``config``, ``localai`` (its /run/localai/capability file) or ``detected``."""
        self._decide()
        return self._source

    @property
    def preferences(self) -> tuple[str, ...]:
        return self._decide()

    @property
    def host_capability(self) -> str:
        """What this host is, as LocalAI would report it: the first preference. Builds are
        checked against it (LocalAI's name/URI compatibility rule)."""
        return self._decide()[0]

    def _decide(self) -> tuple[str, ...]:
        with self._lock:  # one detection, also when preload's threads ask at once
            if self._preferences is None:
                if self._configured != "auto":
                    self._preferences = tuple(stepped_down(self._configured))
                else:
                    facts = self._detector()
                    self._source = "localai" if facts.localai_capability else "detected"
                    self._preferences = tuple(
                        preferred_capabilities(facts, min_gpu_memory=self._min_gpu_memory)
                    )
            return self._preferences


@dataclass(frozen=True, slots=True)
class Resolution:
    requested: str
    gallery: GalleryState
    entry: IndexEntry
    meta: IndexEntry | None
    capability: CapabilityChoice | None
    via_alias: bool
    shadowed_in: tuple[str, ...]
    # Where the entry came from: only an index read from this machine's disk (or a bundle, a lock
    # file, the blob cache) may name local paths.
    origin: Literal["local", "remote"] = "remote"
    # An entry made up from a reference on the command line (install --uri), not from an index.
    ad_hoc: bool = False


def resolve_backend(catalog: Catalog, requested: str, *, capabilities: CapabilitySelector) -> Resolution:
    """Resolve a name, alias or ``GALLERY@NAME``.

    Raises:
        BackendNotFound: no gallery has that name or alias (or the gallery is unknown).
        AmbiguousName: an alias that several entries share, with no entry of that name.
        IndexFormatError: a meta-backend whose capability map is unusable.
    """
    state, entry, via_alias, shadowed = _find(catalog, requested)
    meta: IndexEntry | None = None
    choice: CapabilityChoice | None = None
    if entry.is_meta:
        check_configured_capability(capabilities.configured, catalog)
        meta = entry
        choice, entry = resolve_meta(entry, state.entry, capabilities=capabilities, gallery=state.name)
    return Resolution(
        requested=requested,
        gallery=state,
        entry=entry,
        meta=meta,
        capability=choice,
        via_alias=via_alias,
        shadowed_in=shadowed,
        origin="local" if state.loaded is not None and state.loaded.local else "remote",
    )


def check_configured_capability(configured: str, catalog: Catalog) -> None:
    """A configured capability must be one detection can report or one a gallery's meta-backends
    use: a typo (``nvidai``) would otherwise quietly install the CPU build.

    Raises:
        UsageError: with the closest known key.
    """
    if configured == "auto" or is_detectable(configured):
        return
    used = {key for g in catalog.galleries for e in g.entries for key in e.capabilities}
    if configured in used:
        return
    raise UsageError(
        f"capability {configured!r} is not one detection reports nor one the galleries use"
        + did_you_mean(configured, {*DETECTABLE, *used}),
        hint="fix 'capability' in the config (or --capability); 'gallery doctor' shows the detected one",
    )


def resolve_meta(
    meta: IndexEntry,
    lookup: Callable[[str], IndexEntry | None],
    *,
    capabilities: CapabilitySelector,
    gallery: str,
) -> tuple[CapabilityChoice, IndexEntry]:
    """The concrete entry a meta-backend installs here, with the capability that chose it; the one
    meta-backend resolution (galleries and bundles alike).

    Raises:
        IndexFormatError: no capability of this host is offered, the entry it names is missing,
            or it is another meta-backend.
    """
    host = capabilities.host_capability

    def incompatible(_key: str, target: str) -> str | None:
        entry = lookup(target)
        if entry is None or entry.is_meta:
            return None  # reported below as a broken map, if chosen
        reason = incompatibility(entry.name, entry.uri or "", host)
        return None if reason is None else f"{reason}, which cannot run on this host ({host})"

    preferences = capabilities.preferences
    choice = choose_capability(meta.capabilities, preferences, source=capabilities.source,
                               incompatible=incompatible)  # fmt: skip
    if choice is None:
        skipped = skipped_builds(meta.capabilities, preferences, incompatible)
        why = "".join(f"; {s.key} -> {s.target} is {s.reason}" for s in skipped)
        raise IndexFormatError(
            f"meta-backend {meta.name!r} in gallery {gallery!r} has "
            f"{'no build that can run on this host' if skipped else 'no capability for this host'} "
            f"(tried {', '.join(preferences)}; it offers {', '.join(meta.capabilities)}{why})",
            hint="set 'capability' in the config to one it offers",
        )
    target = lookup(choice.target)
    if target is None:
        raise BrokenMetaBackend(
            f"meta-backend {meta.name!r} maps capability {choice.key!r} to {choice.target!r}, "
            f"which gallery {gallery!r} does not have",
            hint="report it to the gallery maintainers, or set another 'capability'",
        )
    if target.is_meta:
        raise BrokenMetaBackend(
            f"meta-backend {meta.name!r} maps {choice.key!r} to {target.name!r}, another meta-backend; "
            "a capability must name a concrete entry",
        )
    return choice, target


def _refuse_skipped(catalog: Catalog, gallery: str | None, name: str) -> None:
    """A name whose entry was skipped is not "not found": say why it was skipped."""
    for state in catalog.galleries:
        if gallery is not None and state.name != gallery:
            continue
        # (A duplicate's problem never gets here: its first entry of that name is found.)
        for problem in state.problems:
            if problem.name != name:
                continue
            message = f"gallery {state.name!r}: entry {name!r} was skipped: {problem.reason}"
            hint = "ask the gallery's publisher to fix the entry (gallery lint INDEX shows every problem)"
            if problem.untrusted:
                raise TrustRefusal(message, hint=hint)
            raise IndexFormatError(message, hint=hint)


def _find(catalog: Catalog, requested: str) -> tuple[GalleryState, IndexEntry, bool, tuple[str, ...]]:
    gallery_name, at, name = requested.rpartition("@")
    if at:
        state = catalog.gallery(gallery_name)
        if state is None:
            known = ", ".join(g.name for g in catalog.galleries) or "none"
            raise BackendNotFound(f"no gallery named {gallery_name!r} (configured: {known})")
        entry = state.entry(name)
        if entry is not None:
            return state, entry, False, ()
        hits = [(s, e) for s, e in catalog.aliased(name) if s is state]
    else:
        named = catalog.named(name)
        if named:
            state, entry = named[0]
            return state, entry, False, tuple(s.name for s, _ in named[1:])
        hits = catalog.aliased(name)
        if hits:
            first_gallery = hits[0][0]
            hits = [(s, e) for s, e in hits if s is first_gallery]

    if len(hits) == 1:
        state, entry = hits[0]
        return state, entry, True, ()
    if hits:
        names = ", ".join(e.name for _, e in hits)
        raise AmbiguousName(
            f"{name!r} is the alias of several entries in gallery {hits[0][0].name!r}: {names}",
            hint="name one of them",
        )
    _refuse_skipped(catalog, gallery_name if at else None, name)
    unavailable = catalog.failures()
    if unavailable:
        # The name may well be in a gallery that could not be read: say why it could not.
        reasons = "; ".join(str(g.error) for g in unavailable)
        raise IndexUnavailable(
            f"no backend named {requested!r} in the galleries that could be loaded; {reasons}",
            hint=unavailable[0].error.hint if unavailable[0].error else None,
            malformed_only=all(g.error is not None and g.error.malformed_only for g in unavailable),
            untrusted=any(g.error is not None and g.error.untrusted for g in unavailable),
        )
    spellings = [e.name for g in catalog.galleries for e in g.entries]
    spellings += [e.alias for g in catalog.galleries for e in g.entries if e.alias]
    suggestion = closest(name, spellings)
    hint = f"did you mean {suggestion!r}? (see 'gallery list')" if suggestion else "see 'gallery list'"
    raise BackendNotFound(f"no backend named {requested!r} in any gallery", hint=hint)
