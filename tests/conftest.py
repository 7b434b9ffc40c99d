"""Shared helpers: config files written to real temporary directories, and the CLI runner."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from localai_fixture import build_localai_like_index

REPO = Path(__file__).resolve().parent.parent


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config whose roots live in tmp_path; keyword arguments override top-level keys."""

    def make(
        *, galleries: list[dict[str, Any]] | None = None, name: str = "gallery.yaml", **fields: Any
    ) -> Path:
        data: dict[str, Any] = {
            "format_version": 1,
            "backends_path": "./roots/backends",
            "cache_path": "./roots/cache",
            "capability": "default",
        }
        data.update(fields)
        data["galleries"] = galleries if galleries is not None else []
        return write_yaml(tmp_path / name, data)

    return make


@pytest.fixture
def localai_index(tmp_path: Path) -> Path:
    fixture = build_localai_like_index()
    path = tmp_path / "localai-index.yaml"
    path.write_text(fixture.text, encoding="utf-8")
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real CNCF distribution registry on 127.0.0.1 for the whole session."""
    import shutil as _shutil

    from registry_server import running_registry

    if _shutil.which("docker-registry") is None:
        import os as _os

        if _os.environ.get("CI"):
            pytest.fail("docker-registry is not installed; .ci/run installs it")
        pytest.skip("docker-registry is not installed (apt-get install -y docker-registry)")
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server
