"""The URI forms of index entries and of gallery index locations (pure).

Backend ``uri``/``mirrors`` (see the contract):
  - a bare OCI reference (``quay.io/org/repo:tag``, ``localai/repo:tag`` = docker.io,
    ``repo@sha256:...``, ``repo:tag@sha256:...``) or ``oci://`` + reference  -> ``OciSource``
  - ``ocifile://`` + path to an OCI layout (directory or tar)                  -> ``OciLayoutSource``
  - ``http(s)://`` and ``file://`` tarballs, optional ``#sha256=<hex>``       -> ``TarballSource``

Gallery index locations: ``http(s)://``, ``file://``, a local path, or LocalAI's
``github:owner/repo/path[@ref]`` shorthand (raw content; ref defaults to ``main`` as in LocalAI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from gallery.digests import is_sha256_hex
from gallery.oci.references import OciReference, ReferenceParseError, parse_reference

__all__ = [
    "BackendSource",
    "IndexLocation",
    "OciLayoutSource",
    "OciSource",
    "SourceParseError",
    "TarballSource",
    "is_local_source",
    "is_local_url",
    "parse_backend_uri",
    "parse_index_location",
]


class SourceParseError(ValueError):
    """A URI is not one of the accepted forms; the message says why."""


@dataclass(frozen=True, slots=True)
class OciSource:
    reference: OciReference
    kind: Literal["oci"] = "oci"

    def __str__(self) -> str:
        return str(self.reference)


@dataclass(frozen=True, slots=True)
class OciLayoutSource:
    """An OCI image layout on disk. A relative path is relative to the index file that names it."""

    path: str
    kind: Literal["ocifile"] = "ocifile"

    def __str__(self) -> str:
        return f"ocifile://{self.path}"


@dataclass(frozen=True, slots=True)
class TarballSource:
    url: str
    sha256: str | None = None
    kind: Literal["tarball"] = "tarball"

    def __str__(self) -> str:
        return self.url if self.sha256 is None else f"{self.url}#sha256={self.sha256}"


BackendSource = OciSource | OciLayoutSource | TarballSource

_REJECTED_SCHEMES = ("huggingface://", "hf://", "ollama://", "github:", "ftp://", "s3://", "docker://")


def parse_backend_uri(uri: str) -> BackendSource:
    """Parse an entry's ``uri`` or one of its ``mirrors``.

    Raises:
        SourceParseError: the URI is none of the accepted forms.
    """
    text = uri.strip()
    if text != uri or not text:
        raise SourceParseError("URI is empty or has surrounding whitespace")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://", "file://")):
        return _parse_tarball_url(text)
    if text.startswith("/"):
        # A local path, as LocalAI's index may give one (a tarball, or a directory to copy).
        if "\x00" in text or "#" in text:
            raise SourceParseError("a local path may not contain NUL or '#'")
        return TarballSource(url="file://" + quote(text))
    if lowered.startswith("ocifile://"):
        path = text[len("ocifile://") :]
        if not path or "\x00" in path:
            raise SourceParseError("ocifile:// needs a path to an OCI layout")
        return OciLayoutSource(path=path)
    if lowered.startswith("oci://"):
        text = text[len("oci://") :]
    elif lowered.startswith(_REJECTED_SCHEMES) or "://" in text:
        scheme = text.split(":", 1)[0]
        raise SourceParseError(
            f"scheme {scheme!r} is not supported for backends "
            "(use an OCI reference, oci://, ocifile://, http(s):// or file:// tarballs)"
        )
    try:
        return OciSource(reference=parse_reference(text))
    except ReferenceParseError as exc:
        raise SourceParseError(f"not a valid OCI reference: {exc}") from exc


def _parse_tarball_url(url: str) -> TarballSource:
    base, _, fragment = url.partition("#")
    parts = urlsplit(base)
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise SourceParseError("http(s) URL has no host")
    if parts.scheme.lower() == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise SourceParseError("file:// URL must be file:///absolute/path")
    sha256: str | None = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not is_sha256_hex(value):
            raise SourceParseError("URL fragment must be '#sha256=' followed by 64 lowercase hex characters")
        sha256 = value
    return TarballSource(url=base, sha256=sha256)


def is_local_url(url: str) -> bool:
    """A ``file://`` URL: only an index that is itself on local disk may name one."""
    return url.lower().startswith("file://")


def is_local_source(source: BackendSource) -> bool:
    """A source on this machine's disk (an OCI layout, a ``file://`` tarball)."""
    return isinstance(source, OciLayoutSource) or (
        isinstance(source, TarballSource) and is_local_url(source.url)
    )


@dataclass(frozen=True, slots=True)
class IndexLocation:
    """Where a gallery index is read from: ``kind`` is ``http`` (URL to GET) or ``file`` (a path)."""

    kind: Literal["http", "file"]
    target: str
    original: str

    def __str__(self) -> str:
        return self.original


def parse_index_location(text: str, *, base_dir: Path) -> IndexLocation:
    """Parse a gallery ``url`` or mirror; a relative local path is resolved against ``base_dir``.

    Raises:
        SourceParseError: the location is none of the accepted forms.
    """
    if not text or text.strip() != text:
        raise SourceParseError("gallery URL is empty or has surrounding whitespace")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        if not urlsplit(text).hostname:
            raise SourceParseError(f"{text!r} has no host")
        return IndexLocation(kind="http", target=text, original=text)
    if lowered.startswith("github:"):
        return IndexLocation(kind="http", target=_github_raw_url(text), original=text)
    if lowered.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise SourceParseError(f"{text!r}: file:// URL must be file:///absolute/path")
        return IndexLocation(kind="file", target=unquote(parts.path), original=text)
    if "://" in text:
        raise SourceParseError(
            f"{text!r}: unsupported scheme (use http(s)://, file://, github:owner/repo/path@ref or a path)"
        )
    path = Path(text)
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    return IndexLocation(kind="file", target=str(path), original=text)


def _github_raw_url(text: str) -> str:
    spec = text[len("github:") :]
    spec, _, ref = spec.partition("@")
    ref = ref or "main"
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise SourceParseError(f"{text!r}: expected github:owner/repo/path/to/index.yaml[@ref]")
    for part in (*parts, ref):
        if part in (".", "..") or any(ch in part for ch in "?#\\ ") or part.startswith("-"):
            raise SourceParseError(f"{text!r}: {part!r} is not allowed in a github: location")
    owner, repo, *path = parts
    return f"https://raw.githubusercontent.com/{owner}/{repo}/{ref}/{'/'.join(path)}"
