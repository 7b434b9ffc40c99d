"""Load time of LocalAI's real backend index (tests/assets/localai/index.yaml, 1,033 entries):
parse, validate and build the catalog's lookups, median of 7 rounds. The target is < 2 s.

Run: .venv/bin/python bench/localai_index.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from gallery.catalog.fetch import LoadedIndex
from gallery.catalog.galleries import Catalog, GalleryState
from gallery.catalog.index import parse_index
from gallery.config.models import GalleryConfig
from gallery.config.safe_yaml import YamlLimits

INDEX = Path(__file__).resolve().parent.parent / "tests" / "assets" / "localai" / "index.yaml"


def load_once(data: bytes) -> Catalog:
    parsed = parse_index(data, limits=YamlLimits(), local=False)
    loaded = LoadedIndex(
        "localai", "https://example.invalid/index.yaml", False, datetime.now(UTC), parsed, ()
    )
    state = GalleryState(
        GalleryConfig(name="localai", url="https://example.invalid/index.yaml"), loaded, None
    )
    catalog = Catalog((state,))
    catalog.named("llama-cpp")
    catalog.aliased("llama-cpp")
    return catalog


def main() -> None:
    data = INDEX.read_bytes()
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        load_once(data)
        rounds.append(time.perf_counter() - start)
    print(f"LocalAI index ({len(data)} bytes): median {statistics.median(rounds):.3f} s, "
          f"rounds {', '.join(f'{r:.3f}' for r in rounds)}")  # fmt: skip


if __name__ == "__main__":
    main()
