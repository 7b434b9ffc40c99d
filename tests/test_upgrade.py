"""Upgrade and rollback against the real registry: what is fetched, what is refused, what stays."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from gallery.place.metadata import read_metadata
from gallery.place.swap import StateDir

from .faulty_proxy import Faults, faulty_proxy
from .registry_server import LAYER_GZIP, Registry, digest_of, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes
from .test_install import RUN_SH, Env

SHARED = gz(tar_bytes([RUN_SH, file("lib/shared.so", b"s" * 50_000)]))


def version_layer(version: str) -> bytes:
    return gz(
        tar_bytes([file(f"lib/{version}.so", version.encode() * 1000), file("VERSION", version.encode())])
    )


@pytest.fixture
def env(tmp_path: Path, registry: Registry) -> Env:
    return Env(tmp_path, registry)


def blob_requests(faults: Faults) -> list[str]:
    return [path for method, path, _ in faults.seen if "/blobs/" in path and method == "GET"]


def test_upgrade_fetches_only_the_changed_layer_and_noop_fetches_nothing(env: Env) -> None:
    env.push("v1", [(SHARED, LAYER_GZIP), (version_layer("v1"), LAYER_GZIP)])
    faults = Faults()
    with faulty_proxy(env.registry.url, faults) as proxy:
        env.entries = [{"name": "echo", "uri": f"{proxy}/{env.repo}:stable"}]
        env.registry.push_image(env.repo, "stable", [(SHARED, LAYER_GZIP), (version_layer("v1"), LAYER_GZIP)])
        config = env.config(insecure_registries=[proxy])
        assert env.installer(config).install_one("echo").status == "installed"
        v2 = env.push("stable", [(SHARED, LAYER_GZIP), (version_layer("v2"), LAYER_GZIP)])

        faults.seen.clear()
        result = env.installer(config).upgrade_one("echo")
        assert result.status == "upgraded" and result.digest == v2, result.error
        assert blob_requests(faults) == [f"/v2/{env.repo}/blobs/{digest_of(version_layer('v2'))}"]
        assert (env.backends / "echo" / "VERSION").read_text() == "v2"
        assert not (env.backends / "echo" / "lib" / "v1.so").exists()

        faults.seen.clear()
        again = env.installer(config).upgrade_one("echo")
        assert again.status == "unchanged" and again.bytes_fetched == 0
        assert [(m, p) for m, p, _ in faults.seen] == [("HEAD", f"/v2/{env.repo}/manifests/stable")]

    rolled = env.installer(config).rollback("echo")
    assert rolled.status == "rolled-back" and (env.backends / "echo" / "VERSION").read_text() == "v1"
    metadata = read_metadata(env.backends / "echo")
    assert metadata is not None and metadata.digest == rolled.digest != v2


def test_upgrade_through_an_entry_mirror_when_the_primary_is_down(env: Env) -> None:
    env.push("v1", [(SHARED, LAYER_GZIP), (version_layer("v1"), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("v1")}]
    assert env.installer(env.config()).install_one("echo").status == "installed"
    v2 = env.push("v2", [(SHARED, LAYER_GZIP), (version_layer("v2"), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": f"127.0.0.1:9/{env.repo}:v2", "mirrors": [env.ref("v2")]}]
    config = env.config(insecure_registries=[env.registry.host, "127.0.0.1:9"])
    result = env.installer(config).upgrade_one("echo")
    assert result.status == "upgraded" and result.digest == v2 and result.candidate == env.ref("v2")


def test_dry_run_changes_nothing_and_upgrade_needs_an_installed_backend(env: Env) -> None:
    env.push("v1", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    config = env.config()
    missing = env.installer(config).upgrade_one("echo")
    assert missing.exit_code == 2 and "gallery install echo" in (missing.error.hint or "")  # type: ignore[union-attr]
    env.installer(config).install_one("echo")
    before = (env.backends / "echo" / "metadata.json").read_bytes()
    v2 = env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    planned = env.installer(config).upgrade(["echo"], dry_run=True)
    assert [(r.status, r.digest) for r in planned.results] == [("would-upgrade", v2)]
    assert (env.backends / "echo" / "metadata.json").read_bytes() == before
    assert not StateDir(env.backends).kept("echo")


def test_meta_backend_upgrades_its_concrete_backend_and_all_skips_metas(env: Env) -> None:
    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "cpu-echo", "uri": env.ref("stable")},
                   {"name": "echo", "capabilities": {"default": "cpu-echo"}}]  # fmt: skip
    config = env.config()
    assert env.installer(config).install_one("echo").error is None
    v2 = env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    via_meta = env.installer(config).upgrade_one("echo")
    assert via_meta.name == "cpu-echo" and via_meta.status == "upgraded" and via_meta.digest == v2
    everything = env.installer(config).upgrade([], all_installed=True)
    assert [(r.name, r.status) for r in everything.results] == [("cpu-echo", "unchanged")]


def test_upgrade_refused_when_the_new_signature_fails_the_policy(env: Env, tmp_path: Path) -> None:
    sigstore = SigstoreInstance()
    root = sigstore.write_trusted_root(tmp_path / "trusted_root.json")
    v1 = env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    push_signature(env.registry, env.repo, v1, sigstore.sign_image(v1))
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    policy = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
    config = env.config(verification=policy, trusted_root=str(root), require_integrity=True)
    assert env.installer(config).install_one("echo").verified
    before = (env.backends / "echo" / "metadata.json").read_bytes()
    v2 = env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    mallory = "https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main"
    push_signature(env.registry, env.repo, v2, sigstore.sign_image(v2, identity=mallory))
    refused = env.installer(config).upgrade_one("echo")
    assert refused.exit_code == 3 and v2 in refused.error.message  # type: ignore[union-attr]
    assert (env.backends / "echo" / "metadata.json").read_bytes() == before
    assert not any(p.name == digest_of(version_layer("v2"))[7:] for p in (env.tmp / "cache").rglob("*"))


def test_tarball_entries_upgrade_with_their_sha256_checked(env: Env, tmp_path: Path) -> None:
    def tarball(version: str) -> tuple[Path, str]:
        data = gz(tar_bytes([RUN_SH, file("VERSION", version.encode())]))
        path = tmp_path / f"{version}.tar.gz"
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()

    v1, sha1 = tarball("v1")
    env.entries = [{"name": "tb", "uri": f"file://{v1}", "sha256": sha1}]
    assert env.installer(env.config()).install_one("tb").status == "installed"
    assert env.installer(env.config()).upgrade_one("tb").status == "unchanged"
    v2, sha2 = tarball("v2")
    env.entries = [{"name": "tb", "uri": f"file://{v2}", "sha256": "0" * 64}]
    wrong = env.installer(env.config()).upgrade_one("tb")
    assert wrong.exit_code == 3 and (env.backends / "tb" / "VERSION").read_text() == "v1"
    env.entries = [{"name": "tb", "uri": f"file://{v2}"}]  # no sha256: strict mode refuses, first
    strict = env.installer(env.config(require_integrity=True)).upgrade_one("tb")
    assert strict.exit_code == 3 and "sha256" in strict.error.message  # type: ignore[union-attr]
    env.entries = [{"name": "tb", "uri": f"file://{v2}", "sha256": sha2}]
    assert env.installer(env.config()).upgrade_one("tb").status == "upgraded"
    assert (env.backends / "tb" / "VERSION").read_text() == "v2"


def test_localai_installed_backend_is_upgraded_in_place(env: Env) -> None:
    legacy = env.backends / "echo"
    legacy.mkdir(parents=True)
    (legacy / "run.sh").write_text("#!/bin/sh\necho localai\n")
    (legacy / "stale-file").write_text("left by LocalAI")
    (legacy / "metadata.json").write_text(
        json.dumps({"name": "echo", "gallery_url": "x", "installed_at": "2025-01-01T00:00:00Z"})
    )
    digest = env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    result = env.installer(env.config()).upgrade_one("echo")
    assert result.status == "upgraded" and result.digest == digest
    assert not (legacy / "stale-file").exists()
    rolled = env.installer(env.config()).rollback("echo")
    assert rolled.status == "rolled-back" and (legacy / "stale-file").exists()


def test_cli_upgrade_rollback_and_usage(env: Env) -> None:
    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    env.config()
    runner = CliRunner()
    config = ["--config", str(env.tmp / "gallery.yaml")]
    assert runner.invoke(app, [*config, "install", "echo"]).exit_code == 0
    env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    assert runner.invoke(app, [*config, "upgrade"]).exit_code == 2
    upgraded = runner.invoke(app, [*config, "upgrade", "--all", "--json"])
    assert upgraded.exit_code == 0 and json.loads(upgraded.stdout)["results"][0]["status"] == "upgraded"
    rolled = runner.invoke(app, [*config, "rollback", "echo"])
    assert rolled.exit_code == 0 and "rolled-back" in rolled.stdout
    again = runner.invoke(app, [*config, "rollback", "echo"])
    assert again.exit_code == 1 and "no previous version" in again.stderr


CONCURRENT = """
import sys, httpx
from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.verify.signatures import SigstoreVerifier
from pathlib import Path
config = load_config(Path(sys.argv[1]))
with httpx.Client(trust_env=False) as client:
    installer = Installer(config, client=client, verifier=SigstoreVerifier(), detector=lambda: HostFacts("linux", "amd64"))
    result = installer.upgrade_one("echo")
