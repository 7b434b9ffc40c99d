"""Fetching a gallery's index: primary URL, then mirrors, then the last good copy (edge module).

Every source is read with a size cap and the config's timeouts, then parsed; the first source that
yields a usable index wins and is saved, atomically, as the gallery's last good copy under
``cache_path/indexes/<gallery>.json``. When every source fails, that copy is used with a warning;
without one, ``IndexUnavailable`` names every source and its reason.

When the gallery has a policy for its index (``index_verification``, else ``verification``), each
source's ``cosign sign-blob`` bundle (``<location>.sigstore.json``, or ``index_signature``) is
verified against the exact bytes read before a single entry is trusted, and three rules hold:

- a bad signature is never accepted; a missing one is refused with ``require_signed_index`` (and
  whenever the last good copy was signed: stripping a signature is not a way back), else a warning;
- an index signed longer ago than ``max_index_age`` is refused with ``require_signed_index`` (a
  frozen mirror), else a warning;
- an index signed before the last good copy is never accepted in place of it (a replayed index).

The last good copy keeps its bundle and is verified again whenever it is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from gallery.catalog.index import ParsedIndex, parse_index
from gallery.catalog.sources import IndexLocation, parse_index_location
from gallery.config.models import GalleryConfig, Limits
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import IndexFormatError, IndexUnavailable, SignatureError
from gallery.files import atomic_write_bytes, read_at_most
from gallery.net.client import IDENTITY, read_capped, stream_get
from gallery.net.retry import TRANSIENT_STATUS, RetryPolicy, TransientStatus, retry_after
from gallery.verify.evidence import Evidence

__all__ = ["IndexCache", "IndexCheck", "LoadedIndex", "SourceFailure", "fetch_gallery_index"]

log = logging.getLogger(__name__)

_CACHE_FORMAT_VERSION = 2
SIGNATURE_SUFFIX = ".sigstore.json"

# Verifies a sign-blob bundle (second argument) over the index bytes (first); raises SignatureError.
IndexCheck = Callable[[bytes, bytes], Evidence]


# An index has mirrors and a last good copy to fall back on: a few quick retries are enough.
_RETRY = RetryPolicy(attempts=3, initial_wait=0.25)


class _SourceTooLarge(Exception):
    pass


class _Untrusted(Exception):
    """The source answered, but its index cannot be trusted (signature, age, replay)."""


OFFLINE = "not asked (--offline)"


@dataclass(frozen=True, slots=True)
class SourceFailure:
    source: str
    reason: str
    malformed: bool
    untrusted: bool = False

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    """A parsed index and where it came from. ``failures`` lists sources tried before it;
    ``signature`` is the verified signature of its bytes (``None``: unsigned or no policy)."""

    gallery: str
    source: str
    from_cache: bool
    fetched_at: datetime
    parsed: ParsedIndex
    failures: tuple[SourceFailure, ...]
    signature: Evidence | None = None
    warnings: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        """Read from this machine's disk: only such an index may name local paths."""
        return _is_local(self.source)


@dataclass(frozen=True, slots=True)
class CachedIndex:
    data: bytes
    source: str
    fetched_at: datetime
    bundle: bytes | None
    signed_at: datetime | None


