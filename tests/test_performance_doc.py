"""docs/performance.md's table is what bench/report.py renders from docs/performance.json."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from report import render_markdown


def test_the_table_matches_the_raw_figures() -> None:
    raw = REPO / "docs" / "performance.json"
    if not raw.exists():
        pytest.fail("docs/performance.json is missing: run bench/performance.py")
    table = render_markdown(json.loads(raw.read_text()))
    assert table in (REPO / "docs" / "performance.md").read_text()
