"""The verification stage: between "pin" and "fetch", it receives exactly the pinned digest.

``Verifier`` is the seam. Until Sigstore verification is built (see docs/design.md), the only
implementation refuses: a gallery with a policy never installs an image that was not verified, and
a gallery without one records ``verified: false`` (strict mode has refused it earlier).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from .errors import SignatureError
from .policy import VerificationPolicy

__all__ = ["Evidence", "SignatureUnavailable", "Verifier"]


class Evidence(BaseModel):
    """What metadata.json records under ``verification``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verified: bool
    digest: str | None = None
    identity: str | None = None
    issuer: str | None = None
    integrated_time: datetime | None = None
    log_index: int | None = None
    policy_fingerprint: str | None = None
    bundle: dict[str, Any] | None = None
    reason: str | None = None

    @classmethod
    def unverified(cls, reason: str) -> Evidence:
        return cls(verified=False, reason=reason)


class Verifier(Protocol):
    def verify_image(
        self, *, repository: str, endpoint: str, digest: str, policy: VerificationPolicy, gallery: str
    ) -> Evidence:
        """Verify the signature of ``digest`` under ``policy``; raise ``SignatureError`` if none holds."""
        ...


class SignatureUnavailable:
    """Refuses every policy-protected image: signature verification is not built yet."""

    def verify_image(
        self, *, repository: str, endpoint: str, digest: str, policy: VerificationPolicy, gallery: str
    ) -> Evidence:
        raise SignatureError(
            f"{endpoint}/{repository}@{digest}: gallery {gallery!r} requires a signature, and this build "
            "cannot verify Sigstore signatures yet; the image was not installed",
            hint="remove the gallery's verification block only if you accept unverified images",
        )
