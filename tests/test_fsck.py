"""``gallery fsck [--repair]`` and ``gallery cache prune`` on real directories (OCI layouts, no network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.place.swap import StateDir

from .conftest import REPO
from .fsfaults import tree
from .tarbuild import file, gz, symlink, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "gallery.yaml"
        self.config.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
            "galleries": [{"name": "g", "url": "./index.yaml"}],
        }))  # fmt: skip
        self.entries: list[dict[str, Any]] = []

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    def offer(self, name: str, version: str, *, meta: str | None = None) -> None:
        members = [file("run.sh", b"#!/bin/sh\n", mode=0o755), file("lib/a.so", version.encode() * 100),
                   file("VERSION", version.encode()), symlink("lib/current", "a.so")]  # fmt: skip
        write_layout(self.root / "layouts" / f"{name}-{version}", [(gz(tar_bytes(members)), LAYER)])
        self.entries = [e for e in self.entries if e["name"] not in (name, meta)]
        self.entries.append({"name": name, "uri": f"ocifile://layouts/{name}-{version}"})
        if meta:
            self.entries.append({"name": meta, "capabilities": {"default": name}})
        (self.root / "index.yaml").write_text(yaml.safe_dump(self.entries))

    def gallery(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def fsck(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.gallery("fsck", "--json", *args)
        return result.exit_code, json.loads(result.stdout)


def kinds(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["kind"], f["subject"]) for f in report["findings"] if f["repaired"] is None)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.offer("b", "v1")
    assert project.gallery("install", "b").exit_code == 0
    return project


def test_a_clean_install_passes(project: Project) -> None:
    code, report = project.fsck()
    assert (
        code == 0 and kinds(report) == [] and report["backends_checked"] == 1 and report["blobs_checked"] == 1
    )


def test_damaged_files_are_found_and_repaired_from_the_recorded_digest(project: Project) -> None:
    installed = tree(project.backends / "b")
    live = project.backends / "b"
    (live / "lib" / "a.so").write_bytes(b"tampered")
    (live / "VERSION").unlink()
    (live / "lib" / "intruder.so").write_bytes(b"x")
    (live / "run.sh").chmod(0o777)
    (live / "lib" / "current").unlink()
    (live / "lib" / "current").symlink_to("/etc/passwd")
    code, report = project.fsck()
    assert code == 3
    in_tree = [f for f in report["findings"] if f["damage"] and f["subject"] == "b"]
    details = sorted(f["detail"].split(":")[0] for f in in_tree)
    assert details == ["VERSION", "lib/a.so", "lib/current", "lib/intruder.so", "run.sh"]
    # a.so and run.sh are links to the file store's copies (installed read-only, shared): writing
    # into them, as root can, damaged the stored copies too — found, named by content and mode
    stored = sorted(
        f["detail"].split(": ", 1)[1] for f in report["findings"] if f["kind"] == "bad-stored-file"
    )
    assert [d.split(";")[0] for d in stored] == [
        "content changed (sha256 differs)",
        "mode 0777, stored as 0555",
    ]
    assert {k for k, _ in kinds(report)} == {"missing", "modified", "unexpected", "bad-stored-file"}

    project.offer("b", "v2")  # the gallery moved on: repair still restores what was installed (v1)
    code, report = project.fsck("--repair")
    assert code == 0, report
    assert all(f["repaired"] for f in report["findings"] if f["damage"])
    assert tree(live) == installed
    assert not StateDir(project.backends).kept("b"), "a damaged tree is not kept as a generation"
    code, report = project.fsck()
    assert code == 0 and kinds(report) == []


def test_repair_refetches_when_the_cached_blob_is_gone_too(project: Project) -> None:
    for blob in (project.root / "cache" / "blobs" / "sha256").iterdir():
        blob.unlink()
    (project.backends / "b" / "VERSION").write_text("v9")
    assert project.fsck("--repair")[0] == 0
    assert (project.backends / "b" / "VERSION").read_text() == "v1"


def test_bad_blobs_orphans_and_unmanaged_directories(project: Project) -> None:
    blobs = project.root / "cache" / "blobs" / "sha256"
    cached = next(blobs.iterdir())
    cached.write_bytes(b"rotten")
    state = StateDir(project.backends)
    (state.generations("gone") / "1").mkdir(parents=True)
    (project.backends / "stray").mkdir()
    (project.backends / "meta").mkdir()
    (project.backends / "meta" / "metadata.json").write_text(
        json.dumps({"name": "meta", "format_version": 1, "meta_backend_for": "absent"})
    )
    code, report = project.fsck()
    assert code == 3
    assert kinds(report) == [("bad-blob", f"sha256:{cached.name}"), ("dangling-meta-backend", "meta"),
                             ("no-metadata", "stray"), ("orphaned-generations", "gone")]  # fmt: skip
    code, report = project.fsck("--repair")
    assert code == 3 and kinds(report) == [("no-metadata", "stray")], (
        "an unknown directory is not ours to delete"
    )
    assert not cached.exists() and not state.generations("gone").exists()
    assert not (project.backends / "meta").exists() and (project.backends / "stray").exists()


def test_cache_prune_keeps_what_installed_backends_and_generations_use(project: Project) -> None:
    blobs = project.root / "cache" / "blobs" / "sha256"
    v1_blob = {p.name for p in blobs.iterdir()}
    project.offer("b", "v2")
    assert project.gallery("upgrade", "b").exit_code == 0
    project.offer("other", "o1")
    assert project.gallery("install", "other").exit_code == 0
    assert project.gallery("uninstall", "other").exit_code == 0
    everything = {p.name for p in blobs.iterdir()}
    assert len(everything) == 3
    code, report = project.fsck()
    assert code == 0 and [k for k, _ in kinds(report)] == ["unreferenced-blob"]
    (project.root / "cache" / "partial").mkdir(exist_ok=True)
    (project.root / "cache" / "partial" / ("ab" * 32)).write_bytes(b"half a download")
    pruned = project.gallery("cache", "prune", "--json")
    assert pruned.exit_code == 0
    result = json.loads(pruned.stdout)
    assert len(result["removed"]) == 1 and result["kept"] == 2 and result["partials_removed"] == 1
    assert v1_blob <= {p.name for p in blobs.iterdir()}, "the kept generation's blob stays"
    assert project.gallery("rollback", "b").exit_code == 0
    assert (project.backends / "b" / "VERSION").read_text() == "v1"


def test_a_blob_pruned_between_fetch_and_extraction_is_fetched_again(tmp_path: Path) -> None:
    import httpx

    from gallery.catalog.capability import HostFacts
    from gallery.config.models import load_config
    from gallery.operations.installer import Installer, NoProgress
    from gallery.verify.signatures import SigstoreVerifier

    project = Project(tmp_path)
    project.offer("b", "v1")
    config = load_config(project.config)

    class PruneRightAfterFetch(NoProgress):
        """Plays a concurrent 'gallery cache prune' that runs between fetch and extraction."""

        pruned = 0

        def layer_finished(self, backend: str, digest: str) -> None:
            if self.pruned == 0:
                self.pruned += 1
                (config.cache_path / "blobs" / "sha256" / digest.removeprefix("sha256:")).unlink()

    with httpx.Client(trust_env=False) as client:
        progress = PruneRightAfterFetch()
        installer = Installer(config, client=client, verifier=SigstoreVerifier(),
                              detector=lambda: HostFacts("linux", "amd64"), progress=progress)  # fmt: skip
        result = installer.install_one("b")
    assert result.status == "installed", result.error
    assert progress.pruned == 1 and (project.backends / "b" / "VERSION").read_text() == "v1"


def test_cache_prune_keeps_what_a_lock_file_pins(project: Project) -> None:
    project.offer("other", "o1")
    lock = project.root / "gallery.lock"
    assert project.gallery("lock", "other", "-o", str(lock)).exit_code == 0
    assert project.gallery("install", "other").exit_code == 0
    assert project.gallery("uninstall", "other").exit_code == 0
    blobs = project.root / "cache" / "blobs" / "sha256"
    before = {p.name for p in blobs.iterdir()}
    kept = project.gallery("cache", "prune", "--lock", str(lock), "--json")
    assert kept.exit_code == 0 and json.loads(kept.stdout)["removed"] == []
    assert {p.name for p in blobs.iterdir()} == before
    pruned = json.loads(project.gallery("cache", "prune", "--json").stdout)
    assert len(pruned["removed"]) == 1


def test_a_blob_pruned_under_a_repair_from_the_cache_is_named(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache said it had every recorded layer, then lost one (a concurrent prune): the
    rebuild names the missing blob instead of extracting nothing, and the backend is untouched."""
    from gallery.prepare.blobcache import BlobCache

    blobs = list((project.root / "cache" / "blobs" / "sha256").iterdir())
    for blob in blobs:
        blob.unlink()
    real, answers = BlobCache.has, iter([True])  # what the repair's check saw, before the prune

    monkeypatch.setattr(BlobCache, "has", lambda self, digest: next(answers, None) or real(self, digest))
    (project.backends / "b" / "VERSION").write_text("v9")
    result = project.gallery("fsck", "--repair")
    assert result.exit_code != 0
    assert f"blob sha256:{blobs[0].name} is no longer in the cache" in result.output, result.output
    assert (project.backends / "b" / "VERSION").read_text() == "v9"


