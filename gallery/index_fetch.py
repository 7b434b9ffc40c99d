"""Fetching a gallery's index: primary URL, then mirrors, then the last good copy (edge module).

Every source is read with a size cap and the config's timeouts, then parsed; the first source that
yields a usable index wins and is saved, atomically, as the gallery's last good copy under
``cache_path/indexes/<gallery>.json``. When every source fails, that copy is used with a warning;
without one, ``IndexUnavailable`` names every source and its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from .config import GalleryConfig, Limits
from .errors import IndexFormatError, IndexUnavailable
from .fsutil import atomic_write_bytes, read_at_most
from .index import ParsedIndex, parse_index
from .safe_yaml import YamlLimits
from .sources import IndexLocation, parse_index_location

__all__ = ["IndexCache", "LoadedIndex", "SourceFailure", "fetch_gallery_index"]

log = logging.getLogger(__name__)

_CACHE_FORMAT_VERSION = 1


class _SourceTooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SourceFailure:
    source: str
    reason: str
    malformed: bool

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    """A parsed index and where it came from. ``failures`` lists sources tried before it."""

    gallery: str
    source: str
    from_cache: bool
    fetched_at: datetime
    parsed: ParsedIndex
    failures: tuple[SourceFailure, ...]


class IndexCache:
    """Last good copy of each gallery's index: one JSON file per gallery, replaced atomically."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes

    def path(self, gallery: str) -> Path:
        return self._root / f"{gallery}.json"

    def save(self, gallery: str, data: bytes, *, source: str, fetched_at: datetime) -> None:
        record = {
            "format_version": _CACHE_FORMAT_VERSION,
            "gallery": gallery,
            "source": source,
            "fetched_at": fetched_at.isoformat(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content": data.decode("utf-8"),
        }
        atomic_write_bytes(self.path(gallery), json.dumps(record, sort_keys=True).encode("utf-8"))

    def load(self, gallery: str) -> tuple[bytes, str, datetime] | None:
        """The cached bytes, source and fetch time; ``None`` if absent or damaged."""
        path = self.path(gallery)
        try:
            with path.open("rb") as handle:
                # JSON escaping can grow the text; 8x is more than any YAML index needs.
                raw = read_at_most(handle, self._max_bytes * 8)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the cached index %s: %s", path, exc)
            return None
        try:
            record = json.loads(raw)
            data = str(record["content"]).encode("utf-8")
            if record.get("format_version") != _CACHE_FORMAT_VERSION:
                raise ValueError("unknown format_version")
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("checksum mismatch")
            return data, str(record["source"]), datetime.fromisoformat(str(record["fetched_at"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring damaged cached index %s: %s", path, exc)
            return None


def fetch_gallery_index(
    gallery: GalleryConfig,
    *,
    client: httpx.Client,
    cache: IndexCache,
    limits: Limits,
    now: datetime | None = None,
) -> LoadedIndex:
    """Load a gallery's index from its sources in order, falling back to the last good copy.

    Raises:
        IndexUnavailable: every source failed and there is no usable cached copy.
    """
    yaml_limits = YamlLimits(max_bytes=limits.max_index_bytes)
    failures: list[SourceFailure] = []
    for original in (gallery.url, *gallery.mirrors):
        location = parse_index_location(original, base_dir=Path("/"))
        try:
            data = _read(location, client=client, max_bytes=limits.max_index_bytes)
        except _SourceTooLarge as exc:
            failures.append(SourceFailure(original, str(exc), malformed=True))
            continue
        except (httpx.HTTPError, OSError) as exc:
            failures.append(SourceFailure(original, _describe_io_error(exc), malformed=False))
            continue
        try:
            parsed = parse_index(data, limits=yaml_limits)
        except IndexFormatError as exc:
            failures.append(SourceFailure(original, str(exc), malformed=True))
            continue
        fetched_at = now or datetime.now(UTC)
        try:
            cache.save(gallery.name, data, source=original, fetched_at=fetched_at)
        except OSError as exc:
            log.warning("gallery %s: cannot save the last good index copy: %s", gallery.name, exc)
        return LoadedIndex(gallery.name, original, False, fetched_at, parsed, tuple(failures))

    cached = cache.load(gallery.name)
    if cached is not None:
        data, source, fetched_at = cached
        try:
            parsed = parse_index(data, limits=yaml_limits)
        except IndexFormatError as exc:
            failures.append(SourceFailure(f"last good copy of {source}", str(exc), malformed=True))
        else:
            return LoadedIndex(gallery.name, source, True, fetched_at, parsed, tuple(failures))

    raise IndexUnavailable(
        f"gallery {gallery.name!r}: no index source worked: " + "; ".join(str(f) for f in failures),
        hint="check the gallery url and mirrors in the config, or the network",
        malformed_only=all(f.malformed for f in failures),
    )


def _read(location: IndexLocation, *, client: httpx.Client, max_bytes: int) -> bytes:
    if location.kind == "file":
        return _read_file(Path(location.target), max_bytes)
    return _read_http(client, location.target, max_bytes)


def _read_file(path: Path, max_bytes: int) -> bytes:
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise _SourceTooLarge(f"index is {size} bytes, over limits.max_index_bytes ({max_bytes})")
        data = read_at_most(handle, max_bytes)
    if len(data) > max_bytes:
        raise _SourceTooLarge(f"index is over limits.max_index_bytes ({max_bytes})")
    return data


def _read_http(client: httpx.Client, url: str, max_bytes: int) -> bytes:
    # An index carries no credentials, so following redirects (e.g. to a CDN) leaks nothing.
    with client.stream("GET", url, follow_redirects=True) as response:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}", request=response.request, response=response
            )
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _SourceTooLarge(f"index is {declared} bytes, over limits.max_index_bytes ({max_bytes})")
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise _SourceTooLarge(f"index is over limits.max_index_bytes ({max_bytes})")
            chunks.append(chunk)
    return b"".join(chunks)


def _describe_io_error(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
