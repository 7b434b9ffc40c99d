"""Fuzz the safe extractor with atheris (not part of the test suite; see docs/security.md).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/extract_fuzz.py -max_total_time=600 -max_len=65536 fuzz/corpus

Each input is applied as an uncompressed tar layer (and, when it starts like one, as a gzip or
zstd layer) to a fresh private staging directory. The only acceptable outcomes are success or our
own typed errors (UnsafeArchiveError for bad archives, OperationalError for disk problems); any
other exception is a crash. After each input, nothing may exist outside the staging directory's
parent that was not there before.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from gallery.errors import OperationalError, UnsafeArchiveError
    from gallery.place.extract import ExtractLimits, TreeBuilder
    from gallery.prepare.compression import decompressing, sniff_compression

LIMITS = ExtractLimits(max_bytes=8 * 1024 * 1024, max_files=2000, max_path_length=1024)
WORK = Path(tempfile.mkdtemp(prefix="gallery-fuzz-"))
OUTSIDE = WORK / "outside"
OUTSIDE.mkdir()
(OUTSIDE / "sentinel").write_text("must stay")


def one(data: bytes) -> None:
    staging = WORK / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    try:
        with decompressing(io.BytesIO(data), sniff_compression(data[:4])) as stream:
            builder = TreeBuilder(staging, LIMITS)
            builder.apply_layer(stream, layer="fuzz")
            builder.finish()
    except (UnsafeArchiveError, OperationalError):
        pass
    around = sorted(p.name for p in WORK.iterdir()), sorted(p.name for p in OUTSIDE.iterdir())
    if around != (["outside", "staging"], ["sentinel"]):
        raise AssertionError(f"something was written outside staging: {around}")


def seed(corpus: Path) -> None:
    """Start an empty corpus from a few archives made by the test helpers (no binaries in git)."""
    if corpus.exists() and any(corpus.iterdir()):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tarbuild import directory, file, gz, hardlink, symlink, tar_bytes, zst

    corpus.mkdir(parents=True, exist_ok=True)
    plain = tar_bytes(
        [file("run.sh", b"#!/bin/sh\n", mode=0o755), directory("lib"), file("lib/a", b"x" * 100)]
    )
    seeds = {
        "plain": plain,
        "gzip": gz(plain),
        "zstd": zst(plain),
        "links": tar_bytes([symlink("l", "/etc"), file("l/x", b"p"), hardlink("h", "run.sh")]),
        "whiteouts": tar_bytes([directory("d"), file("d/.wh.x"), file("d/.wh..wh..opq")]),
        "traversal": tar_bytes([file("../x", b"e")]),
    }
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)


def main() -> None:
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if dirs:
        seed(Path(dirs[0]))
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
