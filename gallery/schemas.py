"""The JSON Schemas of the file formats (``gallery schema``), from the pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from gallery.catalog.index import IndexEntry
from gallery.config.models import Config
from gallery.operations.lockfile import LockFile
from gallery.place.metadata import BackendMetadata

__all__ = ["SchemaName", "json_schema"]

SchemaName = Literal["config", "index", "lock", "metadata"]


def json_schema(which: SchemaName) -> dict[str, Any]:
    """The JSON Schema of the config file, an index (a list of entries), a lock file or metadata.json."""
    if which == "config":
        return Config.model_json_schema()
    if which == "lock":
        return LockFile.model_json_schema()
    if which == "metadata":
        return BackendMetadata.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Gallery index",
        "type": "array",
        "items": IndexEntry.model_json_schema(),
    }