class IndexCache:
    """Last good copy of each gallery's index: one JSON file per gallery, replaced atomically."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes

    def path(self, gallery: str) -> Path:
        return self._root / f"{gallery}.json"

    def save(
        self,
        gallery: str,
        data: bytes,
        *,
        source: str,
        fetched_at: datetime,
        bundle: bytes | None = None,
        signed_at: datetime | None = None,
    ) -> None:
        record = {
            "format_version": _CACHE_FORMAT_VERSION,
            "gallery": gallery,
            "source": source,
            "fetched_at": fetched_at.isoformat(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content": data.decode("utf-8"),
            "signature": bundle.decode("utf-8") if bundle is not None else None,
            "signed_at": signed_at.isoformat() if signed_at is not None else None,
        }
        atomic_write_bytes(self.path(gallery), json.dumps(record, sort_keys=True).encode("utf-8"))

    def load(self, gallery: str) -> CachedIndex | None:
        """The cached copy; ``None`` if absent or damaged."""
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
            if record.get("format_version") not in (1, _CACHE_FORMAT_VERSION):
                raise ValueError("unknown format_version")
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("checksum mismatch")
            signature, signed_at = record.get("signature"), record.get("signed_at")
            return CachedIndex(
                data,
                str(record["source"]),
                datetime.fromisoformat(str(record["fetched_at"])),
                str(signature).encode("utf-8") if signature is not None else None,
                datetime.fromisoformat(str(signed_at)) if signed_at is not None else None,
            )
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
    check: IndexCheck | None = None,
    offline: bool = False,
) -> LoadedIndex:
    """Load a gallery's index from its sources in order, falling back to the last good copy.

    ``check``: verifies the index's signature; required when the gallery has an index policy.
    ``offline``: no network: local sources, else the last good copy (verified again as always).

    Raises:
        IndexUnavailable: every source failed and there is no usable cached copy (``untrusted``
            when a source was refused for its signature or its age: exit 3).
    """
    if gallery.index_signed and check is None:
        raise ValueError(f"gallery {gallery.name!r} has an index policy: a check is required")
    yaml_limits = YamlLimits(max_bytes=limits.max_index_bytes)
    when = now or datetime.now(UTC)
    previous = cache.load(gallery.name)
    trust = _IndexTrust(gallery, check, limits, client, when, previous)
    failures: list[SourceFailure] = []
    for original in (gallery.url, *gallery.mirrors):
        location = parse_index_location(original, base_dir=Path("/"))
        if offline and location.kind != "file":
            failures.append(SourceFailure(original, OFFLINE, malformed=False))
            continue
        try:
            data = _read(location, client=client, max_bytes=limits.max_index_bytes)
        except _SourceTooLarge as exc:
            failures.append(SourceFailure(original, str(exc), malformed=True))
            continue
        except (httpx.HTTPError, OSError) as exc:
            failures.append(SourceFailure(original, _describe_io_error(exc), malformed=False))
            continue
        try:
            bundle, signature, warnings = trust.judge(original, location, data)
        except _Untrusted as exc:
            failures.append(SourceFailure(original, str(exc), malformed=False, untrusted=True))
            continue
        try:
            parsed = parse_index(data, limits=yaml_limits, local=location.kind == "file")
        except IndexFormatError as exc:
            failures.append(SourceFailure(original, str(exc), malformed=True))
            continue
        signed_at = signature.signing_time if signature else None
        try:
            cache.save(
                gallery.name, data, source=original, fetched_at=when, bundle=bundle, signed_at=signed_at
            )
        except OSError as exc:
            log.warning("gallery %s: cannot save the last good index copy: %s", gallery.name, exc)
        return LoadedIndex(gallery.name, original, False, when, parsed, tuple(failures), signature, warnings)

    if previous is not None:
        last_good = _last_good(gallery, previous, trust, yaml_limits, failures)
        if last_good is not None:
            return last_good
    untrusted = any(f.untrusted for f in failures)
    raise IndexUnavailable(
        f"gallery {gallery.name!r}: no index source worked: " + "; ".join(str(f) for f in failures),
        hint=(
            "the index or its signature was refused: check the gallery's index policy, or ask its "
            "publisher to re-sign it"
            if untrusted
            else "check the gallery url and mirrors in the config, or the network"
        ),
        malformed_only=all(f.malformed for f in failures),
        untrusted=untrusted,
    )


def _last_good(
    gallery: GalleryConfig,
    previous: CachedIndex,
    trust: _IndexTrust,
    yaml_limits: YamlLimits,
    failures: list[SourceFailure],
) -> LoadedIndex | None:
    """The cached copy, judged again like a fresh one; ``None`` (with the reason added to
    ``failures``) when it no longer passes."""
    label = f"last good copy of {previous.source}"
    try:
        signature, warnings = trust.judge_cached(previous)
        parsed = parse_index(previous.data, limits=yaml_limits, local=_is_local(previous.source))
    except _Untrusted as exc:
        failures.append(SourceFailure(label, str(exc), malformed=False, untrusted=True))
        return None
    except IndexFormatError as exc:
        failures.append(SourceFailure(label, str(exc), malformed=True))
        return None
    return LoadedIndex(gallery.name, previous.source, True, previous.fetched_at, parsed, tuple(failures),
                       signature, warnings)  # fmt: skip


class _IndexTrust:
    """The signature, freeze and replay rules for one gallery's index sources."""

    def __init__(
        self,
        gallery: GalleryConfig,
        check: IndexCheck | None,
        limits: Limits,
        client: httpx.Client,
        now: datetime,
        previous: CachedIndex | None,
    ) -> None:
        self.gallery = gallery
        self.check = check if gallery.index_signed else None
        self.limits = limits
        self.client = client
        self.now = now
        self.previous = previous

    def judge(
        self, original: str, location: IndexLocation, data: bytes
    ) -> tuple[bytes | None, Evidence | None, tuple[str, ...]]:
        """The bundle, verified signature and warnings for ``data`` read from ``original``.

        Raises:
            _Untrusted: the source's index must not be used.
        """
        if self.check is None:
            return None, None, ()
        where = self._signature_location(original, location)
        try:
            bundle = _read_optional(where, client=self.client, max_bytes=self.limits.max_bundle_bytes)
        except (_SourceTooLarge, httpx.HTTPError, OSError) as exc:
            reason = str(exc) if isinstance(exc, _SourceTooLarge) else _describe_io_error(exc)
            raise _Untrusted(f"cannot read its signature {where.target}: {reason}") from exc
        if bundle is None:
            return None, None, self._unsigned(where.target)
        signature = self._verify(data, bundle, where.target)
        warnings = self._age(signature, what="index")
        signed_at = signature.signing_time
        newest = self.previous.signed_at if self.previous is not None else None
        if newest is not None and signed_at is not None and signed_at < newest:
            raise _Untrusted(
                f"signed at {signed_at.isoformat()}, before the last good copy ({newest.isoformat()}): "
                "an older index is never accepted in place of a newer one"
            )
        return bundle, signature, warnings

    def judge_cached(self, cached: CachedIndex) -> tuple[Evidence | None, tuple[str, ...]]:
        if self.check is None:
            return None, ()
        if cached.bundle is None:
            return None, self._unsigned("the last good copy")
        signature = self._verify(cached.data, cached.bundle, "the last good copy's signature")
        return signature, self._age(signature, what="last good copy of the index")

    def _unsigned(self, where: str) -> tuple[str, ...]:
        if self.gallery.require_signed_index:
            raise _Untrusted(f"not signed (no {where}) and require_signed_index is set")
        if self.previous is not None and self.previous.bundle is not None:
            raise _Untrusted(
                f"not signed (no {where}), but the last good copy was: a signature is not dropped silently "
                f"(if the publisher stopped signing, delete cache_path/indexes/{self.gallery.name}.json)"
            )
        return (
            f"gallery {self.gallery.name!r}: the index is not signed (no {where}); anyone who can change "
            "it can point entries at other validly signed images (set require_signed_index once it is)",
        )

    def _verify(self, data: bytes, bundle: bytes, where: str) -> Evidence:
        if self.check is None:  # unreachable: only called when the gallery has an index policy
            raise _Untrusted(f"no policy to check {where} against")
        try:
            return self.check(data, bundle)
        except SignatureError as exc:
            raise _Untrusted(f"bad signature ({where}): {exc.message}") from exc

    def _age(self, signature: Evidence, *, what: str) -> tuple[str, ...]:
        limit, signed_at = self.gallery.max_index_age, signature.signing_time
        if limit is None or signed_at is None or self.now - signed_at <= limit:
            return ()
        message = (
            f"the {what} was signed at {signed_at.isoformat()}, {_days(self.now - signed_at)} ago, "
            f"longer than max_index_age ({_days(limit)}): the source may be frozen"
        )
        if self.gallery.require_signed_index:
            raise _Untrusted(message)
        return (f"gallery {self.gallery.name!r}: {message}",)

    def _signature_location(self, original: str, location: IndexLocation) -> IndexLocation:
        if original == self.gallery.url and self.gallery.index_signature is not None:
            return parse_index_location(self.gallery.index_signature, base_dir=Path("/"))
        target = location.target + SIGNATURE_SUFFIX
        return IndexLocation(location.kind, target, location.original + SIGNATURE_SUFFIX)


