"""Signed gallery indexes, freeze and replay protection, and downgrade refusal (the local Sigstore
instance signs; verification runs for real, offline).

The gallery is a directory: ``index.yaml`` with its ``index.yaml.sigstore.json`` (a ``cosign
sign-blob --bundle`` of its exact bytes), and signed OCI layouts the entries point at.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gallery.catalog.capability import HostFacts
from gallery.catalog.galleries import load_catalog
from gallery.config.models import Config, load_config
from gallery.errors import ConfigError, DowngradeRefused, InstallFailed
from gallery.operations.installer import Installer
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MALLORY = "https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def sigstore() -> tuple[SigstoreInstance, Path]:
    instance = SigstoreInstance()
    root = instance.write_trusted_root(Path(__import__("tempfile").mkdtemp()) / "trusted_root.json")
    return instance, root


class Gallery:
    def __init__(self, tmp: Path, sigstore: tuple[SigstoreInstance, Path], **gallery: Any) -> None:
        self.tmp, (self.instance, self.root) = tmp, sigstore
        self.site = tmp / "site"
        self.site.mkdir()
        self.gallery = gallery

    def image(self, name: str, version: str, *, signed_days_ago: float = 1) -> None:
        """A signed layout ``layouts/<name>-<version>`` whose signature was logged that long ago."""
        when = NOW - dt.timedelta(days=signed_days_ago)
        layer = gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", 0o755), file("VERSION", version.encode())]))
        write_layout(self.site / "layouts" / f"{name}-{version}", [(layer, LAYER)],
                     sign=lambda digest: self.instance.sign_image(digest, when=when))  # fmt: skip

    def publish(
        self,
        versions: dict[str, str],
        *,
        where: str = "index.yaml",
        signed_days_ago: float | None = 1,
        identity: str = DEFAULT_IDENTITY,
    ) -> bytes:
        """Write an index (name -> version) at ``where`` and, unless None, its signature."""
        entries = [{"name": n, "uri": f"ocifile://{self.site}/layouts/{n}-{v}"} for n, v in versions.items()]
        data = json.dumps(entries).encode()
        (self.site / where).write_bytes(data)
        signature = self.site / f"{where}.sigstore.json"
        signature.unlink(missing_ok=True)
        if signed_days_ago is not None:
            when = NOW - dt.timedelta(days=signed_days_ago)
            signature.write_bytes(self.instance.sign_blob(data, identity=identity, when=when))
        return data

    def config(self, **extra: Any) -> Config:
        gallery = {
            "name": "g",
            "url": str(self.site / "index.yaml"),
            "trusted_root": str(self.root),
            "verification": {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY},
            **self.gallery,
            **extra,
        }
        path = self.tmp / "gallery.yaml"
        path.write_text(json.dumps({
            "format_version": 1, "backends_path": "backends", "cache_path": "cache", "capability": "default",
            "platform": "linux/amd64", "galleries": [gallery],
        }))  # fmt: skip
        return load_config(path)

    def installer(self, **extra: Any) -> Installer:
        return Installer(self.config(**extra), client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                         detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip

    def load(self, **extra: Any):  # type: ignore[no-untyped-def]
        return load_catalog(self.config(**extra), client=httpx.Client(trust_env=False)).galleries[0]


@pytest.fixture
def site(tmp_path: Path, sigstore: tuple[SigstoreInstance, Path]) -> Gallery:
    gallery = Gallery(tmp_path, sigstore)
    gallery.image("app", "v1", signed_days_ago=3)
    gallery.image("app", "v2", signed_days_ago=1)
    return gallery


# -- signed indexes ---------------------------------------------------------------------------


def test_a_signed_index_is_verified_before_it_is_used(site: Gallery) -> None:
    site.publish({"app": "v1"})
    state = site.load()
    assert state.error is None and state.loaded is not None
    signature = state.loaded.signature
    assert signature is not None and signature.verified and signature.identity == DEFAULT_IDENTITY
    assert state.loaded.warnings == ()
    result = site.installer().install_one("app")
    assert result.error is None, result.error


def test_an_index_changed_after_signing_is_refused(site: Gallery) -> None:
    site.publish({"app": "v1"})
    index = site.site / "index.yaml"
    index.write_bytes(index.read_bytes().replace(b"app-v1", b"app-v2"))  # repoint the entry
    state = site.load()
    assert state.error is not None and state.error.code() == 3
    assert "bad signature" in state.error.message
    result = site.installer().install_one("app")
    assert result.exit_code == 3 and not (site.tmp / "backends" / "app").exists()


def test_an_index_signed_by_another_identity_is_refused(site: Gallery) -> None:
    site.publish({"app": "v1"}, identity=MALLORY)
    state = site.load()
    assert state.error is not None and state.error.code() == 3
    assert "bad signature" in state.error.message


def test_a_separate_index_policy(site: Gallery) -> None:
    """index_verification names the index's signer when another workflow signs it."""
    site.publish({"app": "v1"}, identity=MALLORY)
    state = site.load(index_verification={"issuer": GITHUB_ISSUER, "identity": MALLORY})
    assert state.error is None and state.loaded and state.loaded.signature
    assert state.loaded.signature.identity == MALLORY


