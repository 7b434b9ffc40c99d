"""A backends directory LocalAI populated: leftovers, sideloaded and system backends, LocalAI's own
installs (verify, update checks, upgrade --all) and `gallery adopt` — through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.main import app
from gallery.place.metadata import read_metadata

from .tarbuild import file, tar_bytes

RUN_SH = b"#!/bin/sh\necho localai\n"


class Dir:
    """A gallery (a local tarball entry per name) and a backends dir as LocalAI leaves it."""

    def __init__(self, tmp_path: Path, make_config: Callable[..., Path], **fields: Any) -> None:
        self.tmp = tmp_path
        self.backends = tmp_path / "roots" / "backends"
        self.backends.mkdir(parents=True)
        blob = tar_bytes([file("run.sh", b"#!/bin/sh\necho verified\n", mode=0o755)])
        tarball = tmp_path / "build.tar"
        tarball.write_bytes(blob)
        self.sha = hashlib.sha256(blob).hexdigest()
        entries = [{"name": n, "uri": f"file://{tarball}", "sha256": self.sha} for n in ("whisper", "piper")]
        self.index = tmp_path / "index.yaml"
        self.index.write_text(json.dumps(entries))
        gallery = {"name": "localai", "url": str(self.index), **fields.pop("gallery", {})}
        self.config = make_config(galleries=[gallery], **fields)

    def localai_backend(self, directory: str, *, gallery_url: str | None = None, **meta: Any) -> Path:
        """A backend as LocalAI's InstallBackend writes it (core/gallery/backends.go 426-450)."""
        path = self.backends / directory
        path.mkdir()
        (path / "run.sh").write_bytes(RUN_SH)
        (path / "run.sh").chmod(0o755)
        record = {"name": directory.split(".")[0], "gallery_url": str(self.index) if gallery_url is None else gallery_url,
                  "installed_at": "2026-11-01T10:00:00Z", "uri": "quay.io/x/y:latest", **meta}  # fmt: skip
        (path / "metadata.json").write_text(json.dumps({k: v for k, v in record.items() if v}))
        return path

    def sideloaded(self, name: str) -> Path:
        path = self.backends / name
        path.mkdir()
        (path / "run.sh").write_bytes(RUN_SH)
        return path

    def run(self, runner: CliRunner, *args: str) -> Any:
        return runner.invoke(app, ["--config", str(self.config), *args])

    def json(self, runner: CliRunner, *args: str) -> Any:
        return self.run(runner, *args, "--json")


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    for entry in [path, *path.iterdir()]:
        os.utime(entry, (past, past), follow_symlinks=False)


