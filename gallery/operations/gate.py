"""The trust gate: pins one candidate to a digest and proves what its plan demands, for every entry
point alike. Only this module makes a ``Verified`` value, and the deployer accepts nothing else.

For each place a candidate can be fetched from (a registry's mirrors first, then the registry):

    pin to a digest (a digest the plan binds is never looked up) -> installed already? Unchanged
    -> the locked image, byte for byte? -> the bound digest? -> signature under the policy
    (tarballs: before a byte of them is fetched) -> not signed before the installed build
    -> Verified (pinned image + evidence of exactly what was proven)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gallery.catalog.sources import OciLayoutSource, OciSource, TarballSource, parse_index_location
from gallery.errors import (
    DigestMismatch,
    DowngradeRefused,
    OperationalError,
    SourceUnavailable,
    TrustRefusal,
)
from gallery.oci.layout import LayoutError, OciLayout
from gallery.oci.models import EMPTY_CONFIG, Descriptor, ImageManifest
from gallery.oci.references import OciReference
from gallery.operations.job import Job
from gallery.operations.lockfile import LockEntry
from gallery.operations.session import Session
from gallery.prepare.pin import PinnedImage, pin_image, pin_layout
from gallery.prepare.tarball import pin_tarball, read_signature
from gallery.progress import ProgressReporter
from gallery.verify.bundles import signed_sha256
from gallery.verify.discovery import FirstReachable, RegistrySignatures
from gallery.verify.evidence import Evidence, RecordedSignature, SignatureSource
from gallery.verify.plan import CandidatePlan, Proof

__all__ = ["Attempt", "TrustGate", "Unchanged", "Verified"]

_GATE = object()  # the capability to make a Verified value; it never leaves this module


class Verified:
    """A candidate that passed the trust gate: its pinned image and the evidence of what was
    proven. ``release`` frees what the gate opened for it (a layout, an unverified download)."""

    __slots__ = ("_release", "evidence", "label", "pinned", "plan")
    plan: CandidatePlan
    pinned: PinnedImage
    evidence: Evidence
    label: str
    _release: Callable[[], None]

    def __init__(
        self,
        token: object,
        *,
        plan: CandidatePlan,
        pinned: PinnedImage,
        evidence: Evidence,
        label: str,
        release: Callable[[], None],
    ) -> None:
        if token is not _GATE:
            raise TypeError("only the trust gate makes Verified values")
        for slot, value in (("plan", plan), ("pinned", pinned), ("evidence", evidence), ("label", label),
                            ("_release", release)):  # fmt: skip
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Verified value cannot be changed after the gate made it")

    @property
    def digest(self) -> str:
        return self.pinned.resolved_digest

    @property
    def candidate(self) -> str:
        return str(self.plan.candidate)

    @property
    def signer(self) -> str | None:
        evidence = self.evidence
        return f"{evidence.identity} (issuer {evidence.issuer})" if evidence.verified else None

    def release(self) -> None:
        self._release()


@dataclass(frozen=True)
class Unchanged:
    """The candidate offers exactly what is installed: nothing to fetch, verify or place."""

    digest: str
    candidate: str
    verified: bool
    warning: str | None = None


@dataclass
class Attempt:
    """One place to get a candidate from; ``digest`` is filled in as soon as it is known."""

    label: str
    run: Callable[[Attempt], Verified | Unchanged]
    digest: str | None = None


@dataclass
class _Opened:
    """What an attempt opened that must outlive it until the backend is placed."""

    layouts: list[OciLayout] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)

    def release(self) -> None:
        for layout in self.layouts:
            layout.close()
        for path in self.scratch:
            path.unlink(missing_ok=True)


class TrustGate:
    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def progress(self) -> ProgressReporter:
        return self._session.progress

    def attempts(self, plan: CandidatePlan, job: Job) -> Iterator[Attempt]:
        """Where ``plan``'s candidate can be fetched from, in order. A refused plan has none."""
        if plan.refusal is not None:
            return
        source = plan.source
        if plan.candidate.kind == "recorded":
            yield Attempt(str(plan.candidate), lambda attempt: self._recorded(plan, job, attempt))
        elif isinstance(source, OciSource):
            reference = source.reference
            for host in self._session.config.registry_mirrors.get(reference.registry, ()):
                label = f"{plan.candidate} via mirror {host}"
                yield Attempt(label, self._from_registry(plan, job, host, reference))
            yield Attempt(str(plan.candidate), self._from_registry(plan, job, reference.registry, reference))
        elif isinstance(source, OciLayoutSource):
            yield Attempt(str(plan.candidate), lambda attempt: self._layout(plan, source, job, attempt))
        else:
            yield Attempt(str(plan.candidate), lambda attempt: self._tarball(plan, source, job, attempt))

    # -- pinning, per kind --------------------------------------------------------------------

    def _from_registry(
        self, plan: CandidatePlan, job: Job, host: str, reference: OciReference
    ) -> Callable[[Attempt], Verified | Unchanged]:
        def run(attempt: Attempt) -> Verified | Unchanged:
            session = self._session
            endpoint = session.registry.endpoint(host)
            # One HEAD decides a no-op upgrade: nothing else is fetched or verified.
            resolved = reference.digest or session.registry.resolve_tag(endpoint, reference)
            attempt.digest = resolved
            unchanged = _unchanged(job, resolved, plan)
            if unchanged is not None:
                return unchanged
            pinned = pin_image(session.registry, endpoint, reference, platform=session.config.platform,
                               limits=session.config.limits, resolved=resolved)  # fmt: skip
            return self._admit(plan, job, pinned, attempt, _Opened())

        return run

    def _layout(
        self, plan: CandidatePlan, source: OciLayoutSource, job: Job, attempt: Attempt
    ) -> Verified | Unchanged:
        opened = _Opened()
        try:
            opened.layouts.append(self._open_layout(source, job))
            config = self._session.config
            pinned = pin_layout(opened.layouts[0], platform=config.platform, limits=config.limits)
            return self._admit(plan, job, pinned, attempt, opened)
        except BaseException:
            opened.release()
            raise

    def _open_layout(self, source: OciLayoutSource, job: Job) -> OciLayout:
        """A relative ``ocifile://`` path is relative to the (local) index file that names it."""
        path = Path(source.path)
        if not path.is_absolute():
            loaded = job.resolution.gallery.loaded
            location = parse_index_location(loaded.source, base_dir=Path("/")) if loaded else None
            if location is None or location.kind != "file":
                raise LayoutError(f"{source}: a relative ocifile:// path needs a gallery index on local disk")
            path = Path(location.target).parent / path
        return OciLayout(path, max_manifest_bytes=self._session.config.limits.max_manifest_bytes)

    def _tarball(
        self, plan: CandidatePlan, source: TarballSource, job: Job, attempt: Attempt
    ) -> Verified | Unchanged:
        """The signature is checked before a byte of the tarball is fetched: it names the sha256."""
        session = self._session
        expected, evidence = plan.sha256, None
        if plan.signature is not None:  # the plan names one only where a policy demands it
            bundle = read_signature(plan.signature, client=session.client,
                                    max_bytes=session.config.limits.max_bundle_bytes)  # fmt: skip
            expected = expected or signed_sha256(bundle)
            attempt.digest = f"sha256:{expected}"
            evidence = self._verify_blob(job, expected, bundle)
        if expected is not None:
            attempt.digest = f"sha256:{expected}"
            unchanged = _unchanged(job, attempt.digest, plan)
            if unchanged is not None:
                return unchanged
        opened = _Opened()
        try:
            pinned = _download_tarball(session, job.name, source, expected)
            opened.scratch += pinned.local_blobs.values()
            checked = f"sha256:{expected}" if expected is not None else None
            return self._admit(plan, job, pinned, attempt, opened, evidence, checked=checked)
        except BaseException:
            opened.release()
            raise

    def _recorded(self, plan: CandidatePlan, job: Job, attempt: Attempt) -> Verified | Unchanged:
        """Rebuild from the recorded, cached layers (repair, offline): the recorded signature is
        verified again under today's policy."""
        installed = job.installed
        if installed is None or not installed.layers:
            raise SourceUnavailable("no layers are recorded to rebuild from")
        digest = installed.resolved_digest or installed.digest or ""
        layers = [{"mediaType": r.media_type, "digest": r.digest, "size": r.size} for r in installed.layers]
        manifest = ImageManifest.model_validate(
            {"schemaVersion": 2, "config": EMPTY_CONFIG, "layers": layers}
        )
        recorded = installed.verification.bundle if installed.verification is not None else None
        bundle = json.dumps(recorded).encode() if recorded is not None else None
        evidence, checked = None, None
        if plan.tarball:
            # The bytes are the cached blob of the recorded sha256, hashed again as they are extracted.
            checked = digest
            if plan.signature is not None:  # named only when a bundle was recorded (repair)
                evidence = self._verify_blob(job, digest.removeprefix("sha256:"), bundle or b"")
        signatures = RecordedSignature(bundle, where=f"{job.name}'s metadata") if bundle is not None else None
        platform = installed.platform or self._session.config.platform
        pinned = PinnedImage(str(plan.candidate), digest, installed.manifest_digest or digest, manifest,
                             platform, _NoBlobs(), signatures)  # fmt: skip
        return self._admit(plan, job, pinned, attempt, _Opened(), evidence, checked=checked)

    # -- the checks ---------------------------------------------------------------------------

    def _admit(
        self,
        plan: CandidatePlan,
        job: Job,
        pinned: PinnedImage,
        attempt: Attempt,
        opened: _Opened,
        evidence: Evidence | None = None,
        *,
        checked: str | None = None,
    ) -> Verified | Unchanged:
        digest = pinned.resolved_digest
        attempt.digest = digest
        unchanged = _unchanged(job, digest, plan)
        if unchanged is not None:
            opened.release()
            return unchanged
        proven: list[Proof] = []
        if digest == checked:
            proven.append("sha256")  # pin_tarball hashed the bytes against it
        if job.locked is not None:
            _check_matches_lock(pinned, job.locked)
        if "digest" in plan.proofs:
            if digest != plan.digest:
                raise DigestMismatch(f"{attempt.label} is {digest}, not the pinned {plan.digest}")
            proven.append("digest")
        if job.mode.refuses_other_installed and job.installed is not None:
            raise OperationalError(
                f"{job.name} is already installed at {job.installed.digest}; the gallery now offers {digest}",
                hint=f"use 'gallery upgrade {job.name}'",
            )
        if "signature" in plan.proofs:
            evidence = evidence if plan.tarball else self._verify_image(job, pinned)
            if evidence is None or not evidence.verified:
                raise _unproven(plan, "signature")
            proven.append("signature")
        if "sha256" in plan.proofs and "sha256" not in proven:
            raise _unproven(plan, "sha256")
        evidence = (evidence or _unverified(plan, proven)).model_copy(
            update={"digest": digest, "proven": tuple(sorted(proven))}
        )
        _refuse_downgrade(job, evidence, attempt.label)
        return Verified(_GATE, plan=plan, pinned=pinned, evidence=evidence, label=attempt.label,
                        release=opened.release)  # fmt: skip

    def _verify_image(self, job: Job, pinned: PinnedImage) -> Evidence:
        session, gallery = self._session, job.resolution.gallery.config
        policy = job.plan.context.policy
        if policy is None:
            raise _unproven(None, "signature")
        return session.verifier.verify_image(
            digest=pinned.resolved_digest,
            sources=self._signature_sources(pinned, job),
            policy=policy,
            trusted_root=session.trusted_root(gallery),
            gallery=gallery.name,
            repositories=_repositories(job),
        )

    def _verify_blob(self, job: Job, sha256_hex: str, bundle: bytes) -> Evidence:
        session, gallery = self._session, job.resolution.gallery.config
        policy = job.plan.context.policy
        if policy is None:
            raise _unproven(None, "signature")
        return session.verifier.verify_blob(
            sha256_hex=sha256_hex,
            bundle=bundle,
            policy=policy,
            trusted_root=session.trusted_root(gallery),
            gallery=gallery.name,
        )

    def _signature_sources(self, pinned: PinnedImage, job: Job) -> list[SignatureSource]:
        """The candidate's own repository first, then the primary uri's (a bundle binds to a digest,
        not to a repository: mirrors often carry no signatures), reached through its registry
        mirrors too."""
        sources: list[SignatureSource] = [pinned.signatures] if pinned.signatures is not None else []
        primary = job.resolution.entry.source
        if isinstance(primary, OciSource):  # a repair from the cache names a layout: offline
            session, reference = self._session, primary.reference
            limits = session.config.limits
            hosts = (*session.config.registry_mirrors.get(reference.registry, ()), reference.registry)
            candidates = [
                RegistrySignatures(session.registry, session.registry.endpoint(host), reference,
                                   limits.max_referrers, limits.max_bundle_bytes)
                for host in hosts
            ]  # fmt: skip
            if not any(c.describe() == s.describe() for c in candidates for s in sources):
                sources.append(FirstReachable(candidates))
        return sources