def test_an_unsigned_index_warns_or_is_refused_with_require_signed_index(site: Gallery) -> None:
    site.publish({"app": "v1"}, signed_days_ago=None)
    state = site.load()
    assert state.error is None and state.loaded is not None and state.loaded.signature is None
    assert any("not signed" in w for w in state.loaded.warnings)
    refused = site.load(require_signed_index=True)
    assert refused.error is not None and refused.error.code() == 3
    assert "require_signed_index" in refused.error.message


def test_require_signed_index_needs_a_policy(site: Gallery) -> None:
    with pytest.raises(ConfigError, match="need a policy"):
        site.config(verification=None, require_signed_index=True)
    with pytest.raises(ConfigError, match="contradicts"):
        site.config(index_signature="none", require_signed_index=True)


def test_an_index_declared_unsigned_is_not_looked_up(site: Gallery) -> None:
    """index_signature: none (LocalAI's index is unsigned): no lookup, no warning, no check."""
    site.publish({"app": "v1"}, identity=MALLORY)  # a signature that would be refused is ignored
    state = site.load(index_signature="none")
    assert state.error is None and state.loaded is not None
    assert state.loaded.signature is None and state.loaded.warnings == ()


def test_a_stale_index_beyond_max_index_age(site: Gallery) -> None:
    site.publish({"app": "v1"}, signed_days_ago=10)
    warned = site.load(max_index_age="P7D")
    assert warned.error is None and warned.loaded is not None
    assert any("max_index_age" in w for w in warned.loaded.warnings)
    refused = site.load(max_index_age="P7D", require_signed_index=True)
    assert (
        refused.error is not None and refused.error.code() == 3 and "max_index_age" in refused.error.message
    )
    assert site.load(max_index_age="P14D", require_signed_index=True).error is None


def test_a_mirror_serving_an_older_signed_index_than_the_cached_one(site: Gallery) -> None:
    old = site.publish({"app": "v1"}, where="mirror.yaml", signed_days_ago=5)
    site.publish({"app": "v2"}, signed_days_ago=1)
    mirror = {"mirrors": [str(site.site / "mirror.yaml")]}
    first = site.load(**mirror)
    assert first.loaded is not None and not first.loaded.from_cache  # the primary: signed a day ago
    (site.site / "index.yaml").unlink()  # the primary goes away; the mirror replays the old index
    state = site.load(**mirror)
    assert state.loaded is not None and state.loaded.from_cache, "the older index must not replace the cache"
    assert any("before the last good copy" in f.reason for f in state.loaded.failures)
    assert state.entries[0].uri.endswith("app-v2")
    assert old not in (site.tmp / "cache" / "indexes" / "g.json").read_bytes()


def test_a_signature_is_not_dropped_silently(site: Gallery) -> None:
    site.publish({"app": "v1"})
    assert site.load().error is None
    site.publish({"app": "v1"}, signed_days_ago=None)  # same content, signature removed
    state = site.load()
    assert state.loaded is not None and state.loaded.from_cache
    assert any("last good copy was" in f.reason for f in state.loaded.failures)


