"""The verification stage's seam: between "pin" and "fetch", it receives exactly the pinned digest.

``Verifier`` is the protocol the installer calls; ``gallery.signatures.SigstoreVerifier`` is the
implementation. ``Evidence`` is what metadata.json records under ``verification``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from gallery.verify.policy import VerificationPolicy

__all__ = ["Evidence", "RecordedSignature", "SignatureSource", "Verifier"]


class Evidence(BaseModel):
    """What metadata.json records under ``verification``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verified: bool
    digest: str | None = None
    identity: str | None = None
    issuer: str | None = None
    integrated_time: datetime | None = None  # the log's time (Rekor v1); Rekor v2 has none
    # When it was signed, as a trusted source vouches: the log's inclusion promise or an RFC 3161
    # timestamp (``time_source``; ``timestamp_authority`` names the TSA). not_before compares it.
    signed_time: datetime | None = None
    time_source: Literal["transparency-log", "timestamp-authority"] | None = None
    timestamp_authority: str | None = None
    log_index: int | None = None
    policy_fingerprint: str | None = None
    bundle: dict[str, Any] | None = None
    bundle_digest: str | None = None
    reason: str | None = None
    # What the trust gate proved before the bytes were used: "signature" (under the policy named
    # by policy_fingerprint), "sha256" (a tarball's bytes hash to the index's or the signature's
    # sha256), "digest" (the image is the digest the index or lock pinned). Empty: nothing.
    proven: tuple[str, ...] = ()

    @property
    def signing_time(self) -> datetime | None:
        """The verified signing time (metadata written before signed_time existed has the log's)."""
        return self.signed_time or self.integrated_time

    @classmethod
    def unverified(cls, reason: str, *, proven: tuple[str, ...] = ()) -> Evidence:
        return cls(verified=False, reason=reason, proven=proven)


class SignatureSource(Protocol):
    """Somewhere signatures of a digest may be found (a repository, an OCI layout)."""

    def describe(self) -> str: ...

    def bundles(self, digest: str) -> list[bytes]:
        """Candidate bundles (capped, digest-checked blobs); ``SourceUnavailable`` if unreachable."""
        ...

    def has_legacy_signature(self, digest: str) -> bool: ...


class RecordedSignature:
    """The bundle a backend's metadata recorded when it was installed (offline re-verification)."""

    def __init__(self, bundle: bytes, *, where: str) -> None:
        self._bundle = bundle
        self._where = where

    def describe(self) -> str:
        return self._where

    def bundles(self, digest: str) -> list[bytes]:
        return [self._bundle]

    def has_legacy_signature(self, digest: str) -> bool:
        return False


class Verifier(Protocol):
    def verify_image(
        self,
        *,
        digest: str,
        sources: Sequence[SignatureSource],
        policy: VerificationPolicy,
        trusted_root: str,
        gallery: str,
        covers: Callable[[str], bool] = ...,
        repositories: frozenset[str] | None = ...,
    ) -> Evidence:
        """Verify a signature of ``digest`` under ``policy``; raise ``SignatureError`` if none holds.

        ``repositories``: the ``registry/repository`` names the entry gives; a signed subject
        that names a repository (cosign's own bundles name none) must name one of them."""
        ...

    def verify_blob(
        self, *, sha256_hex: str, bundle: bytes, policy: VerificationPolicy, trusted_root: str, gallery: str
    ) -> Evidence:
        """Verify a ``sign-blob`` bundle of a file with that sha256; raise ``SignatureError``."""
        ...
