"""The safe extractor against real files, and the hostile-tar corpus."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from gallery.errors import UnsafeArchiveError
from gallery.place.extract import ExtractLimits, TreeBuilder
from gallery.prepare.compression import decompressing, sniff_compression

from .hostile.archives import REFUSED_MEMBERS
from .hostile.harness import ABSOLUTE_ESCAPE
from .tarbuild import Member, directory, file, gz, hardlink, raw_header, symlink, tar_bytes, zst

LIMITS = ExtractLimits(max_bytes=10 * 1024 * 1024, max_files=1000, max_path_length=4096)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A staging dir and, beside it, an 'outside' dir with a file that must never change."""
    staging = tmp_path / "staging"
    staging.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    return staging, outside


def snapshot(path: Path) -> dict[str, tuple[int, bytes | str]]:
    result: dict[str, tuple[int, bytes | str]] = {}
    for item in sorted(path.rglob("*")):
        info = item.lstat()
        content: bytes | str = (
            os.readlink(item) if item.is_symlink() else item.read_bytes() if item.is_file() else b""
        )
        result[str(item.relative_to(path))] = (info.st_mode, content)
    return result


def apply(staging: Path, *layers: bytes, limits: ExtractLimits = LIMITS) -> TreeBuilder:
    builder = TreeBuilder(staging, limits)
    for number, layer in enumerate(layers):
        builder.apply_layer(io.BytesIO(layer), layer=f"layer{number}")
    builder.finish()
    return builder