def _is_local(source: str) -> bool:
    """Whether the location an index was read from is on this machine's disk (what it may name)."""
    return parse_index_location(source, base_dir=Path("/")).kind == "file"


def _days(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return (
        f"{seconds / 86400:.1f} days"
        if seconds >= 86400
        else f"{seconds // 3600} h {seconds % 3600 // 60} min"
    )


def _read_optional(location: IndexLocation, *, client: httpx.Client, max_bytes: int) -> bytes | None:
    """The bytes at ``location``, or ``None`` when there is nothing there (404, no such file)."""
    try:
        return _read(location, client=client, max_bytes=max_bytes)
    except FileNotFoundError:
        return None
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (404, 410):
            return None
        raise


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


def _read_http(client: httpx.Client, url: str, max_bytes: int, retry: RetryPolicy = _RETRY) -> bytes:
    """An index or its signature over HTTP; transient failures (connection, timeout, 429, 5xx)
    are retried before the next source is tried, and a 5xx that outlives them is an HTTP error."""
    try:
        for attempt in retry.retrying():
            with attempt:
                return _read_http_once(client, url, max_bytes)
    except TransientStatus as exc:
        raise httpx.HTTPError(f"HTTP {exc.status} (after {retry.attempts} attempts)") from exc
    raise AssertionError("unreachable: the retry loop returns or raises")


def _read_http_once(client: httpx.Client, url: str, max_bytes: int) -> bytes:
    # An index carries no credentials, so following redirects (e.g. to a CDN) leaks nothing.
    # Asked as identity and counted as it arrives: a compressed body is refused, never decoded
    # behind the cap (a 32 KiB zstd frame can hold a gigabyte of zeros).
    with stream_get(client, url, headers=IDENTITY) as response:
        if response.status_code in TRANSIENT_STATUS:
            raise TransientStatus(response.status_code, retry_after(response.headers.get("Retry-After")))
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}", request=response.request, response=response
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _SourceTooLarge(
                f"the server sent the index with Content-Encoding {encoding!r}; identity was asked for"
            )
        declared = response.headers.get("Content-Length")

        def too_large() -> _SourceTooLarge:
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                return _SourceTooLarge(
                    f"index is {declared} bytes, over limits.max_index_bytes ({max_bytes})"
                )
            return _SourceTooLarge(f"index is over limits.max_index_bytes ({max_bytes})")

        return read_capped(response, max_bytes, too_large)


def _describe_io_error(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError) or type(exc) is httpx.HTTPError:  # ours: the status, retried
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
