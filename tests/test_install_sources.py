"""Tarballs and OCI layouts install through the same checks as registry images; the demo works offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.place.fsops import FsOps
from gallery.place.metadata import read_metadata
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .file_server import serving
from .registry_server import LAYER_GZIP, Registry
from .tarbuild import file, gz, tar_bytes, zst

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import demo_layer, write_layout

RUN_SH = file("run.sh", b"#!/bin/sh\necho tarball\n", mode=0o755)


def installer_for(tmp_path: Path, entries: list[dict[str, Any]], **fields: Any) -> Installer:
    index = tmp_path / "index" / "index.yaml"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(yaml.safe_dump(entries))
    data = {
        "format_version": 1,
        "backends_path": "./backends",
        "cache_path": "./cache",
        "capability": "default",
        "galleries": [{"name": "g", "url": str(index)}],
        **fields,
    }
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "gallery.yaml")
    return Installer(
        config,
        client=httpx.Client(trust_env=False),
        verifier=SigstoreVerifier(),
        detector=lambda: HostFacts("linux", "amd64"),
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compress", [gz, zst, lambda data: data], ids=["tar.gz", "tar.zst", "tar"])
def test_local_tarball_with_sha256(tmp_path: Path, compress: Any) -> None:
    blob = compress(tar_bytes([RUN_SH, file("lib/x.so", b"x")]))
    path = tmp_path / "backend.tar"
    path.write_bytes(blob)
    installer = installer_for(tmp_path, [{"name": "t", "uri": f"file://{path}", "sha256": sha(blob)}])
    result = installer.install_one("t")
    assert result.error is None and result.digest == f"sha256:{sha(blob)}"
    assert (tmp_path / "backends/t/lib/x.so").read_bytes() == b"x"
    metadata = read_metadata(tmp_path / "backends/t")
    assert metadata is not None and metadata.verification is not None
    assert metadata.verification.verified is False and "sha256" in (metadata.verification.reason or "")


def test_an_image_without_a_policy_records_only_that_it_is_the_pinned_digest(
    tmp_path: Path, registry: Registry
) -> None:
    digest, _ = registry.push_image("sources/pinned", "v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    uri = f"{registry.host}/sources/pinned@{digest}"
    installer = installer_for(tmp_path, [{"name": "i", "uri": uri}], insecure_registries=[registry.host])
    assert installer.install_one("i").error is None
    evidence = read_metadata(tmp_path / "backends/i").verification  # type: ignore[union-attr]
    assert evidence is not None and evidence.verified is False and evidence.proven == ("digest",)
    assert evidence.reason == "the image is the pinned digest; no signature (the gallery has no policy)"


def test_tarball_sha256_mismatch_is_exit_3_and_nothing_is_kept(tmp_path: Path) -> None:
    blob = gz(tar_bytes([RUN_SH]))
    path = tmp_path / "backend.tar.gz"
    path.write_bytes(blob)
    wrong = "0" * 64
    installer = installer_for(tmp_path, [{"name": "t", "uri": f"file://{path}#sha256={wrong}"}])
    result = installer.install_one("t")
    assert result.exit_code == 3 and "is not the expected" in result.error.message  # type: ignore[union-attr]
    assert not (tmp_path / "backends" / "t").exists()
    assert not any((tmp_path / "cache" / "blobs" / "sha256").glob("*"))


@pytest.fixture
def tarball_server() -> Iterator[tuple[str, bytes]]:
    blob = gz(tar_bytes([RUN_SH]))
    with serving() as server:
        server.publish("/backend.tar.gz", blob)
        server.redirects["/moved.tar.gz"] = "/backend.tar.gz"
        yield server.url, blob


def test_http_tarball_without_sha256_installs_with_a_warning(
    tmp_path: Path, tarball_server: tuple[str, bytes]
) -> None:
    url, blob = tarball_server
    installer = installer_for(tmp_path, [{"name": "t", "uri": f"{url}/moved.tar.gz"}])
    result = installer.install_one("t")
    assert result.error is None and result.digest == f"sha256:{sha(blob)}" and not result.verified
    assert any("no sha256" in warning for warning in result.warnings)
    strict = installer_for(tmp_path, [{"name": "u", "uri": f"{url}/backend.tar.gz"}], require_integrity=True)
    assert strict.install_one("u").exit_code == 3 and not (tmp_path / "backends" / "u").exists()


def test_oci_layout_relative_to_the_index_and_tampered_layout(tmp_path: Path) -> None:
    layer = gz(tar_bytes([RUN_SH, file("from-layout", b"yes")]))
    digest = write_layout(
        tmp_path / "index" / "layouts" / "img", [(layer, "application/vnd.oci.image.layer.v1.tar+gzip")]
    )
    installer = installer_for(tmp_path, [{"name": "l", "uri": "ocifile://layouts/img"}])
    result = installer.install_one("l")
    assert result.error is None and result.digest == digest
    assert (tmp_path / "backends/l/from-layout").read_text() == "yes"
    tampered = tmp_path / "index" / "layouts" / "bad"
    shutil.copytree(tmp_path / "index" / "layouts" / "img", tampered)
    blob_path = tampered / "blobs" / "sha256" / sha(layer)
    blob_path.write_bytes(blob_path.read_bytes()[:-8] + bytes(8))
    # A warm cache would (rightly) serve the verified blob by digest, and the file store's record
    # of the layer would rebuild it without any blob: both go, so the tampered blob is read.
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(tmp_path / "backends" / ".gallery" / "store" / "layers")
    bad = installer_for(tmp_path, [{"name": "b", "uri": "ocifile://layouts/bad"}])
    failed = bad.install_one("b")
    assert failed.exit_code == 3 and sha(layer) in failed.error.message  # type: ignore[union-attr]
    assert not (tmp_path / "backends" / "b").exists()


def test_the_demo_gallery_installs_offline_verified(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(REPO / "galleries" / "demo", demo, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((demo / "gallery.yaml").read_text())
    config.update(backends_path="./backends", cache_path="./cache")
    (demo / "gallery.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(demo / "gallery.yaml")
    assert loaded.require_integrity and loaded.galleries[0].verification is not None
    installer = Installer(
        loaded,
        client=httpx.Client(trust_env=False),
        verifier=SigstoreVerifier(),
        detector=lambda: HostFacts("linux", "amd64"),
    )
    result = installer.install_one("demo-echo")
    assert result.error is None and result.name == "cpu-demo-echo" and result.verified
    assert result.signer is not None and "example/gallery-demo" in result.signer
    assert (demo / "backends" / "cpu-demo-echo" / "run.sh").read_bytes().startswith(b"#!/bin/sh")
    # The demo images are logged as Rekor v2 logs them: the signing time is the demo TSA's.
    evidence = read_metadata(demo / "backends" / "cpu-demo-echo").verification
    assert evidence is not None and evidence.time_source == "timestamp-authority"
    assert evidence.integrated_time is None and evidence.timestamp_authority
    # The committed images are exactly what make_layouts.py builds (the signatures differ per run).
    rebuilt = tmp_path / "rebuilt"
    write_layout(rebuilt, [(demo_layer("cpu"), "application/vnd.oci.image.layer.v1.tar+gzip")])
    committed = REPO / "galleries/demo/layouts/demo-echo-cpu/blobs/sha256"
    assert {p.name for p in (rebuilt / "blobs/sha256").iterdir()} <= {p.name for p in committed.iterdir()}


def test_the_demo_policy_refuses_a_signer_it_does_not_name(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(REPO / "galleries" / "demo", demo, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((demo / "gallery.yaml").read_text())
    config.update(backends_path="./backends", cache_path="./cache")
    config["galleries"][0]["verification"]["identity_regex"] = "^https://github\\.com/someone-else/.*$"
    (demo / "gallery.yaml").write_text(yaml.safe_dump(config))
    installer = Installer(
        load_config(demo / "gallery.yaml"),
        client=httpx.Client(trust_env=False),
        verifier=SigstoreVerifier(),
        detector=lambda: HostFacts("linux", "amd64"),
    )
    result = installer.install_one("demo-echo")
    assert result.exit_code == 3 and "policy expects" in result.error.message  # type: ignore[union-attr]
    assert not (demo / "backends" / "cpu-demo-echo").exists()


def test_oci_layout_tar_is_read_in_place(tmp_path: Path) -> None:
    layer = gz(tar_bytes([RUN_SH, file("from-tar", b"yes")]))
    layout = tmp_path / "layout-dir"
    digest = write_layout(layout, [(layer, "application/vnd.oci.image.layer.v1.tar+gzip")])
    archive = tmp_path / "index" / "image.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as handle:
        handle.add(layout, arcname=".")
        handle.add(tmp_path / "index", arcname="not-a-layout-member", recursive=False)
    installer = installer_for(tmp_path, [{"name": "l", "uri": "ocifile://image.tar"}])
    result = installer.install_one("l")
    assert result.error is None and result.digest == digest
    assert (tmp_path / "backends/l/from-tar").read_text() == "yes"
    missing = installer_for(tmp_path, [{"name": "m", "uri": "ocifile://absent.tar"}]).install_one("m")
    assert missing.exit_code == 1 and "absent.tar" in missing.error.message  # type: ignore[union-attr]


def test_a_damaged_cached_blob_is_evicted_and_fetched_again(tmp_path: Path) -> None:
    layer = gz(tar_bytes([RUN_SH, file("data", b"good" * 1000)]))
    write_layout(
        tmp_path / "index" / "layouts" / "img", [(layer, "application/vnd.oci.image.layer.v1.tar+gzip")]
    )
    first = installer_for(
        tmp_path,
        [{"name": "a", "uri": "ocifile://layouts/img"}, {"name": "b", "uri": "ocifile://layouts/img"}],
    )
    assert first.install_one("a").error is None
    cached = tmp_path / "cache" / "blobs" / "sha256" / sha(layer)
    cached.write_bytes(cached.read_bytes()[:-16] + bytes(16))  # bit rot in the cache
    # without the store's record of the layer (which needs no blob), the blob is read
    shutil.rmtree(tmp_path / "backends" / ".gallery" / "store" / "layers")
    result = first.install_one("b")
    assert result.error is None, result.error
    assert result.bytes_fetched == len(layer)  # fetched again from the source
    assert cached.read_bytes() == layer
    assert (tmp_path / "backends/b/data").read_bytes() == b"good" * 1000


def docker_save_tar(path: Path, manifest: object, members: dict[str, bytes]) -> Path:
    """A docker-save tar of the format before Docker 25 (manifest.json, no oci-layout), by hand."""
    import io
    import json as _json

    with tarfile.open(path, "w") as archive:
        for name, data in {"manifest.json": _json.dumps(manifest).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_docker_save_tar_installs_and_its_malformed_variants_are_refused(tmp_path: Path) -> None:
    layer = tar_bytes([RUN_SH])
    members = {"c0ffee.json": b'{"architecture":"amd64","os":"linux"}', "abc/layer.tar": layer}
    good = docker_save_tar(
        tmp_path / "good.tar", [{"Config": "c0ffee.json", "Layers": ["abc/layer.tar"]}], members
    )
    two = docker_save_tar(
        tmp_path / "two.tar", [{"Config": "c0ffee.json", "Layers": ["abc/layer.tar"]}] * 2, members
    )
    escaping = docker_save_tar(tmp_path / "escaping.tar", [{"Config": "c0ffee.json", "Layers": ["../../etc/passwd"]}],
                               members)  # fmt: skip
    neither = tmp_path / "neither.tar"
    with tarfile.open(neither, "w"):
        pass
    entries = [{"name": n, "uri": f"ocifile://{p}"} for n, p in
               (("good", good), ("two", two), ("escaping", escaping), ("neither", neither))]  # fmt: skip
    installer = installer_for(tmp_path, entries)
    result = installer.install_one("good")
    assert result.error is None, result.error
    assert (tmp_path / "backends/good/run.sh").read_bytes() == RUN_SH.data
    metadata = read_metadata(tmp_path / "backends/good")
    assert metadata is not None and metadata.layers[0].digest == f"sha256:{sha(layer)}"
    assert "exactly one image (manifest.json has 2)" in str(installer.install_one("two").error)
    assert "../../etc/passwd" in str(installer.install_one("escaping").error)
    assert "nor a docker-save tar" in str(installer.install_one("neither").error)
    assert not (tmp_path / "backends/escaping").exists()


def test_a_local_directory_uri_is_copied_through_the_extractors_rules(tmp_path: Path) -> None:
    from .fsfaults import as_installed, permissions_tree

    source = tmp_path / "sideload"
    (source / "lib/deep").mkdir(parents=True)
    (source / "run.sh").write_bytes(RUN_SH.data)
    (source / "run.sh").chmod(0o755)
    (source / "lib/libx.so.1").write_bytes(b"\x7fELF")
    (source / "lib/libx.so").symlink_to("libx.so.1")
    os.link(source / "lib/libx.so.1", source / "lib/deep/hard.so")
    (source / "lib/deep/private").write_text("p")
    (source / "lib/deep/private").chmod(0o600)
    installer = installer_for(
        tmp_path, [{"name": "d", "uri": str(source)}, {"name": "u", "uri": f"file://{source}/"}]
    )
    result = installer.install_one("d")
    assert result.error is None, result.error
    assert result.verified is False and any("sha256" in w for w in result.warnings)
    installed = {k: v for k, v in permissions_tree(tmp_path / "backends/d").items() if k != "metadata.json"}
    assert installed == as_installed(permissions_tree(source))
    assert installer.install_one("u").error is None
    # What the extractor refuses from a tar it refuses from a directory: a link out of the tree.
    (source / "escape").symlink_to("/etc/passwd")
    strict = installer_for(
        tmp_path / "strict", [{"name": "d", "uri": str(source)}], refuse_escaping_symlinks=True
    )
    assert "escape" in str(strict.install_one("d").error)
    os.mkfifo(source / "pipe")
    refused = installer_for(tmp_path / "fifo", [{"name": "d", "uri": str(source)}]).install_one("d")
    assert refused.error is not None and "pipe is not a file, directory or symlink" in str(refused.error)


def test_a_local_directory_is_refused_in_strict_mode_and_from_a_remote_index(tmp_path: Path) -> None:
    from gallery.catalog.index import parse_index
    from gallery.config.safe_yaml import YamlLimits

    (tmp_path / "dir").mkdir()
    strict = installer_for(tmp_path, [{"name": "d", "uri": str(tmp_path / "dir")}], require_integrity=True)
    assert "strict" in str(strict.install_one("d").error).lower()
    assert not (tmp_path / "backends/d").exists()
    remote = parse_index(
        yaml.safe_dump([{"name": "d", "uri": "/srv/dir"}]).encode(), limits=YamlLimits(), local=False
    )
    assert remote.entries == () and "local" in remote.problems[0].reason


class NoLinks(FsOps):
    """A filesystem that refuses symlinks and hard links, as CIFS/SMB mounts do (EPERM)."""

    def symlink(self, target: str, path: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    def hardlink(self, source: Path, path: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))


def test_link_fallback_copies_links_on_a_filesystem_without_links(tmp_path: Path) -> None:
    from .tarbuild import hardlink, symlink

    hard = hardlink("lib/libx-hard.so", "lib/libx.so.1")
    # The symlink comes before its target, and through another symlink: resolved at the end.
    blob = tar_bytes([RUN_SH, symlink("lib/libx.so", "libx.so.2"), symlink("lib/libx.so.2", "libx.so.1"),
                      file("lib/libx.so.1", b"\x7fELF", mode=0o755), hard])  # fmt: skip
    path = tmp_path / "links.tar"
    path.write_bytes(blob)
    entries = [{"name": "l", "uri": f"file://{path}", "sha256": sha(blob)}]

    def installer(**fields: Any) -> Installer:
        made = installer_for(tmp_path, entries, **fields)
        return Installer(made.config, client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                         detector=lambda: HostFacts("linux", "amd64"), fs=NoLinks())  # fmt: skip

    refused = installer().install_one("l")
    assert refused.error is not None and "refuses symlinks" in str(refused.error)
    assert "link_fallback: copy" in (refused.error.hint or "")
    assert not (tmp_path / "backends/l").exists()
    result = installer(link_fallback="copy").install_one("l")
    assert result.error is None, result.error
    root = tmp_path / "backends/l"
    for copied in ("lib/libx.so", "lib/libx.so.2", "lib/libx-hard.so"):
        assert not (root / copied).is_symlink() and (root / copied).read_bytes() == b"\x7fELF"
        assert (root / copied).stat().st_mode & 0o777 == 0o555 and (root / copied).stat().st_nlink == 1
    metadata = read_metadata(root)
    assert metadata is not None and metadata.copied_links == (
        "lib/libx-hard.so",
        "lib/libx.so",
        "lib/libx.so.2",
    )
    assert all(f["type"] == "file" for f in metadata.files if f["path"].startswith("lib/libx"))
    assert installer(link_fallback="copy").fsck().report.exit_code == 0  # the copies are what was recorded


@pytest.mark.parametrize(("target", "why"), [("/etc/passwd", "leaves the backend"), ("../../x", "leaves the backend"),
                                             ("lib", "not a regular file"), ("missing", "not a regular file")])  # fmt: skip
def test_link_fallback_refuses_links_it_cannot_copy(tmp_path: Path, target: str, why: str) -> None:
    from .tarbuild import directory, symlink

    blob = tar_bytes([RUN_SH, directory("lib"), symlink("link", target)])
    path = tmp_path / "bad.tar"
    path.write_bytes(blob)
    made = installer_for(
        tmp_path, [{"name": "b", "uri": f"file://{path}", "sha256": sha(blob)}], link_fallback="copy"
    )
    refused = Installer(made.config, client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                        detector=lambda: HostFacts("linux", "amd64"), fs=NoLinks()).install_one("b")  # fmt: skip
    assert refused.error is not None and why in str(refused.error), refused.error
    assert not (tmp_path / "backends/b").exists()