def test_the_last_good_copy_is_verified_again_when_used(site: Gallery) -> None:
    site.publish({"app": "v1"})
    assert site.load().error is None
    cached = site.tmp / "cache" / "indexes" / "g.json"
    record = json.loads(cached.read_text())
    record["content"] = record["content"].replace("app-v1", "app-v2")
    record["sha256"] = __import__("hashlib").sha256(record["content"].encode()).hexdigest()
    cached.write_text(json.dumps(record))
    (site.site / "index.yaml").unlink()
    state = site.load()
    assert state.error is not None and state.error.code() == 3


# -- downgrades -------------------------------------------------------------------------------


def test_upgrade_to_an_older_signed_build_is_refused_unless_allowed(site: Gallery) -> None:
    site.publish({"app": "v2"})
    assert site.installer().install_one("app").error is None
    site.publish({"app": "v1"})  # the index (validly signed) now points at an older signed build
    result = site.installer().upgrade_one("app")
    assert result.exit_code == 3
    assert isinstance(result.error, InstallFailed)
    assert any(isinstance(c, DowngradeRefused) for c in result.error.causes)
    assert "signed at" in result.error.message and "before the installed build" in result.error.message
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v2"
    allowed = site.installer().upgrade_one("app", allow_downgrade=True)
    assert allowed.error is None and allowed.status == "upgraded"
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v1"


def test_a_signed_index_pointing_at_an_older_build_of_the_right_signer(site: Gallery) -> None:
    """The index is genuine and so is the image: only the signing times tell the replay apart."""
    site.publish({"app": "v2"}, signed_days_ago=2)
    assert site.installer().install_one("app").error is None
    site.publish({"app": "v1"}, signed_days_ago=0.5)  # a newer index, an older image
    dry = site.installer().upgrade_one("app", dry_run=True)
    assert dry.exit_code == 3 and "before the installed build" in dry.error.message  # type: ignore[union-attr]
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v2"


def test_upgrade_to_a_newer_build_and_rollback_still_work(site: Gallery) -> None:
    site.publish({"app": "v1"})
    assert site.installer().install_one("app").error is None
    site.publish({"app": "v2"})
    assert site.installer().upgrade_one("app").status == "upgraded"
    rolled = site.installer().rollback("app")  # the deliberate, local way back: not a downgrade
    assert rolled.error is None
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v1"


# -- authoring ---------------------------------------------------------------------------------


def test_lint_checks_that_the_index_and_its_signature_match(site: Gallery) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    site.publish({"app": "v1"})
    index, bundle = site.site / "index.yaml", site.site / "index.yaml.sigstore.json"
    signer = ["--issuer", GITHUB_ISSUER, "--identity", DEFAULT_IDENTITY, "--trusted-root", str(site.root)]
    runner = CliRunner()
    ok = runner.invoke(app, ["lint", str(index), "--signature", str(bundle), *signer])
    assert ok.exit_code == 0, ok.output
    unchecked = runner.invoke(app, ["lint", str(index), "--signature", str(bundle)])
    assert unchecked.exit_code == 0 and "not checked" in unchecked.output
    other = runner.invoke(app, ["lint", str(index), "--signature", str(bundle), "--issuer", GITHUB_ISSUER,
                                "--identity", MALLORY, "--trusted-root", str(site.root)])  # fmt: skip
    assert other.exit_code == 3, other.output
    index.write_bytes(index.read_bytes() + b"\n")
    changed = runner.invoke(app, ["lint", str(index), "--signature", str(bundle), *signer])
    assert changed.exit_code == 3 and "sign it again" in changed.output


# -- operator view -----------------------------------------------------------------------------


