"""Per-layer progress bars on a terminal (rich); nothing when stderr is not a TTY."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

__all__ = ["RichProgress"]


class RichProgress:
    """Implements gallery.install.ProgressReporter; safe to call from the layer download threads."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def layer_started(self, backend: str, digest: str, total: int) -> None:
        with self._lock:
            self._tasks[digest] = self._progress.add_task(f"{backend} {digest[7:19]}", total=total)

    def layer_advanced(self, digest: str, amount: int) -> None:
        with self._lock:
            task = self._tasks.get(digest)
        if task is not None:
            self._progress.advance(task, amount)

    def layer_finished(self, digest: str) -> None:
        with self._lock:
            task = self._tasks.pop(digest, None)
        if task is not None:
            self._progress.remove_task(task)
