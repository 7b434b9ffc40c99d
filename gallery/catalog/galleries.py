"""All configured galleries, loaded: the lookup tables resolution works on.

Name clashes between galleries: galleries are searched in config order, so for a bare name the
first gallery that has it wins; the others are reported as shadowed and stay reachable with a
qualified name, ``GALLERY@NAME`` (LocalAI's syntax). A gallery whose index cannot be loaded at all
is reported as a failure; the other galleries stay usable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from gallery.catalog.fetch import IndexCache, IndexCheck, LoadedIndex, SourceFailure, fetch_gallery_index
from gallery.catalog.index import IndexEntry, IndexProblem
from gallery.config.models import Config, GalleryConfig
from gallery.errors import IndexUnavailable
from gallery.verify.evidence import Evidence, Verifier

__all__ = ["Catalog", "GalleryState", "Shadowed", "load_catalog"]


@dataclass(frozen=True, slots=True)
class GalleryState:
    """One gallery: its config and either its loaded index or the reason it has none."""

    config: GalleryConfig
    loaded: LoadedIndex | None
    error: IndexUnavailable | None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def entries(self) -> tuple[IndexEntry, ...]:
        return self.loaded.parsed.entries if self.loaded else ()

    @property
    def problems(self) -> tuple[IndexProblem, ...]:
        return self.loaded.parsed.problems if self.loaded else ()

    @property
    def source_failures(self) -> tuple[SourceFailure, ...]:
        return self.loaded.failures if self.loaded else ()

    def entry(self, name: str) -> IndexEntry | None:
        return next((e for e in self.entries if e.name == name), None)


@dataclass(frozen=True, slots=True)
class Shadowed:
    name: str
    used_from: str
    shadowed_in: str


_Hits = list[tuple[GalleryState, IndexEntry]]


@dataclass(frozen=True)
class Catalog:
    galleries: tuple[GalleryState, ...]
    _by_name: dict[str, _Hits] = field(init=False, repr=False, compare=False)
    _by_alias: dict[str, _Hits] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, _Hits] = {}
        by_alias: dict[str, _Hits] = {}
        for state in self.galleries:
            for entry in state.entries:
                by_name.setdefault(entry.name, []).append((state, entry))
                if entry.alias is not None:
                    by_alias.setdefault(entry.alias, []).append((state, entry))
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_alias", by_alias)

    def gallery(self, name: str) -> GalleryState | None:
        return next((g for g in self.galleries if g.name == name), None)

    def entries(self) -> Iterator[tuple[GalleryState, IndexEntry]]:
        for state in self.galleries:
            for entry in state.entries:
                yield state, entry

    def named(self, name: str) -> list[tuple[GalleryState, IndexEntry]]:
        """Entries with this name, in gallery order."""
        return list(self._by_name.get(name, []))

    def aliased(self, alias: str) -> list[tuple[GalleryState, IndexEntry]]:
        """Entries with this alias, in gallery and index order."""
        return list(self._by_alias.get(alias, []))

    def shadowed(self) -> list[Shadowed]:
        found = []
        for name, hits in self._by_name.items():
            for state, _ in hits[1:]:
                found.append(Shadowed(name=name, used_from=hits[0][0].name, shadowed_in=state.name))
        return found

    def failures(self) -> list[GalleryState]:
        return [g for g in self.galleries if g.error is not None]


def load_catalog(
    config: Config,
    *,
    client: httpx.Client,
    now: datetime | None = None,
    verifier: Verifier | None = None,
    offline: bool = False,
) -> Catalog:
    """Load every configured gallery's index (sources in order, last good copy as fallback),
    each verified against its gallery's index policy when it has one."""
    cache = IndexCache(config.cache_path / "indexes", max_bytes=config.limits.max_index_bytes)
    states = []
    for gallery in config.galleries:
        try:
            loaded = fetch_gallery_index(
                gallery,
                client=client,
                cache=cache,
                limits=config.limits,
                now=now,
                check=_index_check(config, gallery, verifier),
                offline=offline,
            )
        except IndexUnavailable as exc:
            states.append(GalleryState(config=gallery, loaded=None, error=exc))
        else:
            states.append(GalleryState(config=gallery, loaded=loaded, error=None))
    return Catalog(galleries=tuple(states))


def _index_check(config: Config, gallery: GalleryConfig, verifier: Verifier | None) -> IndexCheck | None:
    policy = gallery.index_policy
    if policy is None or not gallery.index_signed:
        return None
    trusted_root = gallery.trusted_root or config.trusted_root

    def check(data: bytes, bundle: bytes) -> Evidence:
        # sigstore loads only when an index signature is really checked (about 0.4 s).
        from gallery.verify.signatures import SigstoreVerifier

        return (verifier or SigstoreVerifier()).verify_blob(
            sha256_hex=hashlib.sha256(data).hexdigest(),
            bundle=bundle,
            policy=policy,
            trusted_root=trusted_root,
            gallery=gallery.name,
        )

    return check