print(result.status, result.digest, result.error)
"""


def test_two_processes_upgrading_the_same_backend(env: Env) -> None:
    big = gz(tar_bytes([RUN_SH, *(file(f"lib/f{i}", bytes([i % 256]) * 20_000) for i in range(200))]))
    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    config = env.config()
    env.installer(config).install_one("echo")
    v2 = env.push("stable", [(big, LAYER_GZIP)])
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(env.tmp / "gallery.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # both drained at once: neither waits on our reads
        outputs = list(pool.map(lambda p: p.communicate(timeout=120), processes))
    statuses = sorted((out.split() or ["crashed"])[0] for out, _ in outputs)
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert statuses == ["unchanged", "upgraded"], outputs  # the second waited, then found v2 in place
    assert read_metadata(env.backends / "echo").digest == v2  # type: ignore[union-attr]
    assert len(StateDir(env.backends).kept("echo")) == 1


def test_a_held_lock_times_out_with_a_clear_message(env: Env) -> None:
    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    config = env.config(timeouts={"lock": 0.3})
    env.installer(config).install_one("echo")
    from gallery.filelocks import backend_lock

    with backend_lock(StateDir(env.backends).root, "echo", timeout=1):
        result = env.installer(config).upgrade_one("echo")
        listed = CliRunner().invoke(app, ["--config", str(env.tmp / "gallery.yaml"), "list", "--installed"])
    assert result.exit_code == 1 and "another gallery process is changing echo" in result.error.message  # type: ignore[union-attr]
    assert "timeouts.lock" in (result.error.hint or "")  # type: ignore[union-attr]
    assert listed.exit_code == 0 and "echo" in listed.stdout  # readers never wait


def test_upgrade_verifies_a_backend_installed_before_its_gallery_had_a_policy(
    env: Env, tmp_path: Path
) -> None:
    sigstore = SigstoreInstance()
    root = sigstore.write_trusted_root(tmp_path / "trusted_root.json")
    digest = env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    assert not env.installer(env.config()).install_one("echo").verified
    push_signature(env.registry, env.repo, digest, sigstore.sign_image(digest))
    policy = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
    config = env.config(verification=policy, trusted_root=str(root))
    result = env.installer(config).upgrade_one("echo")
    assert result.status == "upgraded" and result.digest == digest and result.verified
    metadata = read_metadata(env.backends / "echo")
    assert metadata is not None and metadata.verification is not None and metadata.verification.verified
    assert env.installer(config).upgrade_one("echo").status == "unchanged"


def test_a_backend_uninstalled_while_upgrade_waited_for_its_lock_is_not_reinstalled(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process removed it between upgrade's first look and the backend lock: upgrade
    says it is not installed instead of installing it anew."""
    from gallery.operations.store import BackendStore

    env.push("stable", [(version_layer("v1"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("stable")}]
    config = env.config()
    assert env.installer(config).install_one("echo").error is None
    env.push("stable", [(version_layer("v2"), LAYER_GZIP), (gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    monkeypatch.setattr(BackendStore, "current", lambda self, name: None)  # gone, as seen under the lock
    result = env.installer(config).upgrade_one("echo")
    assert result.exit_code == 2 and "is not installed" in (result.error.message if result.error else "")
    assert (env.backends / "echo" / "VERSION").read_text() == "v1"