def test_a_rebuild_from_the_cache_must_give_exactly_the_recorded_files(project: Project) -> None:
    """The cached layers rebuild something other than metadata.json records (here the record
    was edited: lib/a.so "0400", installed read-only as "0444"): the repair refuses to keep that record over other files, and
    the backend is left as it was."""
    path = project.backends / "b" / "metadata.json"
    lines = path.read_text().splitlines()
    edited = [
        line.replace('"mode": "0444"', '"mode": "0400"') if '"lib/a.so"' in line else line for line in lines
    ]
    assert edited != lines
    path.write_text("\n".join(edited) + "\n")
    (project.backends / "b" / "VERSION").write_text("v9")
    result = project.gallery("fsck", "--repair")
    assert result.exit_code == 3, result.output
    assert "the cached layers do not rebuild the recorded files" in result.output, result.output
    assert (project.backends / "b" / "VERSION").read_text() == "v9"


def test_a_cache_shared_by_two_configs_keeps_what_either_uses(tmp_path: Path, runner: CliRunner) -> None:
    from .test_crash import LAYER, image

    for version in ("v1", "v2"):
        write_layout(tmp_path / "layouts" / version, [(image(version), LAYER)])
    configs = {}
    for node, version in (("one", "v1"), ("two", "v2")):
        (tmp_path / f"{node}.yaml.index").write_text(
            yaml.safe_dump([{"name": "b", "uri": f"ocifile://layouts/{version}"}])
        )
        configs[node] = tmp_path / f"{node}.yaml"
        configs[node].write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": f"./{node}/backends", "cache_path": "./shared-cache",
            "capability": "default", "galleries": [{"name": "g", "url": f"./{node}.yaml.index"}],
        }))  # fmt: skip
        assert runner.invoke(app, ["--config", str(configs[node]), "install", "b"]).exit_code == 0

    def prune(node: str) -> dict[str, Any]:
        result = runner.invoke(app, ["--config", str(configs[node]), "cache", "prune", "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    assert prune("one")["removed"] == []  # two's layer is another config's, still in use
    fsck = runner.invoke(app, ["--config", str(configs["one"]), "fsck", "--json"])
    assert not [f for f in json.loads(fsck.stdout)["findings"] if f["kind"] == "unreferenced-blob"]
    assert runner.invoke(app, ["--config", str(configs["two"]), "uninstall", "b"]).exit_code == 0
    assert len(prune("one")["removed"]) == 1  # now nobody uses v2's layer
