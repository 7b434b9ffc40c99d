"""The candidate loop: the documented failure rules, in one place.

Candidates are tried in order (``uri``, entry mirrors, tag fallbacks; a registry's mirrors before
the registry). A candidate the trust plan refused is never contacted. A candidate that is
unreachable or lacks the reference moves on. With a signature policy every candidate is verified
on its own, so an integrity failure moves on too; without one, an integrity failure ends the
install: we never fall back to a weaker candidate. The first candidate that passes the gate is
handed to ``use`` (which places it, or just returns it); success is a return value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gallery.errors import GalleryError, InstallFailed, IntegrityError, SourceUnavailable, TrustRefusal
from gallery.operations.gate import TrustGate, Unchanged, Verified
from gallery.operations.job import Job

__all__ = ["run_candidates"]

T = TypeVar("T")


def run_candidates(gate: TrustGate, job: Job, use: Callable[[Verified], T]) -> T | Unchanged:
    """The first candidate that passes the gate, used; or ``Unchanged``.

    Raises:
        InstallFailed: no candidate worked (exit 3 when any failed for integrity); each
            candidate's error is in ``causes``.
        GalleryError: anything that no other candidate can help with (disk, locks).
    """
    attempts = _Attempts()
    progress = gate.progress
    for plan in job.plan.candidates:
        if plan.refusal is not None:
            attempts.add(str(plan.candidate), None, TrustRefusal(plan.refusal))
            continue
        for attempt in gate.attempts(plan, job):
            try:
                progress.phase(job.name, "verifying", attempt.label)
                outcome = attempt.run(attempt)
                if isinstance(outcome, Unchanged):
                    return outcome
                try:
                    return use(outcome)
                finally:
                    outcome.release()
            except SourceUnavailable as exc:
                attempts.add(attempt.label, attempt.digest, exc)
            except IntegrityError as exc:
                attempts.add(attempt.label, attempt.digest, exc)
                if job.plan.context.policy is None:
                    raise InstallFailed(
                        f"{job.name}: {attempts.lines[-1]}; without a signature policy an integrity "
                        "failure ends the install",
                        integrity=True,
                        causes=(exc,),
                    ) from exc
    raise InstallFailed(
        f"{job.name}: no candidate could be {job.mode.verb}: " + "; ".join(attempts.lines),
        hint=attempts.hint(job.name),
        integrity=attempts.integrity,
        causes=tuple(attempts.errors),
    )


@dataclass
class _Attempts:
    """What each candidate did, for the final error."""

    lines: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    errors: list[GalleryError] = field(default_factory=list)

    @property
    def integrity(self) -> bool:
        return any(isinstance(error, IntegrityError) for error in self.errors)

    def add(self, label: str, digest: str | None, error: GalleryError) -> None:
        self.lines.append(f"{label}" + (f" ({digest})" if digest else "") + f": {error.message}")
        self.errors.append(error)
        if error.hint and error.hint not in self.hints:
            self.hints.append(error.hint)

    def hint(self, name: str) -> str:
        """The failures' own next steps when they agree, else where to look."""
        if len(self.hints) == 1:
            return self.hints[0]
        return f"see each candidate's reason; 'gallery show {name}' lists them"
