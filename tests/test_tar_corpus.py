"""Tar parity: other projects' test archives through our extractor, compared with GNU tar.

Corpora (vendored under tests/assets/tar-corpus, see SOURCE.md there):
- Go's ``archive/tar/testdata`` (BSD-3-Clause, The Go Authors), as copied in
  github.com/vbatts/tar-split at ced2b07;
- libarchive's ``libarchive/test/*.tar.uu`` and ``*.tar.Z.uu`` (BSD-2-Clause), at 4fe6c58,
  uudecoded and uncompressed.

Each archive is applied as one layer. It must either produce exactly the tree GNU tar extracts
(names, types, permission bits, sizes, contents, symlink targets; setuid/setgid/sticky are
stripped by design) or be refused with one line naming the layer and the member (or the header
after the last good member) and the reason. Nothing else may escape the extractor. Where the
readers disagree among themselves or with Python's tarfile, ``EXPECTED`` pins our answer.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gallery.errors import UnsafeArchiveError
from gallery.place.extract import ExtractLimits, TreeBuilder

from .fsfaults import permissions_tree
from .tarbuild import file, tar_bytes

CORPUS = Path(__file__).parent / "assets" / "tar-corpus"
ARCHIVES = sorted(path for path in CORPUS.glob("*/*.tar*"))
LIMITS = ExtractLimits(max_bytes=64 * 1024 * 1024, max_files=10_000, max_path_length=4096)

# archive -> ("same", None) | ("refused", a phrase the one-line reason must contain)
EXPECTED: dict[str, tuple[str, str | None]] = {
    # repeated GNU long-name/long-link headers: the last wins, as in GNU tar, Go and libarchive
    "go/gnu-multi-hdrs.tar": ("same", None),
    "libarchive/test_read_format_gtar_redundant_L.tar": ("same", None),
    # repeated pax headers: readers disagree on merging them, so refused
    "go/pax-multi-hdrs.tar": ("refused", "repeated pax extended headers"),
    # malformed pax records: GNU tar and Go refuse them; tarfile read them under another name
    "go/pax-bad-hdr-file.tar": ("refused", "malformed pax record"),
    "go/pax-nul-xattrs.tar": ("refused", "malformed pax record"),
    "libarchive/test_read_pax_empty_val_no_nl.tar": ("refused", "malformed pax record"),
    "libarchive/test_read_format_tar_invalid_pax_size.tar": ("refused", "malformed pax record"),
    # an old GNU header has no name prefix: tarfile read one, GNU tar and Go do not
    "go/invalid-go17.tar": ("same", None),
    # tarfile raised ValueError on this sparse map
    "libarchive/test_read_format_gtar_sparse_1_17_posix10_modified.tar": ("refused", "malformed header"),
    # header types are named
    "go/gnu-incremental.tar": ("refused", "GNU dumpdir"),
    "libarchive/test_compat_solaris_tar_acl.tar": ("refused", "Solaris ACL header"),
    "libarchive/test_read_format_tar_empty_with_gnulabel.tar": ("refused", "GNU volume label"),
    "go/hdr-only.tar": ("refused", "FIFO is not allowed"),
    "libarchive/test_read_format_tar_pax_g_large.tar": ("refused", "extended header of 4294967296 bytes"),
}


def _load(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return bz2.decompress(data) if path.suffix == ".bz2" else data


def _gnu_tar(data: bytes, into: Path) -> bool:
    tar = shutil.which("tar")
    if tar is None or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True).stdout:
        if os.environ.get("CI"):
            pytest.fail("GNU tar is needed for the parity check (Debian: tar)")
        pytest.skip("GNU tar not available")
    done = subprocess.run(
        [tar, "-x", "-f", "-", "-C", str(into), "--no-same-owner", "-p"], input=data, capture_output=True
    )
    return done.returncode == 0


def _ours(data: bytes, into: Path) -> UnsafeArchiveError | None:
    builder = TreeBuilder(into, LIMITS)
    try:
        builder.apply_layer(io.BytesIO(data), layer="sha256:corpus")
        builder.finish()
    except UnsafeArchiveError as exc:
        return exc
    return None


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_each_archive_extracts_like_gnu_tar_or_is_refused_in_one_line(archive: Path, tmp_path: Path) -> None:
    data = _load(archive)
    gnu, ours = tmp_path / "gnu", tmp_path / "ours"
    gnu.mkdir()
    ours.mkdir()
    gnu_ok = _gnu_tar(data, gnu)
    refusal = _ours(data, ours)  # any exception but UnsafeArchiveError fails the test here
    key = f"{archive.parent.name}/{archive.name}"
    if refusal is None:
        assert gnu_ok, f"{key}: GNU tar fails on it, but we extracted it"
        assert permissions_tree(ours) == permissions_tree(gnu), f"{key}: our tree differs from GNU tar's"
    else:
        message = refusal.message
        assert "\n" not in message and message.startswith("layer sha256:corpus: "), message
        assert "member " in message or "header" in message, message
    expected = EXPECTED.get(key)
    if expected is not None:
        outcome, phrase = expected
        assert (refusal is None) == (outcome == "same"), f"{key}: expected {outcome}, got {refusal}"
        if phrase is not None:
            assert refusal is not None and phrase in refusal.message, refusal


def test_the_corpus_is_all_there() -> None:
    names = {f"{path.parent.name}/{path.name}" for path in ARCHIVES}
    assert len([n for n in names if n.startswith("go/")]) == 43
    assert len([n for n in names if n.startswith("libarchive/")]) == 52
    assert set(EXPECTED) <= names


def test_a_broken_header_after_a_good_member_is_an_error_not_the_end(tmp_path: Path) -> None:
    """tarfile ends the archive silently at a bad header past the first; GNU tar fails; so do we."""
    good = tar_bytes([file("a.txt", b"first"), file("b.txt", b"second")])
    second_header = 1024  # a.txt: one header block and one data block
    broken = good[:second_header] + b"\xff" * 512 + good[second_header + 512 :]
    refusal = _ours(broken, tmp_path)
    assert refusal is not None and "the header after member 'a.txt'" in refusal.message, refusal
    assert "bad checksum" in refusal.message or "invalid header" in refusal.message, refusal
