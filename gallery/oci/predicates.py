"""In-toto predicate types we recognise (constants only: importing them costs nothing)."""

from __future__ import annotations

__all__ = ["COSIGN_PREDICATE"]

COSIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"  # what a cosign image signature states
