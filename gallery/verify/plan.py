"""What each candidate must prove before a byte of it is used: the one decision (pure).

Every entry point (install, upgrade, preload, ``preload --lock``, ``install --from``, repair, lock,
export, meta-backends) plans its candidates here, and the trust gate
(``gallery.operations.gate``) enforces exactly this plan. The rules, stated once
(docs/trust-model.md prints them as a table):

1. **One value binds every candidate.** The entry's sha256 (the ``sha256`` field or any
   ``#sha256=`` fragment; the index refuses entries where they disagree) binds every tarball
   candidate; its OCI digest (``@sha256:`` on the uri or a mirror) binds every OCI candidate, tag
   fallbacks included. A digest wanted on purpose (a lock entry, a repair's recorded digest)
   binds every candidate in the same way.
2. **Local paths only from local indexes.** ``file://`` tarballs, ``ocifile://`` layouts and
   ``file://`` signatures are refused unless the index that names them was read from this
   machine's disk (a bundle, a lock file written here and the blob cache count as local).
3. **With a policy, everything is signed.** OCI images and layouts must carry a signature of their
   pinned digest that verifies under the gallery's policy; tarballs must name a ``signature``
   bundle that verifies under it, and their bytes must hash to the sha256 it signs. A sha256 alone
   is not enough there: whoever edits an unsigned index could name any bytes.
4. **Strict mode refuses what cannot be checked**: without a policy every OCI candidate (an OCI
   entry needs a policy in strict mode), and a tarball whose sha256 the index does not give (with
   a policy too: strict mode wants the index to name the bytes, as pip's ``--require-hashes``).
   Outside strict mode such a candidate installs with a warning, ``verified: false``.
5. **``require_pinned_digests``** (per gallery): an OCI candidate from a registry needs the entry's
   digest, a tarball its sha256; without one it is refused.
6. **Strict mode refuses a lock entry that was not verified when it was locked** (and carries no
   sha256), whatever the gallery says today.

A candidate the plan refuses is never contacted; when every candidate of an entry is refused, the
entry is refused before anything is written (no lock file, staging or cache blob).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gallery.catalog.candidates import Candidate, build_candidates
from gallery.catalog.resolve import Resolution
from gallery.catalog.sources import BackendSource, OciSource, TarballSource, is_local_source, is_local_url
from gallery.config.models import Config
from gallery.verify.policy import VerificationPolicy

__all__ = [
    "CandidatePlan",
    "EntryPins",
    "EntryPlan",
    "IndexOrigin",
    "Proof",
    "TrustContext",
    "plan_candidate",
    "plan_entry",
    "plan_resolution",
]

Proof = Literal["signature", "sha256", "digest"]
IndexOrigin = Literal["local", "remote"]


@dataclass(frozen=True, slots=True)
class TrustContext:
    """What the decision depends on besides the candidate: the gallery and how the entry reached us."""

    gallery: str
    policy: VerificationPolicy | None
    strict: bool
    origin: IndexOrigin
    require_pinned_digests: bool = False
    unverified_pin: bool = False  # a wanted digest (lock entry, repair) that was never verified


@dataclass(frozen=True, slots=True)
class EntryPins:
    """The values that bind every candidate of one entry."""

    sha256: str | None = None  # hex: every tarball candidate must hash to it
    digest: str | None = None  # every OCI candidate must pin to it
    signature: str | None = None  # the tarball's sign-blob bundle (URL)

    @classmethod
    def wanted(cls, digest: str, *, signature: str | None = None) -> EntryPins:
        """A digest asked for on purpose (a lock entry, a repair): it binds every candidate."""
        return cls(sha256=digest.removeprefix("sha256:"), digest=digest, signature=signature)


@dataclass(frozen=True, slots=True)
class CandidatePlan:
    """One candidate, bound to the entry's pins, with what it must prove (or why it is refused)."""

    candidate: Candidate
    proofs: frozenset[Proof]
    refusal: str | None = None
    strict_refusal: bool = False  # refused because of strict mode (the error says so)
    warning: str | None = None
    sha256: str | None = None  # tarballs: the bytes must hash to this (when known before the fetch)
    digest: str | None = None  # OCI: the digest it is pinned to (no tag lookup)
    signature: str | None = None  # tarballs: the bundle to verify

    @property
    def source(self) -> BackendSource:
        return self.candidate.source

    @property
    def tarball(self) -> bool:
        return isinstance(self.candidate.source, TarballSource)

    def describe(self) -> str:
        """What it must prove, for ``show`` and metadata."""
        if self.refusal is not None:
            return f"refused: {self.refusal}"
        return " + ".join(sorted(self.proofs)) or "nothing (unverified)"


@dataclass(frozen=True, slots=True)
class EntryPlan:
    context: TrustContext
    candidates: tuple[CandidatePlan, ...]

    @property
    def admitted(self) -> tuple[CandidatePlan, ...]:
        return tuple(plan for plan in self.candidates if plan.refusal is None)

    @property
    def refusal(self) -> str | None:
        """Set when no candidate may be tried: the entry is refused before anything is written."""
        if self.admitted:
            return None
        return "; ".join(f"{plan.candidate}: {plan.refusal}" for plan in self.candidates) or "no candidates"

    @property
    def strict_refusal(self) -> bool:
        return self.refusal is not None and any(plan.strict_refusal for plan in self.candidates)


def plan_entry(candidates: tuple[Candidate, ...], pins: EntryPins, context: TrustContext) -> EntryPlan:
    """Plan every candidate of one entry (in order)."""
    return EntryPlan(context, tuple(plan_candidate(c, pins, context) for c in candidates))