def _unchanged(job: Job, digest: str, plan: CandidatePlan) -> Unchanged | None:
    """``digest`` is what is installed and the mode may stop there. Not so on upgrade of a backend
    installed unverified whose gallery now has a policy: it is verified and placed again."""
    mode, installed = job.mode, job.installed
    if not mode.shortcut_unchanged or installed is None:
        return None
    if digest not in (installed.resolved_digest, installed.digest):
        return None
    verified = installed.verification is not None and installed.verification.verified
    if mode.reverify_unverified and not verified and job.plan.context.policy is not None:
        return None
    return Unchanged(digest, str(plan.candidate), verified, plan.warning)


def _check_matches_lock(pinned: PinnedImage, locked: LockEntry) -> None:
    """The pinned image is the locked one, byte for byte (digests of manifest and layers)."""
    layers = tuple(layer.digest for layer in pinned.manifest.layers)
    expected = tuple(layer.digest for layer in locked.layers)
    if pinned.resolved_digest != locked.resolved_digest or pinned.manifest_digest != locked.manifest_digest:
        raise DigestMismatch(
            f"{pinned.label} is {pinned.resolved_digest} (manifest {pinned.manifest_digest}); the lock file "
            f"has {locked.resolved_digest} (manifest {locked.manifest_digest})",
            hint="the source no longer has the locked content; lock again after reviewing the change",
        )
    if layers != expected:
        raise DigestMismatch(f"{pinned.label}: its layers {list(layers)} are not the locked {list(expected)}")


