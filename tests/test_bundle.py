"""Air-gapped bundles: export from a registry, stop it, install offline with the same policy."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app

from .registry_server import LAYER_GZIP, digest_of, push_signature, running_registry
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes
from .test_install import RUN_SH

POLICY = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}


def layer(text: str) -> bytes:
    return gz(tar_bytes([RUN_SH, file("VERSION", text.encode())]))


def write_config(root: Path, trusted_root: Path, index: str, **fields: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gallery.yaml"
    path.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "require_integrity": True, "trusted_root": str(trusted_root), **fields,
        "galleries": [{"name": "main", "url": index, "verification": POLICY}],
    }))  # fmt: skip
    return path


def gallery(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bundle (directory and tar) exported from a registry that is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("export")
    sigstore = SigstoreInstance()
    trusted_root = sigstore.write_trusted_root(tmp / "trusted_root.json")
    with running_registry(tmp / "registry") as registry:
        entries = []
        for name in ("cpu-echo", "cuda-echo"):
            digest, _ = registry.push_image(f"b/{name}", "v1", [(layer(name), LAYER_GZIP)])
            push_signature(registry, f"b/{name}", digest, sigstore.sign_image(digest))
            entries.append({"name": name, "uri": f"{registry.host}/b/{name}:v1", "version": "1"})
        entries.append({"name": "echo", "capabilities": {"default": "cpu-echo", "nvidia": "cuda-echo"}})
        (tmp / "index.yaml").write_text(yaml.safe_dump(entries))
        config = write_config(tmp / "online", trusted_root, str(tmp / "index.yaml"),
                              insecure_registries=[registry.host])  # fmt: skip
        for output in ("bundle", "bundle.tar"):
            result = gallery(config, "export", "echo", "cuda-echo", "-o", str(tmp / output))
            assert result.exit_code == 0, result.stderr
        assert gallery(config, "export", "echo", "-o", str(tmp / "bundle")).exit_code == 1, "never overwrites"
    return {"dir": tmp / "bundle", "tar": tmp / "bundle.tar", "root": trusted_root}


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_install_from_a_bundle_offline(tmp_path: Path, exported: dict[str, Path], kind: str) -> None:
    # The offline machine's gallery URL is unreachable: only the bundle and the policy are used.
    config = write_config(tmp_path, exported["root"], "http://127.0.0.1:9/index.yaml")
    result = gallery(config, "install", "--from", str(exported[kind]), "echo", "cuda-echo", "--json")
    assert result.exit_code == 0, result.stderr
    statuses = [(r["name"], r["status"], r["verified"]) for r in json.loads(result.stdout)["results"]]
    assert statuses == [("cpu-echo", "installed", True), ("cuda-echo", "installed", True)]
    assert (tmp_path / "backends" / "cpu-echo" / "VERSION").read_text() == "cpu-echo"
    assert (
        json.loads((tmp_path / "backends" / "echo" / "metadata.json").read_text())["meta_backend_for"]
        == "cpu-echo"
    )


def test_a_tampered_bundle_is_refused(tmp_path: Path, exported: dict[str, Path]) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported["dir"], bundle)
    blob = bundle / "layouts" / "cuda-echo" / "blobs" / "sha256" / digest_of(layer("cuda-echo"))[7:]
    blob.write_bytes(blob.read_bytes()[:-8] + bytes(8))
    config = write_config(tmp_path / "m", exported["root"], "http://127.0.0.1:9/index.yaml")
    result = gallery(config, "install", "--from", str(bundle), "cuda-echo")
    assert result.exit_code == 3 and not (tmp_path / "m" / "backends" / "cuda-echo").exists()

    unsigned = tmp_path / "unsigned"
    shutil.copytree(exported["dir"], unsigned)
    index = unsigned / "layouts" / "cuda-echo" / "index.json"
    document = json.loads(index.read_text())
    document["manifests"] = [m for m in document["manifests"] if "artifactType" not in m]
    index.write_text(json.dumps(document))
    assert gallery(config, "install", "--from", str(unsigned), "cuda-echo").exit_code == 3


def test_hostile_bundles_are_refused(tmp_path: Path, exported: dict[str, Path]) -> None:
    config = write_config(tmp_path, exported["root"], "http://127.0.0.1:9/index.yaml")
    evil = tmp_path / "evil.tar"
    listing = (exported["dir"] / "index.yaml").read_bytes()
    with tarfile.open(evil, "w") as archive:
        info = tarfile.TarInfo("index.yaml")
        info.size = len(listing)
        archive.addfile(info, io.BytesIO(listing))
        info = tarfile.TarInfo("../escaped")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    assert gallery(config, "install", "--from", str(evil), "echo").exit_code == 3
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "cache" / "escaped").exists()

    # Without an index.yaml it is no bundle: refused before anything is unpacked.
    bundles = tmp_path / "cache" / "bundles"
    before = sorted(bundles.rglob("*")) if bundles.exists() else []
    listless = tmp_path / "listless.tar"
    with tarfile.open(listless, "w") as archive:
        info = tarfile.TarInfo("../escaped")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    assert gallery(config, "install", "--from", str(listless), "echo").exit_code == 2
    assert not (tmp_path / "escaped").exists()
    assert (sorted(bundles.rglob("*")) if bundles.exists() else []) == before

    escaping = tmp_path / "escaping"
    shutil.copytree(exported["dir"], escaping)
    (escaping / "index.yaml").write_text(
        yaml.safe_dump([{"name": "x", "uri": "ocifile://../../etc", "gallery": "main"}])
    )
    assert gallery(config, "install", "--from", str(escaping), "x").exit_code == 3

    foreign = write_config(tmp_path / "f", exported["root"], "http://127.0.0.1:9/index.yaml")
    text = foreign.read_text().replace("name: main", "name: other")
    foreign.write_text(text)
    result = gallery(foreign, "install", "--from", str(exported["dir"]), "cuda-echo")
    assert result.exit_code == 2 and "gallery 'main'" in result.stderr


def test_a_gallery_can_point_at_an_unpacked_bundle(tmp_path: Path, exported: dict[str, Path]) -> None:
    config = write_config(tmp_path, exported["root"], str(exported["dir"] / "index.yaml"))
    result = gallery(config, "install", "echo", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["verified"] for r in json.loads(result.stdout)["results"]] == [True]


def test_cache_prune_drops_unpacked_bundles_once_they_are_old(
    tmp_path: Path, exported: dict[str, Path]
) -> None:
    import os

    config = write_config(tmp_path, exported["root"], "http://127.0.0.1:9/index.yaml")
    assert gallery(config, "install", "--from", str(exported["tar"]), "cuda-echo").exit_code == 0
    unpacked = tmp_path / "cache" / "bundles"
    (copy,) = list(unpacked.iterdir())
    fresh = json.loads(gallery(config, "cache", "prune", "--json").stdout)
    assert fresh["bundles_removed"] == 0 and copy.exists(), "a recent one may still be in use"
    os.utime(copy, (0, 0))
    old = json.loads(gallery(config, "cache", "prune", "--json").stdout)
    assert old["bundles_removed"] == 1 and not copy.exists()
    assert (tmp_path / "backends" / "cuda-echo" / "run.sh").exists()


def test_fail_fast_from_a_bundle_installs_nothing_after_a_refused_name(
    tmp_path: Path, exported: dict[str, Path]
) -> None:
    """cuda-echo is fine, the next name is not in the bundle: with --fail-fast the batch stops
    at that refusal, before the bundle is even unpacked; without, cuda-echo installs."""
    config = write_config(tmp_path, exported["root"], "http://127.0.0.1:9/index.yaml")
    result = gallery(config, "install", "--fail-fast", "--from", str(exported["tar"]), "cuda-echo", "absent")
    assert result.exit_code == 2, result.stderr
    assert not (tmp_path / "backends" / "cuda-echo").exists()
    assert not (tmp_path / "cache" / "bundles").exists() or not any(
        (tmp_path / "cache" / "bundles").iterdir()
    )
    result = gallery(config, "install", "--from", str(exported["tar"]), "cuda-echo", "absent")
    assert result.exit_code == 2 and (tmp_path / "backends" / "cuda-echo").exists()


def test_fail_fast_from_a_bundle_stops_after_a_failed_install(
    tmp_path: Path, exported: dict[str, Path]
) -> None:
    """cuda-echo passes planning but its blob was tampered with: with --fail-fast the next name
    is not installed; without, it is."""
    bundle = tmp_path / "bundle"
    shutil.copytree(exported["dir"], bundle)
    blob = bundle / "layouts" / "cuda-echo" / "blobs" / "sha256" / digest_of(layer("cuda-echo"))[7:]
    blob.write_bytes(blob.read_bytes()[:-8] + bytes(8))
    config = write_config(tmp_path / "m", exported["root"], "http://127.0.0.1:9/index.yaml")
    result = gallery(config, "install", "--fail-fast", "--from", str(bundle), "cuda-echo", "echo")
    assert result.exit_code == 3 and not (tmp_path / "m" / "backends" / "cpu-echo").exists()
    result = gallery(config, "install", "--from", str(bundle), "cuda-echo", "echo")
    assert result.exit_code == 3 and (tmp_path / "m" / "backends" / "cpu-echo" / "VERSION").exists()


def test_fail_fast_from_a_bundle_goes_on_while_names_succeed_and_stops_at_the_first_refusal(
    tmp_path: Path, exported: dict[str, Path]
) -> None:
    config = write_config(tmp_path, exported["root"], "http://127.0.0.1:9/index.yaml")
    result = gallery(
        config, "install", "--fail-fast", "--from", str(exported["tar"]), "echo", "cuda-echo", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert [r["status"] for r in json.loads(result.stdout)["results"]] == ["installed", "installed"]
    result = gallery(config, "install", "--fail-fast", "--from", str(exported["tar"]), "absent", "also-absent",
                     "--json")  # fmt: skip
    assert result.exit_code == 2
    assert [r["requested"] for r in json.loads(result.stdout)["results"]] == ["absent"], (
        "stopped at the first"
    )
