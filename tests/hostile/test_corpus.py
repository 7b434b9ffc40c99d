"""Every hostile case through the real installer: the expected error and exit code, ``backends/``
unchanged, nothing written outside the roots (see harness.py for the checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import archives
from .harness import ABSOLUTE_ESCAPE, Case, Project, assert_outcome

ARCHIVES = archives.cases()


@pytest.mark.parametrize("case", ARCHIVES, ids=[c.name for c in ARCHIVES])
def test_archive(tmp_path: Path, case: Case) -> None:
    project = Project(tmp_path)
    project.install_keeper()
    project.layout("evil", case.setup())
    project.config()
    backends, elsewhere = project.backends(), project.outside_roots()
    result = project.install("evil")
    assert_outcome(case, result)
    after = project.backends()
    if case.expect is None:
        assert case.check is not None
        case.check(project.root / "backends" / "evil")
        after = {k: v for k, v in after.items() if k in backends}  # the keeper is untouched
    assert after == backends
    assert project.outside_roots() == elsewhere
    assert not ABSOLUTE_ESCAPE.exists()