def test_localai_leftovers_are_not_backends_and_fsck_passes(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    d.localai_backend("whisper")
    d.localai_backend("whisper.backup")  # LocalAI's upgrade keeps the old tree here during its swap
    d.localai_backend("whisper.upgrade-tmp")
    (d.backends / "piper.install-tmp").mkdir()
    listed = json.loads(d.json(runner, "list", "--installed", "--offline").stdout)
    assert [b["name"] for b in listed["installed"]] == ["whisper"]
    upgraded = d.json(runner, "upgrade", "--all")
    assert upgraded.exit_code == 0, upgraded.stdout
    assert [r["requested"] for r in json.loads(upgraded.stdout)["results"]] == ["whisper"]

    report = d.json(runner, "fsck")
    assert report.exit_code == 0, report.stdout
    kinds = sorted((f["kind"], f["subject"]) for f in json.loads(report.stdout)["findings"])
    assert kinds == [("localai-leftover", "piper.install-tmp"), ("localai-leftover", "whisper.backup"),
                     ("localai-leftover", "whisper.upgrade-tmp")]  # fmt: skip


def test_fsck_repair_removes_localai_leftovers_only_once_localai_is_idle(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    d.localai_backend("whisper")
    stale = d.localai_backend("whisper.upgrade-tmp")
    repaired = json.loads(d.json(runner, "fsck", "--repair").stdout)
    assert stale.exists(), "a leftover LocalAI touched just now may still be in use"
    assert (
        "leaves it for an hour" in repaired["report"]["findings"][0]["detail"]
        if "report" in repaired
        else True
    )
    age(stale, 2 * 3600)
    result = d.run(runner, "fsck", "--repair")
    assert result.exit_code == 0, result.stdout
    assert not stale.exists() and (d.backends / "whisper/run.sh").exists()


def test_a_backup_whose_backend_is_missing_is_localais_interrupted_swap_and_is_put_back(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    backup = d.localai_backend("whisper.backup")  # crashed between its two renames (upgrade.go 322-327)
    assert d.run(runner, "fsck").exit_code == 3  # the backend is missing: damage
    age(backup, 2 * 3600)
    result = d.run(runner, "fsck", "--repair")
    assert result.exit_code == 0, result.stdout
    assert "put whisper.backup back as whisper" in result.stdout
    assert (d.backends / "whisper/run.sh").read_bytes() == RUN_SH and not backup.exists()


def test_sideloaded_and_system_backends_are_listed_and_fsck_passes(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    system = tmp_path / "system-backends"
    (system / "llama-cpp").mkdir(parents=True)
    (system / "llama-cpp/run.sh").write_bytes(RUN_SH)
    (system / "llama-cpp").chmod(0o555)
    before = sorted(p.name for p in system.rglob("*"))
    d = Dir(tmp_path, make_config, system_backends_path=str(system))
    d.sideloaded("piper")
    listed = json.loads(d.json(runner, "list", "--installed", "--offline").stdout)
    assert listed["sideloaded"] == ["piper"] and listed["system"] == ["llama-cpp"]
    table = d.run(runner, "list", "--installed", "--offline").stdout
    assert "piper" in table and "llama-cpp" in table and "0 installed, 1 sideloaded, 1 system" in table
    report = d.json(runner, "fsck")
    assert report.exit_code == 0 and json.loads(report.stdout)["findings"][0]["kind"] == "sideloaded"
    refused = d.run(runner, "install", "piper")
    assert refused.exit_code != 0 and "gallery adopt piper" in refused.stdout + (refused.stderr or "")
    assert sorted(p.name for p in system.rglob("*")) == before
    (system / "llama-cpp").chmod(0o755)


def test_localai_installs_from_no_configured_gallery_do_not_fail_upgrade_all(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    d.localai_backend("my-ad-hoc", gallery_url="")  # local-ai backends install oci://... --name my-ad-hoc
    result = d.json(runner, "upgrade", "--all")
    assert result.exit_code == 0, result.stdout
    (only,) = json.loads(result.stdout)["results"]
    assert only["status"] == "unchanged" and "not from a configured gallery" in only["warnings"][0]


def test_verify_matches_localai_installs_to_their_gallery_by_url(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    policy = {"issuer": "https://accounts.example.com", "identity": "release@example.com"}
    d = Dir(tmp_path, make_config, gallery={"verification": policy})
    d.localai_backend("whisper", digest="sha256:" + "a" * 64)
    result = d.json(runner, "verify", "--all")
    assert result.exit_code == 3, result.stdout
    (only,) = json.loads(result.stdout)["results"]
    assert "installed by LocalAI" in only["error"]["message"] and "'localai'" in only["error"]["message"]
    assert "gallery adopt whisper" in only["error"]["hint"]


def test_adopt_replaces_a_localai_install_and_a_sideloaded_one_with_the_verified_build(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    d.localai_backend("whisper")
    d.sideloaded("piper")
    result = d.json(runner, "adopt", "whisper", "piper")
    assert result.exit_code == 0, result.stdout
    assert [r["status"] for r in json.loads(result.stdout)["results"]] == ["adopted", "adopted"]
    for name in ("whisper", "piper"):
        metadata = read_metadata(d.backends / name)
        assert metadata is not None and not metadata.written_by_localai and metadata.gallery == "localai"
        assert metadata.digest == f"sha256:{d.sha}" and metadata.verification is not None
        assert (d.backends / name / "run.sh").read_bytes() == b"#!/bin/sh\necho verified\n"
    again = d.run(runner, "adopt", "whisper")
    assert again.exit_code == 2 and "installed by gallery already" in again.stdout + (again.stderr or "")
    missing = d.run(runner, "adopt", "nothing-here")
    assert missing.exit_code == 2


def test_on_change_runs_after_a_change_with_what_changed_and_its_outcome_is_in_the_result(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    record = tmp_path / "hook.txt"
    hook = ["/bin/sh", "-c", f'echo "$GALLERY_CHANGED|$GALLERY_OPERATIONS|$HOME" >> {record}; echo restarted']
    d = Dir(tmp_path, make_config, on_change=hook)
    first = d.json(runner, "install", "whisper", "piper")
    assert first.exit_code == 0, first.stdout
    outcome = json.loads(first.stdout)["hook"]
    assert outcome["ok"] and outcome["exit_code"] == 0 and outcome["output"] == "restarted\n"
    assert record.read_text() == "whisper piper|installed installed|\n"  # nothing of ours leaks into its env
    again = d.json(runner, "install", "whisper")  # nothing changed: no hook
    assert json.loads(again.stdout)["hook"] is None and record.read_text().count("\n") == 1
    d.run(runner, "uninstall", "piper")
    assert record.read_text().splitlines()[-1] == "piper|uninstalled|"


def test_a_failing_or_hanging_hook_is_reported_and_does_not_undo_the_change(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config, on_change=["/bin/sh", "-c", "echo cannot reach LocalAI >&2; exit 7"])
    failed = d.run(runner, "install", "whisper")
    assert failed.exit_code == 0 and (d.backends / "whisper/run.sh").exists()
    assert "on_change hook" in failed.stderr and "exited 7: cannot reach LocalAI" in failed.stderr
    slow = Dir(tmp_path / "slow", make_config, on_change=["/bin/sleep", "30"], on_change_timeout=0.5,
               backends_path=str(tmp_path / "slow/roots/backends"))  # fmt: skip
    result = slow.json(runner, "install", "whisper")
    outcome = json.loads(result.stdout)["hook"]
    assert (
        result.exit_code == 0 and outcome["exit_code"] is None and "timed out after 0.5 s" in outcome["error"]
    )


def test_install_uri_is_an_ad_hoc_install_under_the_named_gallerys_policy(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner, registry: Any
) -> None:
    from .registry_server import LAYER_GZIP
    from .tarbuild import gz

    digest, _ = registry.push_image(
        "adhoc/app", "v1", [(gz(tar_bytes([file("run.sh", RUN_SH, mode=0o755)])), LAYER_GZIP)]
    )
    ref = f"{registry.host}/adhoc/app:v1"
    d = Dir(tmp_path, make_config, insecure_registries=[registry.host])
    result = d.json(
        runner, "install", "--uri", ref, "--name", "my-app", "--alias", "app", "--gallery", "localai"
    )
    assert result.exit_code == 0, result.stdout
    metadata = read_metadata(d.backends / "my-app")
    assert metadata is not None and metadata.ad_hoc and metadata.alias == "app" and metadata.uri == ref
    assert metadata.gallery == "localai" and metadata.digest == digest
    upgraded = json.loads(d.json(runner, "upgrade", "--all").stdout)["results"]
    assert [r["status"] for r in upgraded] == ["unchanged"] and "install --uri" in upgraded[0]["warnings"][0]
    # The named gallery's policy applies: strict mode without one refuses before writing.
    strict = Dir(tmp_path / "strict", make_config, insecure_registries=[registry.host], require_integrity=True,
                 backends_path=str(tmp_path / "strict/roots/backends"))  # fmt: skip
    refused = strict.run(runner, "install", "--uri", ref, "--name", "my-app", "--gallery", "localai")
    assert refused.exit_code == 3 and not (strict.backends / "my-app").exists()
    policy = {"issuer": "https://accounts.example.com", "identity": "release@example.com"}
    signed = Dir(tmp_path / "signed", make_config, insecure_registries=[registry.host], gallery={"verification": policy},
                 backends_path=str(tmp_path / "signed/roots/backends"))  # fmt: skip
    unsigned = signed.run(runner, "install", "--uri", ref, "--name", "my-app", "--gallery", "localai")
    assert unsigned.exit_code == 3 and not (signed.backends / "my-app").exists()
    usage = d.run(runner, "install", "--uri", ref, "--name", "x")
    assert usage.exit_code == 2 and "--gallery" in usage.stderr
    unknown = d.run(runner, "install", "--uri", ref, "--name", "x", "--gallery", "nope")
    assert unknown.exit_code == 2 and "no gallery named 'nope'" in unknown.stderr


def test_list_installed_checks_localai_installs_for_updates_against_their_gallery(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    d = Dir(tmp_path, make_config)
    d.localai_backend("whisper", digest="sha256:" + "b" * 64)  # what LocalAI installed back then
    d.localai_backend("my-ad-hoc", gallery_url="")
    listed = json.loads(d.json(runner, "list", "--installed").stdout)["installed"]
    by_name = {b["name"]: b for b in listed}
    assert by_name["whisper"]["update"]["available"] is True
    assert by_name["whisper"]["update"]["digest"] == f"sha256:{d.sha}"
    assert by_name["my-ad-hoc"]["update"] is None


def test_a_localai_gallery_url_matches_our_gallery_in_either_spelling(tmp_path: Path) -> None:
    from gallery.config.models import Config
    from gallery.place.metadata import BackendMetadata
    from gallery.verify.recheck import recorded_gallery

    config = Config.model_validate({"format_version": 1, "galleries": [
        {"name": "localai", "url": "https://raw.githubusercontent.com/mudler/LocalAI/master/backend/index.yaml"}]})  # fmt: skip
    localai = BackendMetadata(name="x", gallery_url="github:mudler/LocalAI/backend/index.yaml@master")
    found = recorded_gallery(localai, config)
    assert found is not None and found.name == "localai"
    assert (
        recorded_gallery(BackendMetadata(name="x", gallery_url="https://elsewhere.example/i.yaml"), config)
        is None
    )
    assert recorded_gallery(BackendMetadata(name="x"), config) is None


def test_an_empty_meta_backend_for_is_a_concrete_backend() -> None:
    from gallery.place.metadata import BackendMetadata

    record = BackendMetadata.model_validate(
        {
            "name": "whisper",
            "meta_backend_for": "",
            "gallery_url": "github:mudler/LocalAI/backend/index.yaml@master",
        }
    )
    assert record.meta_backend_for is None
