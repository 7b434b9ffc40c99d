"""What an operator sees while a batch runs (implements gallery.ProgressReporter; called from the
download threads too).

- On a terminal: one live line per backend — its phase, and while downloading a bar with bytes,
  total, rate and ETA; each result line and each "unverified" warning is printed above it as soon
  as it is known.
- Not on a terminal (a log, CI): one line per phase on stderr, and each result when it is known.
- With ``--json``: one JSON object per line on stderr (phases, download progress twice a second,
  results); stdout keeps the one result document.
- With ``-q``: nothing until the results.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .render import Output, clean
from .units import human_bytes, human_seconds

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    import gallery

__all__ = ["progress_display"]


_BEFORE_DOWNLOAD = ("", "resolving", "waiting", "verifying", "verified", "unverified")


@dataclass
class _Backend:
    phase: str = ""
    detail: str = ""
    total: int = 0
    done: int = 0
    started: float = 0.0  # when downloading began


class _Display:
    """What every display shares: per-backend state, results printed once, as they come."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.backends: dict[str, _Backend] = {}

    def state(self, backend: str) -> _Backend:
        return self.backends.setdefault(backend, _Backend())

    def phase(self, backend: str, phase: Any, detail: str = "", *, total: int = 0) -> None:
        with self.lock:
            state = self.state(backend)
            changed = phase != state.phase
            state.phase, state.detail = phase, detail
            if phase == "downloading":
                state.total, state.done, state.started = total, 0, time.monotonic()
        self.show_phase(backend, state, changed)

    def layer_started(self, backend: str, digest: str, total: int) -> None:
        with self.lock:
            state = self.state(backend)
            if state.phase in _BEFORE_DOWNLOAD:  # a tarball: fetched while verifying, size unknown
                state.phase, state.detail, state.started = "downloading", "", time.monotonic()
        self.show_bytes(backend, state)

    def layer_advanced(self, backend: str, digest: str, amount: int) -> None:
        with self.lock:
            state = self.state(backend)
            state.done += amount
        self.show_bytes(backend, state)

    def layer_finished(self, backend: str, digest: str) -> None:
        pass  # the backend's line counts bytes, not layers

    def finished(self, result: gallery.InstallResult) -> None:
        self.show_result(result)
        self.out.reported.add(id(result))

    # what each display does with them
    def show_phase(self, backend: str, state: _Backend, changed: bool) -> None:
        raise NotImplementedError

    def show_bytes(self, backend: str, state: _Backend) -> None:
        pass

    def show_result(self, result: gallery.InstallResult) -> None:
        self.out.result_line(result)

    def close(self) -> None:
        pass


def _downloaded(state: _Backend) -> str:
    seconds = max(time.monotonic() - state.started, 1e-3)
    rate = human_bytes(state.done / seconds)
    return f"downloaded {human_bytes(state.done)} in {human_seconds(seconds)} ({rate}/s)"


class _Lines(_Display):
    """Not a terminal: one line per phase, to stderr."""

    def show_phase(self, backend: str, state: _Backend, changed: bool) -> None:
        if not changed or state.phase == "done":  # the result line follows
            return
        if state.phase == "unverified":
            self.out.warning(state.detail)
            return
        detail = state.detail
        if state.phase == "downloading":
            detail = f"{human_bytes(state.total)} ({detail})" if state.total else detail
        line = f"{backend}: {state.phase}" + (f" {detail}" if detail else "")
        self.out.err.print(clean(line), highlight=False)

    def show_bytes(self, backend: str, state: _Backend) -> None:
        # Layers are extracted while they download: the download's end is a line of its own.
        with self.lock:
            if not (state.total and state.done >= state.total and state.started):
                return
            summary = _downloaded(state)
            state.started = 0.0
            self.out.err.print(clean(f"{backend}: {summary}"), highlight=False)


