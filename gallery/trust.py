"""What protects a candidate, and whether strict mode lets it in (pure).

The rules (see docs/trust-model.md):
  - OCI images and OCI layouts are protected by the gallery's signature policy. With a policy,
    verification is required whatever ``require_integrity`` says. Without one, strict mode refuses
    the entry; otherwise it installs with a warning and ``verified: false``.
  - Tarballs are protected by a sha256 (field or ``#sha256=`` fragment), and additionally by a
    signature bundle when the entry names one and the gallery has a policy. In strict mode a
    tarball without sha256 is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import GalleryConfig
from .index import IndexEntry
from .policy import VerificationPolicy
from .sources import BackendSource, TarballSource

__all__ = ["IntegrityPlan", "plan_for_entry", "plan_integrity"]

Protection = Literal["signature", "sha256", "signature+sha256", "none"]


@dataclass(frozen=True, slots=True)
class IntegrityPlan:
    protection: Protection
    refusal: str | None
    warning: str | None


def plan_integrity(
    source: BackendSource,
    *,
    gallery: str,
    policy: VerificationPolicy | None,
    sha256: str | None,
    signature_url: str | None,
    require_integrity: bool,
) -> IntegrityPlan:
    """Decide how ``source`` will be checked; ``refusal`` is set when strict mode refuses it."""
    if isinstance(source, TarballSource):
        signed = signature_url is not None and policy is not None
        if sha256 is not None:
            return IntegrityPlan("signature+sha256" if signed else "sha256", None, None)
        if require_integrity:
            return IntegrityPlan(
                "signature" if signed else "none",
                f"strict mode: tarball {source.url} has no sha256; add 'sha256' to the entry "
                "(gallery checksum --write fills it in)",
                None,
            )
        return IntegrityPlan(
            "signature" if signed else "none",
            None,
            None if signed else f"tarball {source.url} has no sha256: it will be installed unverified",
        )
    if policy is not None:
        return IntegrityPlan("signature", None, None)
    if require_integrity:
        return IntegrityPlan(
            "none",
            f"strict mode: gallery {gallery!r} has no verification policy, so {source} cannot be verified; "
            "add a 'verification' block to the gallery (docs/strict-mode.md)",
            None,
        )
    return IntegrityPlan(
        "none",
        None,
        f"gallery {gallery!r} has no verification policy: {source} will be installed unverified",
    )


def plan_for_entry(entry: IndexEntry, gallery: GalleryConfig, *, require_integrity: bool) -> IntegrityPlan:
    """``plan_integrity`` for a concrete entry's primary source under its gallery's policy."""
    source = entry.source
    if source is None:
        raise ValueError(f"{entry.name!r} is a meta-backend; plan its concrete entry")
    return plan_integrity(
        source,
        gallery=gallery.name,
        policy=gallery.verification,
        sha256=entry.expected_sha256,
        signature_url=entry.signature,
        require_integrity=require_integrity,
    )
