"""What operations return: one result per backend, batches, update checks (pure values).

The CLI renders these as text or JSON; nothing here does I/O. Kept apart from the operations so
that ``recheck``, ``fsck`` and ``queries`` can return them without importing the installer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gallery.errors import DowngradeRefused, GalleryError, InstallFailed, Interrupted

__all__ = ["BatchResult", "HookOutcome", "InstallResult", "Status", "UpdateCheck"]

Status = Literal[
    "locked",
    "exported",
    "installed",
    "upgraded",
    "would-upgrade",
    "rolled-back",
    "repaired",
    "adopted",
    "unchanged",
    "uninstalled",
    "verified",
    "unverified",
    "failed",
    "interrupted",
]


@dataclass(frozen=True)
class InstallResult:
    requested: str
    status: Status
    name: str | None = None
    digest: str | None = None
    candidate: str | None = None
    verified: bool = False
    bytes_fetched: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    error: GalleryError | None = None
    also_removed: tuple[str, ...] = ()  # uninstall: backends that went with this one
    signer: str | None = None  # "identity (issuer)" when a signature was verified

    @classmethod
    def failed(cls, requested: str, error: GalleryError, *, seconds: float = 0.0) -> InstallResult:
        status: Status = "interrupted" if isinstance(error, Interrupted) else "failed"
        return cls(requested, status, error=error, seconds=seconds)

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.code()

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "name": self.name or self.requested,
            "status": self.status,
            "digest": self.digest,
            "candidate": self.candidate,
            "verified": self.verified,
            "bytes_fetched": self.bytes_fetched,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            "also_removed": list(self.also_removed),
            "signer": self.signer,
            "error": None if self.error is None else {"message": self.error.message, "hint": self.error.hint},
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class UpdateCheck:
    """Whether the gallery offers a build other than the installed one, and its signature."""

    available: bool | None  # None: could not tell (see reason)
    digest: str | None = None
    verified: bool = False
    signer: str | None = None
    reason: str | None = None

    @classmethod
    def from_result(cls, result: InstallResult) -> UpdateCheck:
        if result.error is not None:
            refused = isinstance(result.error, InstallFailed) and any(
                isinstance(cause, DowngradeRefused) for cause in result.error.causes
            )
            return cls(False if refused else None, reason=result.error.message)
        if result.status == "unchanged":
            return cls(False, result.digest)
        return cls(True, result.digest, result.verified, result.signer)

    def to_json(self) -> dict[str, Any]:
        return {"available": self.available, "digest": self.digest, "verified": self.verified,
                "signer": self.signer, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class HookOutcome:
    """What the ``on_change`` command did: its exit code (``None``: it did not run to the end)."""

    argv: tuple[str, ...]
    exit_code: int | None
    seconds: float
    output: str  # the end of its stdout and stderr
    error: str | None = None  # why it could not run, or was stopped

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        command = " ".join(self.argv)
        if self.error is not None:
            return f"on_change hook {command!r} failed: {self.error}"
        if self.exit_code != 0:
            last = self.output.strip().splitlines()[-1:] or [""]
            return f"on_change hook {command!r} exited {self.exit_code}" + (f": {last[0]}" if last[0] else "")
        return f"on_change hook {command!r} ran ({self.seconds:.1f} s)"

    def to_json(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "exit_code": self.exit_code, "seconds": round(self.seconds, 3),
                "output": self.output, "error": self.error, "ok": self.ok}  # fmt: skip


@dataclass(frozen=True)
class BatchResult:
    results: tuple[InstallResult, ...]
    hook: HookOutcome | None = None  # on_change, when the batch changed something

    @property
    def exit_code(self) -> int:
        """130 when interrupted, else 3 when anything was refused for integrity, else the worst."""
        codes = [r.exit_code for r in self.results]
        if Interrupted.exit_code in codes:
            return Interrupted.exit_code
        return 3 if 3 in codes else max(codes, default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "bytes_fetched": sum(r.bytes_fetched for r in self.results),
            "failed": sum(1 for r in self.results if r.error is not None),
            "hook": None if self.hook is None else self.hook.to_json(),
            "exit_code": self.exit_code,
        }
