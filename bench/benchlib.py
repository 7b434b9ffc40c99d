"""What the benchmarks share: a local registry in a temporary directory and a gallery pointing at it."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import Registry, running_registry  # noqa: E402

GALLERY = ROOT / ".venv" / "bin" / "gallery"


@contextmanager
def local_registry() -> Iterator[tuple[Path, Registry]]:
    """A scratch directory and Debian's docker-registry on 127.0.0.1 (exits if it is missing)."""
    if shutil.which("docker-registry") is None:
        sys.stderr.write("docker-registry is not installed (apt-get install -y docker-registry)\n")
        raise SystemExit(1)
    with tempfile.TemporaryDirectory() as name, running_registry(Path(name) / "registry") as registry:
        yield Path(name), registry


def write_gallery(tmp: Path, registry: Registry, entries: list[dict[str, Any]]) -> Path:
    """An index of ``entries`` and a config (no policy) whose roots are in ``tmp``; returns the config."""
    (tmp / "index.yaml").write_text(yaml.safe_dump(entries))
    config = tmp / "gallery.yaml"
    config.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "insecure_registries": [registry.host], "galleries": [{"name": "bench", "url": "./index.yaml"}],
    }))  # fmt: skip
    return config


def replace_marked(doc: Path, marker: str, block: str, *, heading: str) -> None:
    """Put ``block`` between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``doc`` (added at the
    end under ``heading`` when the markers are not there yet)."""
    text = doc.read_text() if doc.exists() else ""
    if f"<!-- {marker} -->" not in text:
        text = text.rstrip() + f"\n\n{heading}\n\n<!-- {marker} -->\n<!-- /{marker} -->\n"
    head, _, rest = text.partition(f"<!-- {marker} -->")
    tail = rest.partition(f"<!-- /{marker} -->")[2]
    doc.write_text(f"{head}<!-- {marker} -->\n{block}\n<!-- /{marker} -->{tail}")
