"""OCI image references: parsing and normalisation (pure).

Follows the distribution reference grammar that docker, skopeo and containerd use: the first path
component is a registry only if it contains ``.`` or ``:`` or is ``localhost``; otherwise the
reference is on Docker Hub, whose canonical name is ``docker.io`` and whose one-component
repositories live under ``library/``. Only sha256 digests are accepted (see the contract).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from gallery.digests import DIGEST_RE

__all__ = [
    "DOCKER_HUB",
    "OciReference",
    "ReferenceParseError",
    "canonical_registry",
    "parse_reference",
    "validate_registry_host",
]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_MAX_REFERENCE_LENGTH = 512

_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_WHITESPACE = re.compile(r"\s")  # str.isspace's set, as one regex scan


class ReferenceParseError(ValueError):
    """A string is not a valid OCI reference; the message says which part is wrong."""


def canonical_registry(host: str) -> str:
    """The canonical spelling of a registry host (``index.docker.io`` -> ``docker.io``)."""
    lowered = host.lower()
    return DOCKER_HUB if lowered in _DOCKER_HUB_ALIASES else lowered


def validate_registry_host(host: str) -> str:
    """Check ``host[:port]`` and return its canonical form.

    Raises:
        ReferenceParseError: the host is not a valid registry host name.
    """
    if not _HOST_RE.fullmatch(host):
        raise ReferenceParseError(f"{host!r} is not a registry host (expected host or host:port)")
    return canonical_registry(host)


@dataclass(frozen=True, slots=True)
class OciReference:
    """A parsed, normalised reference. ``tag`` and ``digest`` may both be set; the digest wins."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    def pinned(self, digest: str) -> OciReference:
        """The same repository at ``digest`` (the tag is kept for display only)."""
        if not DIGEST_RE.fullmatch(digest):
            raise ReferenceParseError(f"{digest!r} is not a sha256 digest")
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> OciReference:
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceParseError(f"{tag!r} is not a valid tag")
        return replace(self, tag=tag, digest=None)

    def with_registry(self, registry: str) -> OciReference:
        """The same repository path on another registry (a mirror)."""
        return replace(self, registry=canonical_registry(registry))


def parse_reference(text: str) -> OciReference:
    """Parse ``[registry/]repository[:tag][@sha256:hex]``.

    Raises:
        ReferenceParseError: with the part that is wrong.
    """
    if not text or len(text) > _MAX_REFERENCE_LENGTH:
        raise ReferenceParseError(f"reference must be 1 to {_MAX_REFERENCE_LENGTH} characters")
    if _WHITESPACE.search(text):
        raise ReferenceParseError("reference contains whitespace")

    remainder, _, digest_part = text.partition("@")
    digest: str | None = None
    if digest_part:
        if not DIGEST_RE.fullmatch(digest_part):
            raise ReferenceParseError(
                f"digest {digest_part!r} is not 'sha256:' followed by 64 lowercase hex characters"
            )
        digest = digest_part
    elif text.endswith("@"):
        raise ReferenceParseError("empty digest after '@'")

    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceParseError(f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; max 128)")

    parts = remainder.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry = validate_registry_host(first)
        path = parts[1:]
    else:
        registry = DOCKER_HUB
        path = parts
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise ReferenceParseError(
                f"repository component {component!r} is not valid (lowercase letters, digits, separators)"
            )
    if tag is None and digest is None:
        tag = "latest"
    return OciReference(registry=registry, repository="/".join(path), tag=tag, digest=digest)
