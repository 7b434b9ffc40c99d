"""One backend through the pipeline: plan (refusing before anything is written) -> backend lock
(recovering an interrupted operation first) -> the candidate loop through the trust gate -> the
caller's use of what was verified (placing it, locking it, exporting it) -> the meta-backend link.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from gallery.catalog.candidates import Candidate
from gallery.catalog.resolve import Resolution
from gallery.errors import BackendNotFound, GalleryError, InternalError, StrictModeRefusal, TrustRefusal
from gallery.filelocks import backend_lock
from gallery.operations.candidate_loop import run_candidates
from gallery.operations.deploy import Deployer
from gallery.operations.gate import TrustGate, Unchanged, Verified
from gallery.operations.job import Job
from gallery.operations.lockfile import LockEntry
from gallery.operations.modes import PRELOAD, Mode
from gallery.operations.session import Session
from gallery.place.metadata import BackendMetadata
from gallery.place.swap import Op
from gallery.results import InstallResult, Status
from gallery.verify.plan import EntryPlan, plan_resolution

__all__ = ["Runner", "timed"]

T = TypeVar("T")
Use = Callable[[Job, Verified], T]


class Runner:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.gate = TrustGate(session)
        self.deployer = Deployer(session)

    def run(
        self,
        resolution: Resolution,
        mode: Mode,
        use: Use[T],
        *,
        locked: LockEntry | None = None,
        wanted: str | None = None,
        unverified_pin: bool = False,
        candidates: tuple[Candidate, ...] | None = None,
        allow_downgrade: bool = False,
    ) -> T | Unchanged:
        """Plan, then run the candidates of ``resolution`` and ``use`` the first verified one.

        Raises:
            TrustRefusal, StrictModeRefusal: the plan refuses every candidate (nothing written).
            InstallFailed, GalleryError: as ``run_candidates``.
        """
        session = self.session
        plan = plan_resolution(resolution, session.config, wanted=wanted, unverified_pin=unverified_pin,
                               candidates=candidates)  # fmt: skip
        refuse_if_nothing_admitted(resolution.entry.name, plan)

        def loop() -> T | Unchanged:
            name = resolution.entry.name
            installed = session.store.get(name) if mode.replaces_foreign else session.store.current(name)
            if installed is None and mode.needs_installed:
                name = resolution.entry.name
                raise BackendNotFound(f"{name} is not installed", hint=f"use 'gallery install {name}'")
            job = Job(resolution, mode, plan, installed, locked, allow_downgrade)
            return run_candidates(self.gate, job, lambda verified: use(job, verified))

        if not mode.writes:
            return loop()
        name = resolution.entry.name
        progress = session.progress

        def waiting(holder: str) -> None:
            progress.phase(name, "waiting", holder)

        with backend_lock(session.store.state.root, name, timeout=session.config.timeouts.lock,
                          operation=mode.name, on_wait=waiting):  # fmt: skip
            session.swapper.recover(name)
            outcome = loop()
        meta = resolution.meta
        if meta is not None and meta.name != name:
            config = resolution.gallery.config
            session.store.link_meta(meta, resolution.entry, gallery=config.name, gallery_url=config.url)
        return outcome

    def place(
        self,
        resolution: Resolution,
        mode: Mode,
        *,
        locked: LockEntry | None = None,
        wanted: str | None = None,
        unverified_pin: bool = False,
        candidates: tuple[Candidate, ...] | None = None,
        allow_downgrade: bool = False,
    ) -> InstallResult:
        """``run`` that places the backend (or, for a dry run, says it would)."""
        outcome = self.run(resolution, mode, self._placing, locked=locked, wanted=wanted,
                           unverified_pin=unverified_pin, candidates=candidates,
                           allow_downgrade=allow_downgrade)  # fmt: skip
        if isinstance(outcome, Unchanged):
            name = resolution.entry.name
            warnings = (outcome.warning,) if outcome.warning else ()
            return InstallResult(name, "unchanged", name, outcome.digest, outcome.candidate, outcome.verified,
                                 warnings=warnings)  # fmt: skip
        return outcome

    def _placing(self, job: Job, verified: Verified) -> InstallResult:
        fetched = 0
        replaces = job.installed is not None
        status: Status = "upgraded" if job.mode is PRELOAD and replaces else job.mode.done
        warning = verified.plan.warning
        if job.mode.writes:
            # Said before anything is fetched: an operator can still stop an unverified install.
            progress = self.session.progress
            if verified.evidence.verified:
                signer = verified.signer
                progress.phase(job.name, "verified", f"signed by {signer}" if signer else verified.digest)
            else:
                progress.phase(job.name, "unverified", warning or "nothing was proven")
            op: Op = "repair" if job.mode.target == "recorded" else "upgrade" if replaces else "install"
            keep = job.installed if verified.plan.candidate.kind == "recorded" else None
            fetched = verified.pinned.fetched_bytes + self.deployer.deploy(
                verified, job.resolution, op=op, keep=keep
            )
            progress.phase(job.name, "done", status)
        return InstallResult(job.name, status, job.name, verified.digest, verified.candidate,
                             verified.evidence.verified, bytes_fetched=fetched,
                             warnings=(warning,) if warning else (), signer=verified.signer)  # fmt: skip


def refuse_if_nothing_admitted(name: str, plan: EntryPlan) -> None:
    """Raise before anything is written when the plan admits no candidate."""
    refusal = plan.refusal
    if refusal is None:
        return
    error = StrictModeRefusal if plan.strict_refusal else TrustRefusal
    raise error(f"{name}: {refusal}")


def timed(requested: str, action: Callable[[], InstallResult]) -> InstallResult:
    """Run ``action``; a ``GalleryError`` becomes a failed result, and so does anything else (an
    ``InternalError`` naming where), so that a batch goes on to its next backend. Timed."""
    started = time.monotonic()
    try:
        result = action()
    except GalleryError as exc:
        return InstallResult.failed(requested, exc, seconds=time.monotonic() - started)
    # The one place a bug becomes a failed result rather than a crash: the batch goes on.
    except Exception as exc:
        error = InternalError.wrap(exc)
        return InstallResult.failed(requested, error, seconds=time.monotonic() - started)
    return replace(result, seconds=time.monotonic() - started)


def installed_unverified(metadata: BackendMetadata) -> bool:
    """Nothing was proven when it was installed (LocalAI's backends and old records included)."""
    evidence = metadata.verification
    return evidence is None or not (evidence.verified or evidence.proven)