def plan_resolution(
    resolution: Resolution,
    config: Config,
    *,
    wanted: str | None = None,
    unverified_pin: bool = False,
    candidates: tuple[Candidate, ...] | None = None,
) -> EntryPlan:
    """The plan of a resolved entry under its gallery's policy and the config's strict mode.

    ``wanted``: a digest asked for on purpose (a lock entry, a repair), binding every candidate;
    ``unverified_pin``: that digest was never verified (strict mode refuses it); ``candidates``:
    others than the entry's own (a repair from the blob cache).
    """
    entry, gallery = resolution.entry, resolution.gallery.config
    pins = (
        EntryPins.wanted(wanted, signature=entry.signature)
        if wanted is not None
        else EntryPins(entry.expected_sha256, entry.pinned_digest, entry.signature)
    )
    context = TrustContext(
        gallery=gallery.name,
        policy=gallery.verification,
        strict=config.require_integrity,
        origin=resolution.origin,
        require_pinned_digests=gallery.require_pinned_digests,
        unverified_pin=unverified_pin,
    )
    if candidates is None:
        candidates = build_candidates(entry, lookup=resolution.gallery.entry)
    return plan_entry(candidates, pins, context)


def plan_candidate(candidate: Candidate, pins: EntryPins, context: TrustContext) -> CandidatePlan:
    """Bind ``candidate`` to the entry's pins and decide what it must prove."""
    bound = _bind(candidate, pins)
    source = bound.source
    refusal = _origin_refusal(source, pins, context) or _pin_refusal(source, pins, context)
    if refusal is not None:
        return CandidatePlan(bound, frozenset(), refusal)
    if context.strict and context.unverified_pin:
        return CandidatePlan(bound, frozenset(), _UNVERIFIED_PIN, strict_refusal=True)
    if isinstance(source, TarballSource):
        return _plan_tarball(bound, pins, context)
    return _plan_image(bound, pins, context)


_UNVERIFIED_PIN = (
    "strict mode: this digest was not verified when locked (or, for a repair, when installed); "
    "lock or install it again from a gallery with a verification policy"
)


def _bind(candidate: Candidate, pins: EntryPins) -> Candidate:
    source = candidate.source
    if isinstance(source, TarballSource):  # its own fragment, if any, is the entry's sha256 already
        return replace(candidate, source=TarballSource(source.url, pins.sha256))
    if isinstance(source, OciSource) and pins.digest is not None:
        return replace(candidate, source=OciSource(source.reference.pinned(pins.digest)))
    return candidate


def _origin_refusal(source: BackendSource, pins: EntryPins, context: TrustContext) -> str | None:
    if context.origin == "local":
        return None
    if is_local_source(source):
        return "a gallery index read over the network cannot name local files"
    if isinstance(source, TarballSource) and pins.signature is not None and is_local_url(pins.signature):
        return "a gallery index read over the network cannot name a local signature file"
    return None


def _pin_refusal(source: BackendSource, pins: EntryPins, context: TrustContext) -> str | None:
    if not context.require_pinned_digests:
        return None
    if isinstance(source, OciSource) and pins.digest is None:
        return (
            f"gallery {context.gallery!r} requires pinned digests and the entry's uri has no @sha256: "
            "(gallery checksum --pin fills it in)"
        )
    if isinstance(source, TarballSource) and pins.sha256 is None:
        return f"gallery {context.gallery!r} requires pinned digests and the tarball has no sha256"
    return None


def _plan_tarball(candidate: Candidate, pins: EntryPins, context: TrustContext) -> CandidatePlan:
    sha256 = pins.sha256
    if context.strict and sha256 is None:  # strict mode wants the index to name the bytes
        return CandidatePlan(
            candidate,
            frozenset(),
            "strict mode: the tarball has no sha256; add 'sha256' to the entry "
            "(gallery checksum --write fills it in)",
            strict_refusal=True,
        )
    if context.policy is not None:
        if pins.signature is None:
            return CandidatePlan(
                candidate,
                frozenset(),
                f"gallery {context.gallery!r} has a verification policy and this tarball has no "
                "'signature' (a sign-blob bundle); a sha256 alone does not satisfy a policy",
            )
        proofs: frozenset[Proof] = frozenset(("signature", "sha256"))
        return CandidatePlan(candidate, proofs, sha256=sha256, signature=pins.signature)
    if sha256 is not None:
        return CandidatePlan(candidate, frozenset(("sha256",)), sha256=sha256)
    return CandidatePlan(
        candidate,
        frozenset(),
        warning=f"tarball {candidate} has no sha256: nothing proves its content (unverified)",
    )


def _plan_image(candidate: Candidate, pins: EntryPins, context: TrustContext) -> CandidatePlan:
    digest: frozenset[Proof] = frozenset(("digest",)) if pins.digest is not None else frozenset()
    if context.policy is not None:
        signature: frozenset[Proof] = frozenset(("signature",))
        return CandidatePlan(candidate, signature | digest, digest=pins.digest)
    if context.strict:
        return CandidatePlan(
            candidate,
            frozenset(),
            f"strict mode: gallery {context.gallery!r} has no verification policy, so {candidate} cannot "
            "be verified; add a 'verification' block to the gallery (docs/strict-mode.md)",
            strict_refusal=True,
        )
    return CandidatePlan(
        candidate,
        digest,
        warning=f"gallery {context.gallery!r} has no verification policy: "
        f"{candidate} cannot be verified (unverified)",
        digest=pins.digest,
    )
