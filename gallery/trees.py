"""Walking and removing directory trees that came from outside, without recursion.

A layer may hold a directory 1,100 levels deep (its paths still under ``max_path_length``), or
directories whose mode is 0000. ``os.walk`` and ``shutil.rmtree`` recurse on Python 3.11 (a
``RecursionError`` left staging behind and then broke every command's recovery), and ``rmtree``'s
error hook cannot make an unreadable directory readable again. Both jobs are done here with an
explicit stack, never following a symlink. Where a directory of ours cannot be listed, its owner
lends itself read and search permission (``chmod``, which an owner may always do): for good when
removing, and only for the scan when reading (``scanned_tree`` puts the modes back).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TreeScan", "remove_tree", "scanned_tree"]

Walk = Iterator[tuple[Path, list[os.DirEntry[str]]]]


class TreeScan:
    """One pass over a tree: ``walk()`` yields each directory (parents first) with its entries;
    symlinks are entries, never followed. ``mode(path)`` is a path's permission bits as they were
    before the scan lent the owner read and search on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lent: dict[Path, int] = {}

    def walk(self) -> Walk:
        stack = [self.root]
        while stack:
            directory = stack.pop()
            _open_up(directory, 0o500, self.lent)  # read and search, so its children are reachable
            with os.scandir(directory) as scan:
                entries = list(scan)
            yield directory, entries
            stack.extend(Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False))

    def mode(self, path: Path) -> int:
        return self.lent.get(path, stat.S_IMODE(os.lstat(path).st_mode))


@contextmanager
def scanned_tree(root: Path) -> Iterator[TreeScan]:
    """A ``TreeScan`` of ``root``; directories it made readable get their modes back when the
    block ends (children first, so each stays reachable until it is restored)."""
    scan = TreeScan(root)
    try:
        yield scan
    finally:
        for directory, mode in reversed(list(scan.lent.items())):
            directory.chmod(mode)


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it, read-only and unreadable directories included,
    never following a link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        path.unlink()
        return
    stack: list[tuple[Path, bool]] = [(path, False)]  # (directory, its entries are gone)
    while stack:
        directory, emptied = stack.pop()
        if emptied:
            directory.rmdir()
            continue
        _open_up(directory, 0o700, None)  # listing, and unlinking inside, need all three
        stack.append((directory, True))
        with os.scandir(directory) as scan:
            entries = list(scan)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), False))
            else:
                Path(entry.path).unlink()


def _open_up(directory: Path, need: int, lent: dict[Path, int] | None) -> None:
    """Give the owner the ``need`` bits on ``directory`` (recorded in ``lent`` to give back)."""
    mode = stat.S_IMODE(os.lstat(directory).st_mode)
    if mode & need == need:
        return
    directory.chmod(mode | need)  # lstat said directory: chmod cannot follow a link here
    if lent is not None:
        lent[directory] = mode
