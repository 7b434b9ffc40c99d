"""What extraction records of each installed path (metadata.json ``files``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FileRecord", "FileType"]

FileType = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One installed path, as recorded in metadata.json ``files``."""

    path: str
    type: FileType
    mode: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "type": self.type, "mode": f"{self.mode:04o}"}
        if self.type in ("file", "hardlink"):
            data["size"] = self.size
            data["sha256"] = self.sha256
        if self.target is not None:
            data["target"] = self.target
        return data