def test_list_show_and_doctor_report_signer_signing_time_and_updates(site: Gallery) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    site.publish({"app": "v1"})
    config = str(site.tmp / "gallery.yaml")
    site.config()  # writes gallery.yaml
    runner = CliRunner()
    assert runner.invoke(app, ["--config", config, "install", "app"]).exit_code == 0
    site.publish({"app": "v2"})
    listed = json.loads(runner.invoke(app, ["--config", config, "list", "--installed", "--json"]).output)
    app_row = next(b for b in listed["installed"] if b["name"] == "app")
    assert app_row["signer"] == DEFAULT_IDENTITY and app_row["signed_at"].startswith(
        (NOW - dt.timedelta(days=3)).date().isoformat()
    )
    assert app_row["update"]["available"] is True and app_row["update"]["verified"] is True
    offline = json.loads(
        runner.invoke(app, ["--config", config, "list", "--installed", "--offline", "--json"]).output
    )
    assert next(b for b in offline["installed"] if b["name"] == "app")["update"] is None
    shown = json.loads(runner.invoke(app, ["--config", config, "show", "app", "--json"]).output)
    assert shown["installed"]["signer"] == DEFAULT_IDENTITY and shown["installed"]["update"]["available"]
    doctor = runner.invoke(app, ["--config", config, "doctor"])
    assert f"index signature: signed by {DEFAULT_IDENTITY}" in doctor.output.replace("\n", "")
    # upgrade --allow-downgrade through the CLI: v2 installed, v1 offered again
    assert runner.invoke(app, ["--config", config, "upgrade", "app"]).exit_code == 0
    site.publish({"app": "v1"})
    assert runner.invoke(app, ["--config", config, "upgrade", "app"]).exit_code == 3
    assert runner.invoke(app, ["--config", config, "upgrade", "--allow-downgrade", "app"]).exit_code == 0


def test_a_lock_file_may_pin_an_older_build_than_the_one_installed(site: Gallery) -> None:
    """A lock pins digests on purpose: preload --lock of a build signed before the installed one
    is what the operator approved, not a downgrade attack (upgrade would refuse it)."""
    site.publish({"app": "v1"})
    locked = site.installer().lock_one("app")  # approved: v1, signed three days ago
    site.publish({"app": "v2"})
    assert site.installer().install_one("app").error is None
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v2"
    result = site.installer().preload_locked(locked)
    assert result.error is None, result.error
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v1"


def test_lock_and_export_of_an_older_build_than_the_installed_one_are_not_downgrades(
    site: Gallery, tmp_path: Path
) -> None:
    """Lock and export only pin and verify what the index offers; the installed build's age is
    upgrade's concern, not theirs."""
    site.publish({"app": "v2"})
    assert site.installer().install_one("app").error is None
    site.publish({"app": "v1"})
    locked = site.installer().lock_one("app")
    assert "app-v1" in locked.candidate
    exported = site.installer().export(["app"], tmp_path / "bundle")
    assert exported.exit_code == 0, exported
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v2", "neither touched the install"


def test_a_rekor_v2_signed_index_is_timed_by_its_timestamp_authority(site: Gallery) -> None:
    """An index signed the Rekor v2 way (no log time): verified, and max_index_age measures the
    TSA's time."""
    data = site.publish({"app": "v1"}, signed_days_ago=None)
    when = NOW - dt.timedelta(days=10)
    bundle = site.instance.sign_blob(data, when=when, rekor_v2=True)
    (site.site / "index.yaml.sigstore.json").write_bytes(bundle)
    state = site.load(require_signed_index=True)
    assert state.error is None and state.loaded is not None
    signature = state.loaded.signature
    assert signature is not None and signature.time_source == "timestamp-authority"
    assert signature.signing_time is not None and abs(signature.signing_time - when) < dt.timedelta(seconds=1)
    refused = site.load(max_index_age="P7D", require_signed_index=True)
    assert refused.error is not None and "max_index_age" in refused.error.message


def test_upgrade_after_the_policy_was_dropped_is_no_downgrade_check(site: Gallery) -> None:
    """An unsigned candidate has no signing time to compare: with the gallery's policy removed,
    upgrade installs it (unverified, warned), it does not compare times it does not have."""
    site.publish({"app": "v1"})
    assert site.installer().install_one("app").error is None
    site.publish({"app": "v2"})
    result = site.installer(verification=None).upgrade_one("app")
    assert result.error is None and result.status == "upgraded", result.error
    assert not result.verified
    assert (site.tmp / "backends" / "app" / "VERSION").read_text() == "v2"
