"""docs/troubleshooting.md names every error type the library raises."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gallery
from gallery.errors import GalleryError

from .conftest import REPO


def error_types() -> set[str]:
    found = set()
    for module in pkgutil.walk_packages(gallery.__path__, prefix="gallery."):
        loaded = importlib.import_module(module.name)
        for name, obj in inspect.getmembers(loaded, inspect.isclass):
            if (
                issubclass(obj, GalleryError)
                and obj.__module__ == loaded.__name__
                and obj is not GalleryError
            ):
                found.add(name)
    return found


def test_every_error_type_is_explained() -> None:
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    assert len(error_types()) > 20
    missing = sorted(name for name in error_types() if f"`{name}`" not in text)
    assert not missing, f"add to docs/troubleshooting.md: {missing}"
