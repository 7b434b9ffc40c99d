"""``gallery checksum INDEX [--write] [--pin]``: a gallery published with every byte pinned (edge module).

For every tarball entry the file is downloaded and hashed: a ``sha256`` the index has is checked
(a mismatch is an integrity failure), a missing one is filled in. With ``--pin`` every OCI ``uri``
with a tag is resolved once and rewritten ``repo:tag@sha256:...`` (the digest wins; the tag stays
for people). ``--write`` edits the file in place, atomically, touching only those scalars: anchors,
merge keys, comments and layout stay as they were, so a LocalAI-style index keeps its shape and a
second run finds nothing to change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from gallery.catalog.candidates import registry_endpoints
from gallery.catalog.index import IndexEntry, parse_index
from gallery.catalog.sources import OciSource, TarballSource
from gallery.config.models import Config
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import GalleryError, IndexFormatError, OperationalError
from gallery.files import atomic_write_bytes, read_at_most
from gallery.oci.registry import RegistryClient
from gallery.prepare.tarball import stream_url

__all__ = ["ChecksumChange", "ChecksumReport", "checksum_index"]


@dataclass(frozen=True)
class ChecksumChange:
    entry: str
    kind: str  # "sha256 added", "sha256 ok", "sha256 MISMATCH", "pinned", "already pinned", "failed"
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "kind": self.kind, "detail": self.detail}


@dataclass
class ChecksumReport:
    changes: list[ChecksumChange] = field(default_factory=list)
    written: bool = False

    @property
    def exit_code(self) -> int:
        kinds = {c.kind for c in self.changes}
        return 3 if "sha256 MISMATCH" in kinds else 1 if "failed" in kinds else 0

    def to_json(self) -> dict[str, Any]:
        return {"changes": [c.to_json() for c in self.changes], "written": self.written,
                "exit_code": self.exit_code}  # fmt: skip


@dataclass(frozen=True)
class _Edit:
    start: int  # character offsets into the text
    end: int
    replacement: str


def checksum_index(
    path: Path,
    *,
    config: Config,
    client: httpx.Client,
    registry: RegistryClient | None = None,
    write: bool = False,
    pin: bool = False,
) -> ChecksumReport:
    """Check (and with ``write``, fill in) tarball sha256s; with ``pin``, pin OCI URIs to digests.

    Raises:
        IndexFormatError: the index is unusable. OperationalError: it cannot be read or written.
    """
    registry = registry or RegistryClient.from_config(config, client)
    max_bytes = config.limits.max_index_bytes
    try:
        with path.open("rb") as handle:
            data = read_at_most(handle, max_bytes)
    except OSError as exc:
        raise OperationalError(f"cannot read {path}: {exc.strerror or exc}") from exc
    parsed = parse_index(data, limits=YamlLimits(max_bytes=max_bytes), local=True)
    text = data.decode("utf-8")
    locations = _uri_locations(text)
    report = ChecksumReport()
    edits: dict[int, _Edit] = {}
    for entry in parsed.entries:
        source = entry.source
        if isinstance(source, TarballSource):
            _tarball(entry, source, client, config.limits.max_extract_bytes, report, locations, edits)
        elif isinstance(source, OciSource) and pin:
            _pin(entry, source, config, registry, report, locations, edits)
    if write and edits:
        updated = text
        for edit in sorted(edits.values(), key=lambda e: e.start, reverse=True):
            updated = updated[: edit.start] + edit.replacement + updated[edit.end :]
        parse_index(updated.encode(), limits=YamlLimits(max_bytes=max_bytes), local=True)  # still an index
        atomic_write_bytes(path, updated.encode("utf-8"))
        report.written = True
    return report


def _tarball(
    entry: IndexEntry,
    source: TarballSource,
    client: httpx.Client,
    max_bytes: int,
    report: ChecksumReport,
    locations: dict[str, list[_Location]],
    edits: dict[int, _Edit],
) -> None:
    try:
        actual = _sha256_of(source.url, client, max_bytes)
    except GalleryError as exc:
        report.changes.append(ChecksumChange(entry.name, "failed", exc.message))
        return
    expected = entry.expected_sha256
    if expected is not None:
        kind = "sha256 ok" if expected == actual else "sha256 MISMATCH"
        detail = actual if expected == actual else f"the file hashes to {actual}, the index says {expected}"
        report.changes.append(ChecksumChange(entry.name, kind, detail))
        return
    report.changes.append(ChecksumChange(entry.name, "sha256 added", actual))
    for location in locations.get(entry.uri or "", []):
        at = location.insert_at
        edits[at] = _Edit(at, at, location.after(f"sha256: {json.dumps(actual)}"))


def _pin(
    entry: IndexEntry,
    source: OciSource,
    config: Config,
    registry: RegistryClient,
    report: ChecksumReport,
    locations: dict[str, list[_Location]],
    edits: dict[int, _Edit],
) -> None:
    reference = source.reference
    if reference.is_pinned:
        report.changes.append(ChecksumChange(entry.name, "already pinned", str(reference)))
        return
    failures = []
    for host in registry_endpoints(reference, config.registry_mirrors):
        try:
            endpoint = registry.endpoint(host)
            digest = registry.resolve_tag(endpoint, reference)
            # A HEAD's Docker-Content-Digest is only a claim: fetch what it names and hash it, so
            # the index is never pinned to a digest nobody can serve (or that is no manifest).
            registry.get_manifest(endpoint, reference, digest)
        except GalleryError as exc:
            failures.append(exc.message)
            continue
        pinned = str(reference.pinned(digest))
        report.changes.append(ChecksumChange(entry.name, "pinned", pinned))
        for location in locations.get(entry.uri or "", []):
            edits[location.start] = _Edit(location.start, location.end, json.dumps(pinned))
        return
    report.changes.append(ChecksumChange(entry.name, "failed", "; ".join(failures)))


def _sha256_of(url: str, client: httpx.Client, max_bytes: int) -> str:
    digest = hashlib.sha256()
    stream_url(url, client=client, max_bytes=max_bytes, sink=digest.update, what="tarball",
               limit="limits.max_extract_bytes")  # fmt: skip
    return digest.hexdigest()


@dataclass(frozen=True)
class _Location:
    """Where a ``uri`` scalar sits in the text, and how to add a sibling key after it."""

    start: int
    end: int
    line_end: int  # a sibling key goes after the line (and its comment), in block style
    key_column: int
    flow: bool

    @property
    def insert_at(self) -> int:
        return self.end if self.flow else self.line_end

    def after(self, pair: str) -> str:
        return f", {pair}" if self.flow else f"\n{' ' * self.key_column}{pair}"


def _uri_locations(text: str) -> dict[str, list[_Location]]:
    """Every ``uri: <scalar>`` of a mapping in the document, by value (composed, never expanded:
    an aliased mapping is visited once, where its anchor defines it)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise IndexFormatError(f"index refused: {exc}") from exc
    found: dict[str, list[_Location]] = {}
    seen: set[int] = set()
    stack: list[yaml.Node] = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and key.value == "uri"
                    and isinstance(value, yaml.ScalarNode)
                ):
                    end = value.end_mark.index
                    line_end = text.find("\n", end)
                    location = _Location(value.start_mark.index, end, len(text) if line_end < 0 else line_end,
                                         key.start_mark.column, bool(node.flow_style))  # fmt: skip
                    found.setdefault(value.value, []).append(location)
                stack.append(value)
    return found
