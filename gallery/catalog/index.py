"""Gallery index parsing: bytes -> validated entries (pure).

Compatible with LocalAI's ``backend/index.yaml``: a YAML list of entries that uses anchors and
merge keys (``- !!merge <<: *base``). One malformed entry never spoils the index: it is reported
(position, name if any, reason) and skipped, and the rest stays usable. Names are unique per
gallery; when the index repeats a name the first entry wins and the later ones are reported.
Fields we do not know are kept on the entry but ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from gallery.catalog.sources import (
    BackendSource,
    OciSource,
    SourceParseError,
    TarballSource,
    is_local_source,
    is_local_url,
    parse_backend_uri,
)
from gallery.config.safe_yaml import YamlLimits, YamlRefused, load_bounded_yaml
from gallery.digests import is_sha256_hex
from gallery.errors import IndexFormatError
from gallery.names import validate_name
from gallery.validation import describe_validation

__all__ = ["LOCAL_PATHS_REFUSED", "IndexEntry", "IndexProblem", "ParsedIndex", "PinConflict", "parse_index"]

LOCAL_PATHS_REFUSED = (
    "names a local path (file:// or ocifile://), which only an index on this machine's disk may do"
)

_CAPABILITY_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class IndexEntry(BaseModel):
    """One backend of a gallery: concrete (has ``uri``) or meta (only ``capabilities``)."""

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)

    name: str
    uri: str | None = None
    mirrors: tuple[str, ...] = ()
    alias: str | None = None
    capabilities: dict[str, str] = {}
    sha256: str | None = None
    version: str | None = None
    description: str | None = None
    license: str | None = None
    urls: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    icon: str | None = None
    signature: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value, what="name")

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value, what="alias")

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is not None:
            _parse(value, "uri")
        return value

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, mirror in enumerate(value):
            _parse(mirror, f"mirrors[{index}]")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: dict[str, str]) -> dict[str, str]:
        for key, target in value.items():
            if not _CAPABILITY_KEY_RE.fullmatch(key):
                raise ValueError(f"capability key {key!r} is not valid")
            validate_name(target, what=f"capabilities.{key}")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not is_sha256_hex(value):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return value

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("https://", "http://", "file://")):
            raise ValueError("signature must be an http(s):// or file:// URL of a sigstore bundle")
        return value

    @model_validator(mode="after")
    def _shape(self) -> IndexEntry:
        if self.uri is None:
            if not self.capabilities:
                raise ValueError("entry has neither 'uri' nor 'capabilities'")
            if self.mirrors:
                raise ValueError("a meta-backend (no 'uri') cannot have mirrors")
            return self
        # One sha256 binds every tarball candidate and one digest every OCI candidate: values given
        # in several places must agree, or a mirror could quietly name other bytes.
        _agreeing("sha256", self._sha256_claims())
        _agreeing("digest", self._digest_claims())
        return self

    def _sources(self) -> list[tuple[str, BackendSource]]:
        named = [("uri", parse_backend_uri(self.uri))] if self.uri is not None else []
        return named + [(f"mirrors[{i}]", parse_backend_uri(m)) for i, m in enumerate(self.mirrors)]

    def _sha256_claims(self) -> list[tuple[str, str]]:
        claims = [("the sha256 field", self.sha256)] if self.sha256 else []
        return claims + [
            (f"the {where} #sha256= fragment", source.sha256)
            for where, source in self._sources()
            if isinstance(source, TarballSource) and source.sha256
        ]

    def _digest_claims(self) -> list[tuple[str, str]]:
        return [
            (f"the {where} digest", source.reference.digest)
            for where, source in self._sources()
            if isinstance(source, OciSource) and source.reference.digest
        ]

    @property
    def is_meta(self) -> bool:
        """A meta-backend installs the concrete entry its ``capabilities`` map picks."""
        return self.uri is None

    @property
    def source(self) -> BackendSource | None:
        return None if self.uri is None else parse_backend_uri(self.uri)

    @property
    def mirror_sources(self) -> tuple[BackendSource, ...]:
        return tuple(parse_backend_uri(mirror) for mirror in self.mirrors)

    @property
    def expected_sha256(self) -> str | None:
        """The tarball checksum: the ``sha256`` field or any ``#sha256=`` fragment (they agree)."""
        claims = self._sha256_claims()
        return claims[0][1] if claims else None

    @property
    def names_local_paths(self) -> bool:
        """Whether a candidate or the signature is on local disk (``file://``, ``ocifile://``)."""
        local_signature = self.signature is not None and is_local_url(self.signature)
        return local_signature or any(is_local_source(source) for _, source in self._sources())

    @property
    def pinned_digest(self) -> str | None:
        """The OCI digest the uri or a mirror carries (``@sha256:``; they agree)."""
        claims = self._digest_claims()
        return claims[0][1] if claims else None

    def known_fields(self) -> dict[str, Any]:
        """The entry without unknown fields, as JSON-ready data."""
        return self.model_dump(mode="json", exclude=set(self.model_extra or {}), exclude_defaults=True)


