"""How operations report progress: a protocol the CLI implements (the library never prints).

Per backend, an operation goes through phases, in this order (some are skipped: a warm cache has no
``downloading``, a dry run no ``extracting``): ``resolving`` -> ``waiting`` (another process holds
the backend's lock: who, and for how long we wait) -> ``verifying`` (a candidate: pin and prove) ->
``verified`` or ``unverified`` (why; said before anything is fetched) -> ``downloading`` (the bytes
still missing from the cache, with their total; ``layer_*`` report them) -> ``extracting`` (layer N
of M, files so far) -> ``swapping`` -> ``done``. The methods may be called from download threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from gallery.results import InstallResult

__all__ = ["PHASES", "NoProgress", "Phase", "ProgressReporter"]

Phase = Literal[
    "resolving", "waiting", "verifying", "verified", "unverified", "downloading", "extracting", "swapping",
    "done",
]  # fmt: skip
PHASES: tuple[Phase, ...] = (
    "resolving", "waiting", "verifying", "verified", "unverified", "downloading", "extracting", "swapping",
    "done",
)  # fmt: skip


class ProgressReporter(Protocol):
    def phase(self, backend: str, phase: Phase, detail: str = "", *, total: int = 0) -> None:
        """``backend`` entered ``phase``; ``total``: the bytes to download (``downloading``)."""

    def layer_started(self, backend: str, digest: str, total: int) -> None: ...
    def layer_advanced(self, backend: str, digest: str, amount: int) -> None: ...
    def layer_finished(self, backend: str, digest: str) -> None: ...

    def finished(self, result: InstallResult) -> None:
        """One backend of a batch is done (its result, as soon as it is known)."""


class NoProgress:
    def phase(self, backend: str, phase: Phase, detail: str = "", *, total: int = 0) -> None:
        pass

    def layer_started(self, backend: str, digest: str, total: int) -> None:
        pass

    def layer_advanced(self, backend: str, digest: str, amount: int) -> None:
        pass

    def layer_finished(self, backend: str, digest: str) -> None:
        pass

    def finished(self, result: InstallResult) -> None:
        pass
