"""Digest formats (pure). Everything that becomes a cache path or is compared goes through here."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "DIGEST_RE",
    "SHA256_HEX_RE",
    "Digest",
    "is_digest",
    "is_sha256_hex",
    "sha256_digest",
    "sha256_file",
]

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")


def is_digest(value: str) -> bool:
    """``sha256:`` followed by 64 lowercase hex characters."""
    return DIGEST_RE.fullmatch(value) is not None


def is_sha256_hex(value: str) -> bool:
    """64 lowercase hex characters (the index's ``sha256`` field)."""
    return SHA256_HEX_RE.fullmatch(value) is not None


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: the digest bytes are compared against."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, *, chunk: int = 1024 * 1024) -> str:
    """The hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _checked_digest(value: str) -> str:
    if not is_digest(value):
        raise ValueError(f"{value!r} is not a sha256 digest (sha256: and 64 lowercase hex)")
    return value


# A field that holds a digest, checked on validation (pydantic models of every format).
Digest = Annotated[str, AfterValidator(_checked_digest)]