def _refuse_downgrade(job: Job, evidence: Evidence, label: str) -> None:
    """An upgrade never moves to a build signed before the installed one (a validly signed old
    build with a known hole is the attack), unless the operator asked for it. A lock file pins
    digests on purpose and repair restores the recorded one: neither is checked."""
    if job.allow_downgrade or job.locked is not None or not job.mode.checks_downgrade:
        return
    installed = job.installed.verification if job.installed is not None else None
    if installed is None or installed.signing_time is None or evidence.signing_time is None:
        return
    if evidence.signing_time < installed.signing_time:
        raise DowngradeRefused(
            f"{label} ({evidence.digest}) was signed at {evidence.signing_time.isoformat()}, "
            f"before the installed build ({installed.digest}, "
            f"signed at {installed.signing_time.isoformat()})",
            hint="if going back is intended, use 'gallery rollback NAME' or 'gallery upgrade "
            "--allow-downgrade NAME'",
        )


def _repositories(job: Job) -> frozenset[str]:
    """Every repository the entry names: a signature whose subject names another is refused."""
    return frozenset(
        plan.source.reference.name for plan in job.plan.candidates if isinstance(plan.source, OciSource)
    )


def _unverified(plan: CandidatePlan, proven: Sequence[Proof]) -> Evidence:
    if "sha256" in proven:
        reason = "the tarball's bytes hash to the expected sha256; no signature (the gallery has no policy)"
    elif "digest" in proven:
        reason = "the image is the pinned digest; no signature (the gallery has no policy)"
    else:
        reason = plan.warning or "nothing could be verified"
    return Evidence.unverified(reason)