class PinConflict(ValueError):
    """An entry names different bytes in different places (sha256 field vs fragments, digests)."""


def _agreeing(what: str, claims: list[tuple[str, str]]) -> None:
    values = {value for _, value in claims}
    if len(values) > 1:
        raise PinConflict(
            f"{what} values disagree: " + ", ".join(f"{where} is {value}" for where, value in claims)
        )


def _parse(value: str, field: str) -> BackendSource:
    try:
        return parse_backend_uri(value)
    except SourceParseError as exc:
        raise ValueError(f"{field} {value!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class IndexProblem:
    """An entry that was skipped (or a duplicate that lost), by position and name. ``untrusted``:
    skipped because it cannot be trusted (pins that disagree, local paths named by a remote
    index), which makes installing it by name an integrity refusal, not a format error."""

    position: int
    name: str | None
    reason: str
    untrusted: bool = False

    def __str__(self) -> str:
        where = f"entry {self.name!r}" if self.name else f"entry #{self.position + 1}"
        return f"{where} skipped: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParsedIndex:
    entries: tuple[IndexEntry, ...]
    problems: tuple[IndexProblem, ...]


def parse_index(data: bytes, *, limits: YamlLimits, local: bool) -> ParsedIndex:
    """Parse a gallery index. ``local``: the index was read from this machine's disk; an index
    read over the network may not name local files (``file://``, ``ocifile://``): such entries
    are skipped with a reason.

    Raises:
        IndexFormatError: the document as a whole is unusable (not YAML, over a limit, not a list).
    """
    try:
        raw = load_bounded_yaml(data, limits)
    except YamlRefused as exc:
        raise IndexFormatError(f"index refused: {exc}") from exc
    if raw is None:
        return ParsedIndex(entries=(), problems=())
    if not isinstance(raw, list):
        raise IndexFormatError("index must be a YAML list of backend entries")

    entries: list[IndexEntry] = []
    problems: list[IndexProblem] = []
    first_position: dict[str, int] = {}
    for position, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        display_name = name if isinstance(name, str) else None
        if not isinstance(item, dict):
            problems.append(IndexProblem(position, None, "entry is not a mapping"))
            continue
        try:
            entry = IndexEntry.model_validate(item)
        except ValidationError as exc:
            conflict = any(isinstance(e.get("ctx", {}).get("error"), PinConflict) for e in exc.errors())
            problems.append(
                IndexProblem(position, display_name, describe_validation(exc), untrusted=conflict)
            )
            continue
        except (TypeError, ValueError) as exc:  # e.g. non-string keys in the mapping
            problems.append(IndexProblem(position, display_name, str(exc)))
            continue
        if not local and entry.names_local_paths:
            problems.append(IndexProblem(position, entry.name, LOCAL_PATHS_REFUSED, untrusted=True))
            continue
        if entry.name in first_position:
            problems.append(
                IndexProblem(
                    position,
                    entry.name,
                    f"duplicate name; the first entry with it (#{first_position[entry.name] + 1}) is used",
                )
            )
            continue
        first_position[entry.name] = position
        entries.append(entry)
    return ParsedIndex(entries=tuple(entries), problems=tuple(problems))
