"""Lock files and preload against the real registry: exactly the locked bytes, verified again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from gallery.config.models import Config
from gallery.errors import UsageError
from gallery.operations.fleet import lock_backends, preload
from gallery.operations.lockfile import LockFile, read_lock, write_lock
from gallery.place.metadata import read_metadata

from .faulty_proxy import Faults, faulty_proxy
from .registry_server import LAYER_GZIP, Registry, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes
from .test_install import RUN_SH, Env

POLICY = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}


def layer(text: str) -> bytes:
    return gz(tar_bytes([RUN_SH, file("VERSION", text.encode())]))


class Fleet(Env):
    def __init__(self, tmp_path: Path, registry: Registry) -> None:
        super().__init__(tmp_path, registry)
        self.sigstore = SigstoreInstance()
        self.root = self.sigstore.write_trusted_root(tmp_path / "trusted_root.json")

    def push_signed(self, tag: str, text: str, *, platform: str = "linux/amd64") -> tuple[str, int]:
        digest, document = self.registry.push_image(
            self.repo, tag, [(layer(text), LAYER_GZIP)], platform=platform
        )
        push_signature(self.registry, self.repo, digest, self.sigstore.sign_image(digest))
        return digest, len(json.dumps(document).encode())

    def signed_config(self, **fields: Any) -> Config:
        return self.config(
            verification=fields.pop("verification", POLICY), trusted_root=str(self.root), **fields
        )

    def lock(self, config: Config, names: list[str], **kwargs: Any) -> LockFile:
        outcome = lock_backends(config, names, make_installer=self.installer, **kwargs)
        assert outcome.exit_code == 0, [r.error for r in outcome.batch.results]
        return outcome.lock

    def preload(self, config: Config, lock: LockFile | None = None, **kwargs: Any) -> Any:
        return preload(self.installer(config), lock=lock, **kwargs)


@pytest.fixture
def fleet(tmp_path: Path, registry: Registry) -> Fleet:
    return Fleet(tmp_path, registry)


def test_lock_round_trip_is_stable_and_installs_the_locked_digest(fleet: Fleet, tmp_path: Path) -> None:
    v1, _ = fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    config = fleet.signed_config()
    lock = fleet.lock(config, ["echo"])
    write_lock(tmp_path / "a.lock", lock)
    write_lock(tmp_path / "b.lock", fleet.lock(config, ["echo"]))
    assert (tmp_path / "a.lock").read_bytes() == (tmp_path / "b.lock").read_bytes(), "stable output"
    entry = read_lock(tmp_path / "a.lock").backends[0]
    assert (
        entry.resolved_digest == v1 and entry.verification.verified and entry.verification.policy_fingerprint
    )
    assert json.loads((tmp_path / "a.lock").read_text())["format_version"] == 1

    fleet.push_signed("stable", "v2")  # the tag moves upstream after locking
    batch = fleet.preload(config, lock)
    assert [(r.status, r.digest, r.verified) for r in batch.results] == [("installed", v1, True)]
    assert (fleet.backends / "echo" / "VERSION").read_text() == "v1"


def test_preload_of_an_installed_lock_costs_no_network(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    faults = Faults()
    with faulty_proxy(fleet.registry.url, faults) as proxy:
        fleet.entries = [{"name": "echo", "uri": f"{proxy}/{fleet.repo}:stable"}]
        config = fleet.signed_config(insecure_registries=[proxy])
        lock = fleet.lock(config, ["echo"])
        assert fleet.preload(config, lock).results[0].status == "installed"
        faults.seen.clear()
        again = fleet.preload(config, lock)
        assert again.results[0].status == "unchanged" and faults.seen == []


def test_a_locked_digest_failing_todays_policy_is_refused(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    lock = fleet.lock(fleet.signed_config(), ["echo"])
    other = {
        "issuer": GITHUB_ISSUER,
        "identity": "https://github.com/other/repo/.github/workflows/x.yml@refs/heads/main",
    }
    batch = fleet.preload(fleet.signed_config(verification=other), lock)
    assert batch.exit_code == 3 and not (fleet.backends / "echo").exists()


def test_strict_mode_refuses_an_entry_that_was_not_verified_when_locked(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    lock = fleet.lock(fleet.config(), ["echo"])  # no policy: locked unverified
    assert not lock.backends[0].verification.verified
    batch = fleet.preload(fleet.signed_config(require_integrity=True), lock)
    assert batch.exit_code == 3 and "not verified when locked" in batch.results[0].error.message  # type: ignore[union-attr]
    assert not fleet.backends.exists()


def test_content_that_no_longer_matches_the_lock_is_refused(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    config = fleet.signed_config()
    lock = fleet.lock(config, ["echo"])
    forged = lock.backends[0].model_copy(update={"manifest_digest": "sha256:" + "1" * 64})
    batch = fleet.preload(config, LockFile(backends=(forged,)))
    assert batch.exit_code == 3 and "lock file" in batch.results[0].error.message  # type: ignore[union-attr]
    assert not (fleet.backends / "echo").exists()


def test_meta_backends_and_platforms_are_chosen_per_worker(fleet: Fleet) -> None:
    cpu = fleet.push_signed("cpu", "cpu")
    fleet.push_signed("cuda", "cuda")
    arm = fleet.push_signed("arm", "arm", platform="linux/arm64")
    index = fleet.registry.push_index(fleet.repo, "multi", [(*cpu, "linux/amd64"), (*arm, "linux/arm64")])
    push_signature(fleet.registry, fleet.repo, index, fleet.sigstore.sign_image(index))
    fleet.entries = [
        {"name": "cpu-echo", "uri": fleet.ref("cpu")},
        {"name": "cuda-echo", "uri": fleet.ref("cuda")},
        {"name": "echo", "capabilities": {"default": "cpu-echo", "nvidia": "cuda-echo"}},
        {"name": "multi", "uri": fleet.ref("multi")},
    ]
    config = fleet.signed_config()
    lock = fleet.lock(config, ["echo", "multi"], capabilities=["nvidia", "default"],
                      platforms=["linux/amd64", "linux/arm64"])  # fmt: skip
    keys = sorted((e.name, e.platform, e.capability or "") for e in lock.backends)
    assert ("cuda-echo", "linux/amd64", "nvidia") in keys and ("multi", "linux/arm64", "") in keys

    gpu = fleet.preload(fleet.signed_config(capability="nvidia"), lock, names=["echo"])
    assert [(r.name, r.status) for r in gpu.results] == [("cuda-echo", "installed")]
    meta = read_metadata(fleet.backends / "echo")
    assert meta is not None and meta.meta_backend_for == "cuda-echo"

    arm_worker = fleet.signed_config(platform="linux/arm64", backends_path="./arm-backends")
    on_arm = fleet.preload(arm_worker, lock, names=["multi"])
    assert on_arm.results[0].error is None, on_arm.results[0].error
    assert (fleet.tmp / "arm-backends" / "multi" / "VERSION").read_text() == "arm"

    with pytest.raises(UsageError, match="no backends for platform linux/s390x"):
        fleet.preload(fleet.signed_config(platform="linux/s390x"), lock)


def test_cli_lock_preload_and_schema(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    fleet.signed_config()
    runner = CliRunner()
    config = ["--config", str(fleet.tmp / "gallery.yaml")]
    locked = runner.invoke(app, [*config, "lock", "echo", "-o", str(fleet.tmp / "gallery.lock")])
    assert locked.exit_code == 0, locked.stderr
    missing = runner.invoke(app, [*config, "lock", "nope", "-o", str(fleet.tmp / "bad.lock")])
    assert missing.exit_code == 2 and not (fleet.tmp / "bad.lock").exists()
    preloaded = runner.invoke(
        app, [*config, "preload", "--lock", str(fleet.tmp / "gallery.lock"), "--json", "-j", "2"]
    )
    assert preloaded.exit_code == 0, preloaded.stderr
    summary = json.loads(preloaded.stdout)
    assert summary["results"][0]["status"] == "installed" and summary["failed"] == 0
    assert summary["bytes_fetched"] > 0
    usage = runner.invoke(app, [*config, "preload"])
    assert usage.exit_code == 2
    schema = json.loads(runner.invoke(app, ["schema", "lock"]).stdout)
    assert "backends" in schema["properties"]


def test_a_lock_entry_naming_itself_its_meta_backend_is_not_turned_into_a_link(fleet: Fleet) -> None:
    """A crafted lock (meta = name): the concrete backend installs and stays a backend; its
    directory is never replaced by a meta-backend link to itself."""
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    config = fleet.signed_config()
    lock = fleet.lock(config, ["echo"])
    crafted = lock.model_copy(update={"backends": tuple(
        entry.model_copy(update={"meta": "echo", "capability": "default"}) for entry in lock.backends)})  # fmt: skip
    batch = fleet.preload(config, crafted)
    assert batch.results[0].error is None, batch.results[0].error
    assert (fleet.backends / "echo" / "VERSION").read_text() == "v1"
    metadata = json.loads((fleet.backends / "echo" / "metadata.json").read_text())
    assert metadata.get("meta_backend_for") is None


def test_a_lock_naming_a_gallery_the_config_lacks_is_a_config_error(fleet: Fleet) -> None:
    fleet.push_signed("stable", "v1")
    fleet.entries = [{"name": "echo", "uri": fleet.ref("stable")}]
    config = fleet.signed_config()
    lock = fleet.lock(config, ["echo"])
    elsewhere = lock.model_copy(update={"backends": tuple(
        entry.model_copy(update={"gallery": "elsewhere"}) for entry in lock.backends)})  # fmt: skip
    result = fleet.preload(config, elsewhere).results[0]
    assert result.exit_code == 2 and "names gallery 'elsewhere'" in (
        result.error.message if result.error else ""
    )
    assert not (fleet.backends / "echo").exists()