def test_regular_tree_with_absolute_symlink_installs(world: tuple[Path, Path]) -> None:
    staging, _ = world
    layer = tar_bytes(
        [
            directory("venv"),
            directory("venv/bin"),
            file("run.sh", b"#!/bin/sh\nexec python3 app.py\n", mode=0o755),
            symlink("venv/bin/python", "/usr/bin/python3"),
            symlink("venv/bin/python3", "python"),
            file("lib/data.bin", b"\x00" * 1000),
            hardlink("lib/data-link.bin", "lib/data.bin"),
            file("suid", b"s", mode=0o4755),
        ]
    )
    builder = apply(staging, layer)
    assert os.readlink(staging / "venv/bin/python") == "/usr/bin/python3"
    assert (staging / "run.sh").read_bytes().startswith(b"#!/bin/sh")
    assert stat.S_IMODE((staging / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((staging / "suid").stat().st_mode) == 0o755  # setuid stripped
    assert (staging / "lib/data-link.bin").stat().st_ino == (staging / "lib/data.bin").stat().st_ino
    records = {r.path: r for r in builder.finish()}
    assert records["run.sh"].sha256 is not None and records["run.sh"].size == len(
        b"#!/bin/sh\nexec python3 app.py\n"
    )
    assert records["venv/bin/python"].target == "/usr/bin/python3"
    assert records["lib/data-link.bin"].type == "hardlink"
    assert records["lib"].type == "dir"


def test_gzip_and_zstd_layers_and_sniffing(world: tuple[Path, Path]) -> None:
    staging, _ = world
    for compress, kind in ((gz, "gzip"), (zst, "zstd"), (lambda b: b, "none")):
        blob = compress(tar_bytes([file(f"{kind}.txt", kind.encode())]))
        assert sniff_compression(blob[:4]) == kind
        builder = TreeBuilder(staging, LIMITS)
        with decompressing(io.BytesIO(blob), kind) as stream:
            builder.apply_layer(stream, layer=kind)
        assert (staging / f"{kind}.txt").read_text() == kind


def test_whiteouts_and_opaque_directories(world: tuple[Path, Path]) -> None:
    staging, _ = world
    lower = tar_bytes([file("a/x"), file("a/y"), file("b/keep"), file("c/old"), file("gone")])
    upper = tar_bytes(
        [
            file("a/.wh.x"),
            file(".wh.gone"),
            file("c/new"),
            file("c/.wh..wh..opq"),  # after c/new of the same layer: c/new stays, c/old goes
            file("b/sub/deep"),
            file(".wh.missing"),  # whiteout of something that never existed: nothing to do
        ]
    )
    builder = apply(staging, lower, upper)
    assert sorted(p.name for p in (staging / "a").iterdir()) == ["y"]
    assert not (staging / "gone").exists()
    assert sorted(p.name for p in (staging / "c").iterdir()) == ["new"]
    assert (staging / "b/keep").exists() and (staging / "b/sub/deep").exists()
    paths = {r.path for r in builder.finish()}
    assert "a/x" not in paths and "c/old" not in paths and "gone" not in paths and "c/new" in paths


def test_later_layer_replaces_file_with_directory_and_back(world: tuple[Path, Path]) -> None:
    staging, _ = world
    apply(
        staging,
        tar_bytes([file("p"), directory("q"), file("q/inner")]),
        tar_bytes([directory("p"), file("q")]),
    )
    assert (staging / "p").is_dir() and (staging / "q").is_file()


# The corpus's refused members (tests/hostile/), here against the extractor alone: the message names
# the layer and the member, and nothing appears next to staging.
HOSTILE = {name: members for name, (_, members) in REFUSED_MEMBERS.items()}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_fail_the_layer_and_touch_nothing_outside(
    world: tuple[Path, Path], case: str
) -> None:
    staging, outside = world
    members = [
        Member(m.name, m.data, m.type, m.mode, m.linkname.replace("OUTSIDE", str(outside)), m.size)
        for m in HOSTILE[case]
    ]
    before = snapshot(outside)
    parent_before = sorted(p.name for p in staging.parent.iterdir())
    with pytest.raises(UnsafeArchiveError) as caught:
        apply(staging, tar_bytes(members))
    assert "layer0" in caught.value.message and "member" in caught.value.message
    assert caught.value.code() == 3
    assert snapshot(outside) == before
    assert sorted(p.name for p in staging.parent.iterdir()) == parent_before
    assert not ABSOLUTE_ESCAPE.exists()


def test_symlink_chain_longer_than_path_max_is_data_and_never_followed(world: tuple[Path, Path]) -> None:
    staging, outside = world
    names = [f"s{i:03d}" + "x" * 200 for i in range(30)]  # 30 links of ~205 chars: > 4096 when resolved
    chain = [symlink(name, names[i + 1]) for i, name in enumerate(names[:-1])]
    chain.append(symlink(names[-1], str(outside)))
    apply(staging, tar_bytes(chain))
    assert all((staging / name).is_symlink() for name in names)
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        apply(staging, tar_bytes([file(f"{names[0]}/victim", b"pwned")]))
    assert (outside / "victim").read_text() == "untouched"
    with pytest.raises(UnsafeArchiveError, match="symlink target longer"):
        apply(staging, tar_bytes([symlink("long", "y" * 5000)]))


def test_refuse_escaping_symlinks_switch(world: tuple[Path, Path]) -> None:
    staging, _ = world
    strict = ExtractLimits(
        LIMITS.max_bytes, LIMITS.max_files, LIMITS.max_path_length, refuse_escaping_symlinks=True
    )
    apply(staging, tar_bytes([directory("bin"), symlink("bin/inner", "../lib/x")]), limits=strict)
    for target in ("/usr/bin/python3", "../../etc", "../.."):
        with pytest.raises(UnsafeArchiveError, match="leaves the backend"):
            apply(staging, tar_bytes([directory("bin"), symlink("bin/out", target)]), limits=strict)


def test_decompression_bomb_stops_early(world: tuple[Path, Path]) -> None:
    staging, _ = world
    small = ExtractLimits(max_bytes=1024 * 1024, max_files=10, max_path_length=100)
    bomb = gz(tar_bytes([file("zeros", b"\x00" * (20 * 1024 * 1024))]))
    assert len(bomb) < 100_000
    with (
        pytest.raises(UnsafeArchiveError, match="max_extract_bytes"),
        decompressing(io.BytesIO(bomb), "gzip") as stream,
    ):
        TreeBuilder(staging, small).apply_layer(stream, layer="bomb")
    assert not (staging / "zeros").exists()
    with pytest.raises(UnsafeArchiveError, match="max_extract_bytes"):
        apply(staging, raw_header("huge", 10**12), limits=small)
    with pytest.raises(UnsafeArchiveError, match="max_files"):
        apply(staging, tar_bytes([file(f"f{i}") for i in range(11)]), limits=small)
    with pytest.raises(UnsafeArchiveError, match="max_path_length"):
        apply(staging, tar_bytes([file("d/" * 60 + "f")]), limits=small)


def test_oversized_extended_header_is_refused_before_buffering(world: tuple[Path, Path]) -> None:
    staging, _ = world
    with pytest.raises(UnsafeArchiveError, match="extended header"):
        apply(staging, raw_header("././@LongLink", 512 * 1024 * 1024, tarfile.GNUTYPE_LONGNAME))
    with pytest.raises(UnsafeArchiveError, match="extended header"):
        apply(staging, raw_header("pax", 512 * 1024 * 1024, tarfile.XHDTYPE))


@pytest.mark.parametrize(
    "blob",
    [
        gz(tar_bytes([file("a", b"x" * 5000)]))[:-100],
        b"definitely not a tar archive" * 40,
        raw_header("cut", 1000),
    ],
)
def test_corrupt_streams(world: tuple[Path, Path], blob: bytes) -> None:
    staging, _ = world
    compression = sniff_compression(blob[:4])
    with pytest.raises(UnsafeArchiveError), decompressing(io.BytesIO(blob), compression) as stream:
        TreeBuilder(staging, LIMITS).apply_layer(stream, layer="bad")


def test_the_gzip_reader_thread_is_gone_after_a_refused_layer(tmp_path: Path) -> None:
    import threading

    before = threading.active_count()
    blob = gz(tar_bytes([file("a", b"x" * 100_000)]))[:-200]  # truncated: refused mid-way
    staging = tmp_path / "s"
    staging.mkdir()
    with (
        pytest.raises(UnsafeArchiveError),
        decompressing(io.BytesIO(blob), "gzip") as stream,
    ):
        TreeBuilder(staging, LIMITS).apply_layer(stream, layer="truncated")
    assert threading.active_count() == before