def _unproven(plan: CandidatePlan | None, what: str) -> TrustRefusal:
    # Unreachable while the plan and the checks agree; should they ever disagree, refuse.
    return TrustRefusal(
        f"{plan.candidate if plan else 'candidate'}: its plan demands a {what} that was not proven"
    )


def _download_tarball(
    session: Session, name: str, source: TarballSource, expected: str | None
) -> PinnedImage:
    """Pin a tarball (fetching it, unless cached), its download shown like a layer's."""
    key, progress, config = f"sha256:{expected}" if expected else source.url, session.progress, session.config
    progress.layer_started(name, key, 0)
    try:
        return pin_tarball(source, expected_sha256=expected, cache=session.cache, client=session.client,
                           max_bytes=config.limits.max_extract_bytes, platform=config.platform,
                           on_bytes=lambda amount: progress.layer_advanced(name, key, amount))  # fmt: skip
    finally:
        progress.layer_finished(name, key)


class _NoBlobs:
    """Blob source of a rebuild from the cache: a blob that is not there cannot be fetched."""

    def fetch_blob(
        self, descriptor: Descriptor, writer: Any, *, on_bytes: Any = None, cancel: Any = None
    ) -> None:
        raise SourceUnavailable(f"blob {descriptor.digest} is no longer in the cache")
