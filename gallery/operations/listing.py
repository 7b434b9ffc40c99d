"""``gallery list``: every gallery's entries, with what was skipped and why (no verifier, no
installer: an unsigned local index lists without loading sigstore)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

from gallery.catalog.fetch import OFFLINE
from gallery.catalog.galleries import Catalog, load_catalog
from gallery.catalog.index import IndexEntry
from gallery.config.models import Config

__all__ = ["ListResult", "ListRow", "Notice", "catalog_notices", "list_entries"]


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning or failure that does not stop the command; ``code`` is its exit-code weight."""

    level: Literal["warning", "error"]
    message: str
    code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message}


def catalog_notices(catalog: Catalog) -> list[Notice]:
    """Everything an operator should hear about the loaded galleries."""
    notices: list[Notice] = []
    for state in catalog.galleries:
        if state.error is not None:
            notices.append(Notice("error", state.error.message, state.error.code()))
            continue
        loaded = state.loaded
        if loaded is None:  # a gallery has an index or an error
            continue
        if loaded.from_cache and all(f.reason == OFFLINE for f in loaded.failures):
            notices.append(Notice("warning", f"gallery {state.name!r}: offline: the last good copy from "
                                  f"{loaded.source}, fetched {loaded.fetched_at.isoformat()}"))  # fmt: skip
        elif loaded.from_cache:
            notices.append(
                Notice(
                    "warning",
                    f"gallery {state.name!r}: every source failed; using the last good copy from "
                    f"{loaded.source} fetched {loaded.fetched_at.isoformat()} "
                    f"({'; '.join(str(f) for f in loaded.failures)})",
                )
            )
        elif loaded.failures:
            notices.append(
                Notice(
                    "warning",
                    f"gallery {state.name!r}: loaded from {loaded.source} after: "
                    + "; ".join(str(f) for f in loaded.failures),
                )
            )
        notices += [Notice("warning", warning) for warning in loaded.warnings]
        notices += [Notice("warning", f"gallery {state.name!r}: {problem}") for problem in state.problems]
    notices += [
        Notice(
            "warning",
            f"{s.name!r} is in galleries {s.used_from!r} and {s.shadowed_in!r}; "
            f"{s.used_from!r} is used (write {s.shadowed_in}@{s.name} for the other)",
        )
        for s in catalog.shadowed()
    ]
    return notices


def _exit_code(notices: list[Notice]) -> int:
    return max((n.code for n in notices), default=0)


@dataclass(frozen=True, slots=True)
class ListRow:
    gallery: str
    entry: IndexEntry

    @property
    def kind(self) -> str:
        source = self.entry.source
        return "meta" if source is None else source.kind

    def to_json(self) -> dict[str, Any]:
        return {"gallery": self.gallery, "kind": self.kind, **self.entry.known_fields()}


@dataclass(frozen=True, slots=True)
class ListResult:
    rows: tuple[ListRow, ...]
    notices: tuple[Notice, ...]

    @property
    def exit_code(self) -> int:
        return _exit_code(list(self.notices))

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [row.to_json() for row in self.rows],
            "notices": [n.to_json() for n in self.notices],
        }


def list_entries(config: Config, *, client: httpx.Client, offline: bool = False) -> ListResult:
    """Every valid entry of every gallery, with what was skipped and why (``offline``: from local
    indexes and the last good copies only)."""
    catalog = load_catalog(config, client=client, offline=offline)
    rows = tuple(ListRow(state.name, entry) for state, entry in catalog.entries())
    return ListResult(rows=rows, notices=tuple(catalog_notices(catalog)))
