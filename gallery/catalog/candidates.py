"""Candidate sources of a concrete entry, in the order the installer tries them (pure).

Order (the contract): the entry's ``uri``, then its ``mirrors``, then tag fallbacks:
  1. for every OCI candidate whose tag starts with ``latest-``, the same reference with
     ``master-`` (LocalAI publishes development builds under ``master-`` tags);
  2. the ``uri`` of the same gallery's ``<name>-development`` entry, when there is one.
For each OCI candidate the registry's ``registry_mirrors`` are tried first, then the registry
itself (like containers-registries.conf). Every candidate is checked under the same gallery
policy; nothing here decides trust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gallery.catalog.index import IndexEntry
from gallery.catalog.sources import BackendSource, OciSource
from gallery.oci.references import OciReference

__all__ = ["Candidate", "build_candidates", "registry_endpoints"]

CandidateKind = Literal["uri", "mirror", "fallback", "recorded"]  # recorded: the blob cache (repair)


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: CandidateKind
    source: BackendSource
    note: str = ""

    def __str__(self) -> str:
        return str(self.source)


def build_candidates(
    entry: IndexEntry, *, lookup: Callable[[str], IndexEntry | None]
) -> tuple[Candidate, ...]:
    """Ordered, de-duplicated candidates for a concrete entry.

    ``lookup`` finds another entry of the same gallery by name (for the ``-development`` fallback).
    """
    source = entry.source
    if source is None:
        raise ValueError(f"{entry.name!r} is a meta-backend; resolve it to a concrete entry first")
    ordered: list[Candidate] = [Candidate("uri", source)]
    ordered += [Candidate("mirror", mirror) for mirror in entry.mirror_sources]

    for base in list(ordered):
        if isinstance(base.source, OciSource):
            tag = base.source.reference.tag
            if tag is not None and tag.startswith("latest-") and not base.source.reference.is_pinned:
                master = base.source.reference.with_tag("master-" + tag[len("latest-") :])
                ordered.append(Candidate("fallback", OciSource(master), note=f"master- tag of {base.source}"))

    if not entry.name.endswith("-development"):
        development = lookup(f"{entry.name}-development")
        if development is not None and development.source is not None:
            ordered.append(
                Candidate("fallback", development.source, note=f"uri of entry {development.name!r}")
            )

    seen: set[str] = set()
    unique = []
    for candidate in ordered:
        key = str(candidate.source)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return tuple(unique)


def registry_endpoints(
    reference: OciReference, registry_mirrors: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """Where a reference's registry is tried: its configured mirrors first, then itself."""
    return (*registry_mirrors.get(reference.registry, ()), reference.registry)