class _Json(_Display):
    """``--json``: events, one object per line, on stderr."""

    def __init__(self, out: Output) -> None:
        super().__init__(out)
        self._last: dict[str, float] = {}

    def _event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        with self.lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def show_phase(self, backend: str, state: _Backend, changed: bool) -> None:
        event: dict[str, Any] = {"event": "phase", "backend": backend, "phase": state.phase,
                                 "detail": state.detail}  # fmt: skip
        if state.phase == "downloading":
            event["total"] = state.total
        self._event(event)

    def show_bytes(self, backend: str, state: _Backend) -> None:
        now = time.monotonic()
        complete = bool(state.total) and state.done >= state.total
        if now - self._last.get(backend, 0.0) < 0.5 and not complete:
            return
        self._last[backend] = now
        self._event({"event": "progress", "backend": backend, "bytes": state.done, "total": state.total})

    def show_result(self, result: gallery.InstallResult) -> None:
        self._event({"event": "result", **result.to_json()})


class _Live(_Display):
    """A terminal: one live line per backend (rich), results and warnings printed above it."""

    def __init__(self, out: Output) -> None:
        super().__init__(out)
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=out.err,
            transient=True,
            refresh_per_second=8,
        )
        self._tasks: dict[str, TaskID] = {}
        self._progress.start()

    def _task(self, backend: str) -> TaskID:
        with self.lock:
            task = self._tasks.get(backend)
            if task is None:
                task = self._tasks[backend] = self._progress.add_task(backend, total=None)
            return task

    def show_phase(self, backend: str, state: _Backend, changed: bool) -> None:
        if state.phase == "unverified" and changed:
            self.out.warning(state.detail)
        if state.phase == "resolving":
            # Keyed by the name asked for; the backend's own line follows once it is resolved.
            self._drop_resolving()
        elif state.phase != "resolving":
            self._drop_resolving(keep=backend)
        task = self._task(backend)
        detail = f" {clean(state.detail)}" if state.detail and state.phase != "unverified" else ""
        description = f"[bold]{clean(backend)}[/bold] {state.phase}{detail}"
        if state.phase == "downloading":
            self._progress.update(task, description=description, total=state.total or None, completed=0)
        else:
            self._progress.update(task, description=description)
        if state.phase == "done":
            self._remove(backend)

    def _drop_resolving(self, keep: str | None = None) -> None:
        with self.lock:
            names = [n for n, s in self.backends.items() if s.phase == "resolving" and n != keep]
        for name in names:
            if name != keep and name in self._tasks:
                self._remove(name)

    def show_bytes(self, backend: str, state: _Backend) -> None:
        self._progress.update(self._task(backend), completed=state.done)

    def show_result(self, result: gallery.InstallResult) -> None:
        self._remove(result.requested)
        if result.name:
            self._remove(result.name)
        # On the same terminal as the live lines: through the live console, above them; piped
        # stdout (``gallery install x > log``) gets its results as always.
        via = self._progress.console if self.out.out.is_terminal else None
        self.out.result_line(result, via=via)

    def _remove(self, backend: str) -> None:
        with self.lock:
            task = self._tasks.pop(backend, None)
            self.backends.pop(backend, None)
        if task is not None:
            self._progress.remove_task(task)

    def close(self) -> None:
        self._progress.stop()


class _Quiet(_Display):
    def show_phase(self, backend: str, state: _Backend, changed: bool) -> None:
        pass

    def finished(self, result: gallery.InstallResult) -> None:
        pass  # printed with the batch, errors included


@contextmanager
def progress_display(out: Output) -> Iterator[_Display]:
    """The display for ``out``'s mode (see the module docstring)."""
    display: _Display
    if out.as_json:
        display = _Json(out)
    elif out.quiet:
        display = _Quiet(out)
    elif out.err.is_terminal:
        display = _Live(out)
    else:
        display = _Lines(out)
    try:
        yield display
    finally:
        display.close()
