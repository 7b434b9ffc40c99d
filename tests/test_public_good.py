"""A real Sigstore public-good bundle verifies offline against the root embedded in sigstore."""

from __future__ import annotations

import base64
import json

import pytest

from gallery.errors import SignatureError
from gallery.verify.bundles import verify_blob_bundle
from gallery.verify.policy import VerificationPolicy
from gallery.verify.roots import TrustRoots

from .conftest import REPO

ASSET = REPO / "tests" / "assets" / "bundle_v3_github.whl.sigstore"
IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
ISSUER = "https://token.actions.githubusercontent.com"


def sha256_of_signed_file() -> str:
    digest = json.loads(ASSET.read_text())["messageSignature"]["messageDigest"]["digest"]
    return base64.b64decode(digest).hex()


def test_the_embedded_production_root_is_where_we_load_it_from() -> None:
    # Fails loudly if sigstore moves its (private) package data: `production` must keep working offline.
    root = TrustRoots().get("production")
    assert root.digest.startswith("sha256:")


def test_real_public_good_bundle_verifies_offline() -> None:
    root = TrustRoots().get("production")
    policy = VerificationPolicy.model_validate(
        {
            "issuer": ISSUER,
            "identity_regex": r"https://github\.com/trailofbits/rfc8785\.py/\.github/workflows/release\.yml@refs/tags/v.+",
        }
    )
    evidence = verify_blob_bundle(
        ASSET.read_bytes(), sha256_hex=sha256_of_signed_file(), policy=policy, root=root
    )
    assert evidence.verified and evidence.identity == IDENTITY and evidence.issuer == ISSUER
    assert evidence.log_index == 79605083 and evidence.integrated_time is not None


@pytest.mark.parametrize(
    ("policy", "sha", "reason"),
    [
        (
            {
                "issuer": ISSUER,
                "identity": "https://github.com/trailofbits/rfc8785.py/.github/workflows/other.yml@refs/tags/v0.1.2",
            },
            None,
            "policy expects",
        ),
        (
            {"issuer": ISSUER, "identity": IDENTITY, "not_before": "2025-01-01T00:00:00Z"},
            None,
            "before not_before",
        ),
        ({"issuer": ISSUER, "identity": IDENTITY}, "0" * 64, "digest mismatch"),
    ],
)
def test_real_bundle_outside_the_policy_or_for_other_bytes(
    policy: dict[str, str], sha: str | None, reason: str
) -> None:
    root = TrustRoots().get("production")
    with pytest.raises(SignatureError, match=reason):
        verify_blob_bundle(
            ASSET.read_bytes(),
            sha256_hex=sha or sha256_of_signed_file(),
            policy=VerificationPolicy.model_validate(policy),
            root=root,
        )
