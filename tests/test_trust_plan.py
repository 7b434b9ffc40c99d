"""The plan, as pure rules: what each candidate must prove under each context (gallery.trust), and
the one door to placing something (only the gate makes ``Verified``; deploy takes nothing else)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gallery.catalog.candidates import Candidate
from gallery.catalog.capability import HostFacts
from gallery.catalog.sources import parse_backend_uri
from gallery.config.models import Config
from gallery.operations.deploy import Deployer
from gallery.operations.gate import Verified
from gallery.operations.session import Session
from gallery.verify.plan import EntryPins, TrustContext, plan_candidate, plan_entry
from gallery.verify.policy import VerificationPolicy
from gallery.verify.signatures import SigstoreVerifier

SHA = "a" * 64
DIGEST = "sha256:" + "b" * 64
POLICY = VerificationPolicy(issuer="https://issuer", identity="https://id")
IMAGE = "quay.io/org/repo:v1"
TARBALL = "https://cdn.example/x.tar.gz"
LOCAL_TARBALL = "file:///srv/x.tar.gz"
LAYOUT = "ocifile:///srv/layout"


def plan(uri: str, *, pins: EntryPins | None = None, **context: Any) -> tuple[frozenset[str], str | None]:
    defaults: dict[str, Any] = {"gallery": "g", "policy": None, "strict": False, "origin": "local"}
    made = plan_candidate(
        Candidate("uri", parse_backend_uri(uri)), pins or EntryPins(), TrustContext(**{**defaults, **context})
    )
    return made.proofs, made.refusal


# (uri, pins, context) -> (proofs, refused?)
CASES: list[tuple[str, str, dict[str, Any], EntryPins, set[str], bool]] = [
    ("image, policy", IMAGE, {"policy": POLICY}, EntryPins(), {"signature"}, False),
    ("image, policy, pinned", IMAGE, {"policy": POLICY}, EntryPins(digest=DIGEST), {"signature", "digest"}, False),
    ("image, no policy", IMAGE, {}, EntryPins(), set(), False),
    ("image, no policy, pinned", IMAGE, {}, EntryPins(digest=DIGEST), {"digest"}, False),
    ("image, strict, no policy", IMAGE, {"strict": True}, EntryPins(), set(), True),
    ("image, strict, no policy, sha256", IMAGE, {"strict": True}, EntryPins(sha256=SHA), set(), True),
    ("image, strict, policy", IMAGE, {"strict": True, "policy": POLICY}, EntryPins(), {"signature"}, False),
    ("layout, policy", LAYOUT, {"policy": POLICY}, EntryPins(), {"signature"}, False),
    ("layout, strict, no policy", LAYOUT, {"strict": True}, EntryPins(), set(), True),
    ("layout, remote index", LAYOUT, {"origin": "remote", "policy": POLICY}, EntryPins(), set(), True),
    ("tarball, policy, signed", TARBALL, {"policy": POLICY}, EntryPins(SHA, signature=TARBALL + ".sig"), {"signature", "sha256"}, False),
    ("tarball, policy, signed, no sha256", TARBALL, {"policy": POLICY}, EntryPins(signature=TARBALL + ".sig"), {"signature", "sha256"}, False),
    ("tarball, policy, sha256 only", TARBALL, {"policy": POLICY}, EntryPins(SHA), set(), True),
    ("tarball, policy, nothing", TARBALL, {"policy": POLICY}, EntryPins(), set(), True),
    ("tarball, strict, policy, signed, no sha256", TARBALL, {"policy": POLICY, "strict": True}, EntryPins(signature=TARBALL + ".sig"), set(), True),
    ("tarball, strict, policy, signed", TARBALL, {"policy": POLICY, "strict": True}, EntryPins(SHA, signature=TARBALL + ".sig"), {"signature", "sha256"}, False),
    ("tarball, sha256", TARBALL, {}, EntryPins(SHA), {"sha256"}, False),
    ("tarball, nothing", TARBALL, {}, EntryPins(), set(), False),
    ("tarball, strict, sha256", TARBALL, {"strict": True}, EntryPins(SHA), {"sha256"}, False),
    ("tarball, strict, nothing", TARBALL, {"strict": True}, EntryPins(), set(), True),
    ("local tarball, local index", LOCAL_TARBALL, {}, EntryPins(SHA), {"sha256"}, False),
    ("local tarball, remote index", LOCAL_TARBALL, {"origin": "remote"}, EntryPins(SHA), set(), True),
    ("remote tarball, local signature, remote index", TARBALL, {"origin": "remote", "policy": POLICY},
     EntryPins(SHA, signature="file:///etc/shadow"), set(), True),
    ("remote tarball, local signature, local index", TARBALL, {"policy": POLICY},
     EntryPins(SHA, signature="file:///srv/x.sig"), {"signature", "sha256"}, False),
    ("remote tarball, remote signature, remote index", TARBALL, {"origin": "remote", "policy": POLICY},
     EntryPins(SHA, signature=TARBALL + ".sig"), {"signature", "sha256"}, False),
    ("remote tarball, no signature, remote index", TARBALL, {"origin": "remote"}, EntryPins(SHA), {"sha256"}, False),
    ("image with a local signature, remote index (a signature names tarballs only)", IMAGE,
     {"origin": "remote", "policy": POLICY}, EntryPins(signature="file:///srv/x.sig"), {"signature"}, False),
    ("image, remote index", IMAGE, {"origin": "remote", "policy": POLICY}, EntryPins(), {"signature"}, False),
    ("image, pinned digests required, unpinned", IMAGE, {"require_pinned_digests": True, "policy": POLICY}, EntryPins(), set(), True),
    ("image, pinned digests required, pinned", IMAGE, {"require_pinned_digests": True, "policy": POLICY},
     EntryPins(digest=DIGEST), {"signature", "digest"}, False),
    ("tarball, pinned digests required, no sha256", TARBALL, {"require_pinned_digests": True}, EntryPins(), set(), True),
    ("tarball, pinned digests required, sha256", TARBALL, {"require_pinned_digests": True}, EntryPins(SHA), {"sha256"}, False),
    ("layout, pinned digests required", LAYOUT, {"require_pinned_digests": True, "policy": POLICY}, EntryPins(), {"signature"}, False),
    ("unverified lock, strict", IMAGE, {"strict": True, "policy": POLICY, "unverified_pin": True}, EntryPins(digest=DIGEST), set(), True),
    ("unverified lock, not strict", IMAGE, {"policy": POLICY, "unverified_pin": True}, EntryPins(digest=DIGEST), {"signature", "digest"}, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "uri", "context", "pins", "proofs", "refused"), CASES, ids=[c[0] for c in CASES]
)
def test_what_each_candidate_must_prove(
    label: str, uri: str, context: dict[str, Any], pins: EntryPins, proofs: set[str], refused: bool
) -> None:
    got, refusal = plan(uri, pins=pins, **context)
    assert (refusal is not None) == refused, refusal
    assert got == proofs


def test_one_value_binds_every_candidate() -> None:
    """The entry's sha256 goes onto every tarball candidate, its digest onto every OCI one."""
    candidates = tuple(
        Candidate(kind, parse_backend_uri(uri))  # type: ignore[arg-type]
        for kind, uri in (("uri", TARBALL), ("mirror", "https://mirror.example/x.tar.gz"),
                          ("mirror", IMAGE), ("fallback", "quay.io/org/repo:master-x"))
    )  # fmt: skip
    context = TrustContext("g", None, False, "local")
    planned = plan_entry(candidates, EntryPins(SHA, DIGEST), context)
    assert [str(p.candidate) for p in planned.candidates] == [
        f"{TARBALL}#sha256={SHA}",
        f"https://mirror.example/x.tar.gz#sha256={SHA}",
        f"quay.io/org/repo:v1@{DIGEST}",
        f"quay.io/org/repo:master-x@{DIGEST}",
    ]
    assert [p.sha256 for p in planned.candidates[:2]] == [SHA, SHA]
    assert all(p.digest == DIGEST for p in planned.candidates[2:])


