"""``gallery verify-bundle``: one Sigstore bundle checked offline against a policy, by the same
code the installer uses, for publishers debugging a signature and for conformance drivers."""

from __future__ import annotations

from pathlib import Path

from gallery.digests import is_digest, sha256_file
from gallery.errors import SignatureError, UsageError
from gallery.files import read_at_most
from gallery.oci.predicates import COSIGN_PREDICATE
from gallery.verify.evidence import Evidence
from gallery.verify.policy import VerificationPolicy
from gallery.verify.signatures import SigstoreVerifier

__all__ = ["verify_bundle_file"]


def verify_bundle_file(
    artifact: str,
    bundle: Path,
    *,
    policy: VerificationPolicy,
    verifier: SigstoreVerifier,
    trusted_root: str = "production",
    max_bundle_bytes: int = 2 * 1024 * 1024,
    predicate_type: str | None = COSIGN_PREDICATE,
) -> Evidence:
    """Verify ``bundle`` over ``artifact``: a file, or ``sha256:<hex>`` when that is not a path
    on disk (the conformance suite's convention). Raises UsageError (unreadable input),
    SignatureError (exit 3), TrustRootError."""
    sha256_hex = _artifact_sha256(artifact)
    try:
        with bundle.open("rb") as handle:
            data = read_at_most(handle, max_bundle_bytes)
    except OSError as exc:
        raise UsageError(f"cannot read bundle {bundle}: {exc.strerror or exc}") from exc
    if len(data) > max_bundle_bytes:
        raise SignatureError(f"bundle {bundle} is larger than {max_bundle_bytes} bytes")
    return verifier.check_bundle(
        data, sha256_hex=sha256_hex, policy=policy, trusted_root=trusted_root, predicate_type=predicate_type
    )


def _artifact_sha256(artifact: str) -> str:
    path = Path(artifact)
    if is_digest(artifact) and not path.exists():
        return artifact.removeprefix("sha256:")
    try:
        return sha256_file(path)
    except OSError as exc:
        raise UsageError(
            f"cannot read artifact {artifact}: {exc.strerror or exc}",
            hint="give a file, or its digest as sha256:<64 hex>",
        ) from exc
