"""The one error tree of the library.

Every error carries a message (what failed, with the candidate, digest or entry it concerns, and
why), an optional ``hint`` (the next step for the operator) and the process exit code the CLI uses
for it (see docs/cli.md):

    GalleryError                      base; exit 1 unless a subclass says otherwise
    ├── UsageError                    exit 2: a request that cannot be understood
    │   ├── ConfigError               exit 2: the config file is missing or invalid
    │   ├── IndexFormatError          exit 2: a gallery index (or one of its URIs) is malformed
    │   │   └── BrokenMetaBackend     a meta-backend maps a capability to a missing or meta entry
    │   ├── BackendNotFound           exit 2: no entry has that name or alias
    │   └── AmbiguousName             exit 2: an alias names several entries and no entry has the name
    ├── OperationalError              exit 1: network, disk, a source that cannot be reached
    │   ├── InternalError             exit 1: an unexpected exception (a bug), where it happened
    │   ├── IndexUnavailable          exit 1 (or 2 when every source answered with a malformed index)
    │   ├── SourceUnavailable         a registry, layout or URL cannot give us a candidate: try the next
    │   ├── InstallFailed             every candidate failed (exit 3 if any failed for integrity)
    │   └── Interrupted               exit 130: stopped by Ctrl-C (SIGINT); says what was left
    └── IntegrityError                exit 3: refused because something could not be trusted
        ├── DigestMismatch            bytes whose sha256 is not the one asked for
        ├── UnsafeArchiveError        an archive member breaks an extraction rule
        ├── SignatureError            no signature satisfies the gallery's policy
        ├── DowngradeRefused          an upgrade's candidate was signed before the installed build
        └── TrustRefusal              the trust gate refuses every candidate before anything is written
            └── StrictModeRefusal     require_integrity refuses something it cannot verify

Foreign exceptions (httpx, yaml, pydantic, OSError) are wrapped at the boundary that sees them
with ``raise ... from exc``, so callers only ever catch ``GalleryError``.
"""

from __future__ import annotations

import os
import traceback
from typing import ClassVar

__all__ = [
    "AmbiguousName",
    "BackendNotFound",
    "BrokenMetaBackend",
    "ConfigError",
    "DigestMismatch",
    "GalleryError",
    "IndexFormatError",
    "IndexUnavailable",
    "InstallFailed",
    "IntegrityError",
    "InternalError",
    "Interrupted",
    "OperationalError",
    "SignatureError",
    "SourceUnavailable",
    "StrictModeRefusal",
    "TrustRefusal",
    "UnsafeArchiveError",
    "UsageError",
]


class GalleryError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def code(self) -> int:
        """The process exit code for this error (an instance may refine its class's code)."""
        return self.exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(GalleryError):
    exit_code = 2


class ConfigError(UsageError):
    """The configuration file cannot be read or does not validate."""


class IndexFormatError(UsageError):
    """A gallery index, or a URI inside it, is malformed."""


class BrokenMetaBackend(IndexFormatError):
    """A meta-backend's capability map names an entry that is missing or another meta-backend."""


class BackendNotFound(UsageError):
    """No gallery entry has the requested name or alias."""


class AmbiguousName(UsageError):
    """The requested name is no entry's name, and several entries carry it as alias."""


class OperationalError(GalleryError):
    exit_code = 1


class InternalError(OperationalError):
    """Something raised that no rule here expected: a bug. Made by ``InternalError.wrap`` so that
    one broken backend ends as one line (where it happened, what to report) and a batch goes on."""

    @classmethod
    def wrap(cls, exc: BaseException) -> InternalError:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [frame for frame in frames if f"{os.sep}gallery{os.sep}" in frame.filename] or frames
        where = ""
        if ours:
            frame = ours[-1]
            path = frame.filename
            marker = path.rfind(f"{os.sep}gallery{os.sep}")
            where = f" at {path[marker + 1 :] if marker >= 0 else path}:{frame.lineno}"
        error = cls(
            f"unexpected {type(exc).__name__}{where}: {exc}",
            hint="this is a bug in gallery: run the command again with --debug and report the traceback",
        )
        error.__cause__ = exc
        return error


class Interrupted(OperationalError):
    """The operator pressed Ctrl-C: the operation stopped before placing anything (or after its
    swap completed); the message says which, and what is kept."""

    exit_code = 130


class IndexUnavailable(OperationalError):
    """Every source of a gallery index failed and no last good copy exists."""

    def __init__(
        self, message: str, *, hint: str | None = None, malformed_only: bool = False, untrusted: bool = False
    ) -> None:
        super().__init__(message, hint=hint)
        self.malformed_only = malformed_only
        self.untrusted = untrusted

    def code(self) -> int:
        # A source refused for its signature or its age makes this a trust failure (exit 3); when
        # every source answered but with something unusable, the problem is the index's format
        # (exit 2), not the network.
        if self.untrusted:
            return 3
        return 2 if self.malformed_only else 1


class SourceUnavailable(OperationalError):
    """A candidate's source cannot be reached or does not have it; the next candidate may."""


class InstallFailed(OperationalError):
    """No candidate could be installed; the message lists each with its digest and reason."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        integrity: bool = False,
        causes: tuple[GalleryError, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.integrity = integrity
        self.causes = causes  # each candidate's own error, in the order tried

    def code(self) -> int:
        return 3 if self.integrity else 1


class IntegrityError(GalleryError):
    exit_code = 3


class DigestMismatch(IntegrityError):
    """Bytes whose digest is not the one that was asked for (a registry, mirror or disk lied)."""


class UnsafeArchiveError(IntegrityError):
    """An archive member would escape staging or is not allowed (device, traversal, bomb, ...)."""


class TrustRefusal(IntegrityError):
    """The trust gate refuses every candidate of an entry (a policy it cannot satisfy, a local path
    named by a remote index, a digest that is not pinned); nothing was written."""


class StrictModeRefusal(TrustRefusal):
    """Strict mode refuses something that cannot be verified; nothing was written."""


class DowngradeRefused(IntegrityError):
    """An upgrade's candidate was signed before the installed build (a rollback attack, or a
    mistake); ``rollback`` or ``upgrade --allow-downgrade`` are the deliberate ways back."""


class SignatureError(IntegrityError):
    """No signature of the pinned digest satisfies the gallery's verification policy."""