def test_an_entry_is_refused_only_when_no_candidate_is_admitted() -> None:
    strict = TrustContext("g", None, True, "local")
    mixed = plan_entry((Candidate("uri", parse_backend_uri(IMAGE)), Candidate("mirror", parse_backend_uri(TARBALL))),
                       EntryPins(SHA), strict)  # fmt: skip
    assert mixed.refusal is None and [str(p.candidate) for p in mixed.admitted] == [f"{TARBALL}#sha256={SHA}"]
    refused = plan_entry((Candidate("uri", parse_backend_uri(IMAGE)),), EntryPins(), strict)
    assert refused.refusal is not None and refused.strict_refusal
    policy = plan_entry(
        (Candidate("uri", parse_backend_uri(TARBALL)),),
        EntryPins(SHA),
        TrustContext("g", POLICY, False, "local"),
    )
    assert policy.refusal is not None and not policy.strict_refusal


def test_only_the_gate_makes_verified_values(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="only the trust gate"):
        Verified(object(), plan=None, pinned=None, evidence=None, label="x", release=lambda: None)  # type: ignore[arg-type]
    config = Config.model_validate({"format_version": 1, "backends_path": str(tmp_path / "b"),
                                    "cache_path": str(tmp_path / "c"), "galleries": []})  # fmt: skip
    session = Session(config, client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                      detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
    impostor = type("Impostor", (), {"pinned": None, "evidence": None})()
    with pytest.raises(TypeError, match="only what the trust gate verified"):
        Deployer(session).deploy(impostor, None, op="install")  # type: ignore[arg-type]
    assert not (tmp_path / "b").exists()


def test_show_says_what_each_candidate_must_prove() -> None:
    context = TrustContext("g", POLICY, False, "local")
    signed = plan_candidate(
        Candidate("uri", parse_backend_uri(TARBALL)), EntryPins(SHA, signature="https://s"), context
    )
    unsigned = plan_candidate(Candidate("uri", parse_backend_uri(TARBALL)), EntryPins(SHA), context)
    open_ = plan_candidate(
        Candidate("uri", parse_backend_uri(IMAGE)), EntryPins(), TrustContext("g", None, False, "local")
    )
    assert signed.describe() == "sha256 + signature"
    assert unsigned.describe().startswith("refused: gallery 'g' has a verification policy")
    assert open_.describe() == "nothing (unverified)"
