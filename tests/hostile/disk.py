"""Disk faults: ENOSPC and EIO raised by the write call of each stage, and a read-only backends dir.

Each fault is injected at the lowest call of ``gallery`` itself that reaches the kernel for that
stage (``BlobWriter.write`` for the download, ``write_all`` for extraction, on its writer thread,
``atomic_write_bytes`` for metadata.json, the swap's ``FsOps``), so the error travels every layer
above as a real one would. The pyfakefs sweep in tests/test_disk_faults.py fills a fake disk at every byte count, and
tests/test_swap.py fails every filesystem call of the swap; these cases put the same faults in the
corpus, through a whole install, with the corpus's checks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gallery.errors import OperationalError
from gallery.operations import deploy
from gallery.place import filewriter
from gallery.place import swap as swapmodule
from gallery.place.fsops import FsOps
from gallery.prepare import blobcache

from .harness import Case

Injector = Callable[[pytest.MonkeyPatch, Path], FsOps | None]


def _failing(code: int, original: Callable[..., Any], *, after: int = 0) -> Callable[..., Any]:
    calls = 0

    def fail(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(code, os.strerror(code))
        return original(*args, **kwargs)

    return fail


def download(code: int) -> Injector:
    def inject(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        monkeypatch.setattr(blobcache.BlobWriter, "write", _failing(code, blobcache.BlobWriter.write))

    return inject


def extraction(code: int) -> Injector:
    def inject(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        # A few files are written first, so the failure lands in the middle of the tree.
        monkeypatch.setattr(filewriter, "write_all", _failing(code, filewriter.write_all, after=3))

    return inject


def metadata_write(code: int) -> Injector:
    def inject(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        monkeypatch.setattr(deploy, "write_metadata", _failing(code, deploy.write_metadata))

    return inject


class _FailingSwap(FsOps):
    def __init__(self, code: int, operation: str) -> None:
        super().__init__()
        self.code, self.operation = code, operation

    def exchange(self, a: Path, b: Path) -> bool:
        if self.operation == "exchange":
            raise OSError(self.code, os.strerror(self.code))
        return super().exchange(a, b)

    def mkdir(self, path: Path) -> None:
        if self.operation == "mkdir":
            raise OSError(self.code, os.strerror(self.code))
        super().mkdir(path)

    def sync_files(self, tree: Path) -> None:
        if self.operation == "sync":
            raise OSError(self.code, os.strerror(self.code))
        super().sync_files(tree)


def swap(code: int, operation: str) -> Injector:
    def inject(monkeypatch: pytest.MonkeyPatch, root: Path) -> FsOps:
        return _FailingSwap(code, operation)

    return inject


def cases() -> list[Case]:
    found = []
    for code in (errno.ENOSPC, errno.EIO):
        name = errno.errorcode[code]
        for stage, injector in (
            ("download", download(code)),
            ("extraction", extraction(code)),
            ("metadata.json write", metadata_write(code)),
            ("swap: flushing the staged tree", swap(code, "sync")),
            ("swap: the exchange", swap(code, "exchange")),
        ):
            found.append(Case("disk", f"{name} during {stage}", OperationalError, 1, reason=name_reason(code),
                              setup=injector))  # fmt: skip
    found.append(Case("disk", "read-only backends directory", OperationalError, 1, reason="Read-only",
                      setup=read_only))  # fmt: skip
    return found


def read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The first write under backends/ (the staging directory) meets a read-only filesystem."""
    monkeypatch.setattr(
        swapmodule.StateDir, "new_staging", _failing(errno.EROFS, swapmodule.StateDir.new_staging)
    )


def name_reason(code: int) -> str:
    return os.strerror(code)
