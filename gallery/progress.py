"""How operations report download progress: a protocol the CLI implements (the library never prints)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoProgress", "ProgressReporter"]


class ProgressReporter(Protocol):
    def layer_started(self, backend: str, digest: str, total: int) -> None: ...
    def layer_advanced(self, digest: str, amount: int) -> None: ...
    def layer_finished(self, digest: str) -> None: ...


class NoProgress:
    def layer_started(self, backend: str, digest: str, total: int) -> None:
        pass

    def layer_advanced(self, digest: str, amount: int) -> None:
        pass

    def layer_finished(self, digest: str) -> None:
        pass
