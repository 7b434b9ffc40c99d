"""Installing from a real registry: the whole pipeline, its failure rules, and what stays on disk."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.catalog.capability import HostFacts
from gallery.config.models import Config, load_config
from gallery.oci.references import OciReference
from gallery.oci.registry import Endpoint, RegistryClient, RetryPolicy
from gallery.operations.installer import Installer
from gallery.place.metadata import read_metadata
from gallery.verify.signatures import SigstoreVerifier

from .registry_server import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, Registry, digest_of
from .tarbuild import directory, file, gz, symlink, tar_bytes, zst

RUN_SH = file("run.sh", b"#!/bin/sh\necho backend\n", mode=0o755)


def cpu_host() -> HostFacts:
    return HostFacts("linux", "amd64")


class Env:
    """A config + index in tmp_path, pointing at images pushed to the session registry."""

    def __init__(self, tmp_path: Path, registry: Registry) -> None:
        self.tmp = tmp_path
        self.registry = registry
        self.repo = f"backends/{secrets.token_hex(4)}"
        self.entries: list[dict[str, Any]] = []

    def ref(self, tag: str, repo: str | None = None) -> str:
        return f"{self.registry.host}/{repo or self.repo}:{tag}"

    def push(self, tag: str, layers: list[tuple[bytes, str]], **kwargs: Any) -> str:
        digest, _ = self.registry.push_image(self.repo, tag, layers, **kwargs)
        return digest

    def config(self, *, verification: dict[str, str] | None = None, **fields: Any) -> Config:
        index = self.tmp / "index.yaml"
        index.write_text(yaml.safe_dump(self.entries))
        gallery: dict[str, Any] = {"name": "test", "url": str(index)}
        if verification:
            gallery["verification"] = verification
        data = {
            "format_version": 1,
            "backends_path": "./backends",
            "cache_path": "./cache",
            "insecure_registries": [self.registry.host],
            "capability": "default",
            "galleries": [gallery],
            **fields,
        }
        path = self.tmp / "gallery.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path)

    def installer(self, config: Config, **kwargs: Any) -> Installer:
        client = httpx.Client(trust_env=False, timeout=10)
        registry = kwargs.pop("registry", None) or RegistryClient.from_config(
            config, client, retry=RetryPolicy(attempts=2, initial_wait=0)
        )
        return Installer(
            config,
            client=client,
            verifier=SigstoreVerifier(),
            detector=cpu_host,
            registry=registry,
            **kwargs,
        )

    @property
    def backends(self) -> Path:
        return self.tmp / "backends"

    def visible(self) -> list[str]:
        """The backends directory as an operator sees it (our .gallery state dir aside)."""
        if not self.backends.exists():
            return []
        return sorted(p.name for p in self.backends.iterdir() if p.name != ".gallery")

    def leftovers(self) -> list[Path]:
        state = self.backends / ".gallery"
        return (
            [p for p in state.rglob("*") if p.parent.name in ("staging", "trash")] if state.exists() else []
        )


@pytest.fixture
def env(tmp_path: Path, registry: Registry) -> Env:
    return Env(tmp_path, registry)


def test_install_gzip_and_zstd_layers_with_whiteouts(env: Env) -> None:
    lower = gz(
        tar_bytes([RUN_SH, file("lib/old.so", b"old"), file("lib/keep.so", b"keep"), directory("venv")])
    )
    upper = zst(
        tar_bytes(
            [file("lib/.wh.old.so"), file("lib/new.so", b"new"), symlink("venv/python", "/usr/bin/python3")]
        )
    )
    digest = env.push("latest-cpu", [(lower, LAYER_GZIP), (upper, LAYER_ZSTD)])
    env.entries = [{"name": "echo", "uri": env.ref("latest-cpu"), "version": "1.0"}]
    result = env.installer(env.config()).install_one("echo")
    assert result.error is None, result.error
    assert result.status == "installed" and result.digest == digest and not result.verified
    assert result.bytes_fetched == len(lower) + len(upper)
    assert any("no verification policy" in w for w in result.warnings)
    root = env.backends / "echo"
    assert sorted(p.name for p in (root / "lib").iterdir()) == ["keep.so", "new.so"]
    assert (root / "venv/python").readlink() == Path("/usr/bin/python3")
    metadata = read_metadata(root)
    assert metadata is not None
    assert metadata.format_version == 1 and metadata.digest == digest and metadata.manifest_digest == digest
    assert metadata.verification is not None and metadata.verification.verified is False
    assert [layer.digest for layer in metadata.layers] == [digest_of(lower), digest_of(upper)]
    files = {f["path"]: f for f in metadata.files}
    assert files["run.sh"]["sha256"] and files["venv/python"]["target"] == "/usr/bin/python3"
    assert "lib/old.so" not in files
    assert env.leftovers() == []


def test_reinstalling_the_same_digest_does_nothing(env: Env) -> None:
    env.push("v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("v1")}]
    config = env.config()
    assert env.installer(config).install_one("echo").status == "installed"
    before = (env.backends / "echo" / "metadata.json").read_bytes()
    again = env.installer(config).install_one("echo")
    assert again.status == "unchanged" and again.bytes_fetched == 0
    assert (env.backends / "echo" / "metadata.json").read_bytes() == before
    env.push("v1", [(gz(tar_bytes([RUN_SH, file("new")])), LAYER_GZIP)])  # the tag moves
    moved = env.installer(config).install_one("echo")
    assert moved.exit_code == 1 and "gallery upgrade echo" in (moved.error.hint or "")  # type: ignore[union-attr]


def test_multi_arch_index_installs_the_configured_platform(env: Env) -> None:
    amd, amd_doc = env.registry.push_image(
        env.repo, "amd", [(gz(tar_bytes([RUN_SH, file("arch", b"amd64")])), LAYER_GZIP)]
    )
    arm, arm_doc = env.registry.push_image(
        env.repo,
        "arm",
        [(gz(tar_bytes([RUN_SH, file("arch", b"arm64")])), LAYER_GZIP)],
        platform="linux/arm64",
    )
    size = lambda doc: len(json.dumps(doc).encode())  # noqa: E731
    index = env.registry.push_index(
        env.repo, "multi", [(amd, size(amd_doc), "linux/amd64"), (arm, size(arm_doc), "linux/arm64")]
    )
    env.entries = [{"name": "echo", "uri": env.ref("multi")}]
    result = env.installer(env.config(platform="linux/arm64")).install_one("echo")
    assert result.error is None and result.digest == index
    metadata = read_metadata(env.backends / "echo")
    assert metadata is not None and metadata.resolved_digest == index and metadata.manifest_digest == arm
    assert (env.backends / "echo" / "arch").read_text() == "arm64"


def test_entry_mirror_after_manifest_unknown_and_registry_mirrors_first(env: Env) -> None:
    digest = env.push("on-mirror", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("missing-tag"), "mirrors": [env.ref("on-mirror")]}]
    result = env.installer(env.config()).install_one("echo")
    assert result.error is None and result.digest == digest and result.candidate == env.ref("on-mirror")


def test_registry_mirror_is_tried_before_the_registry(env: Env, tmp_path: Path) -> None:
    digest = env.push("t", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    # The gallery names an unreachable registry; registry_mirrors sends pulls to our registry first.
    env.entries = [{"name": "echo", "uri": f"unreachable.invalid:5000/{env.repo}:t"}]
    config = env.config(
        registry_mirrors={"unreachable.invalid:5000": [env.registry.host]},
        insecure_registries=[env.registry.host, "unreachable.invalid:5000"],
    )
    result = env.installer(config).install_one("echo")
    assert result.error is None and result.digest == digest


def test_tag_moved_between_pinning_and_download_installs_the_pinned_digest(env: Env) -> None:
    first = env.push("moving", [(gz(tar_bytes([RUN_SH, file("which", b"first")])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("moving")}]
    config = env.config()

    class MovesTheTag(RegistryClient):
        def resolve_tag(self, endpoint: Endpoint, ref: OciReference) -> str:
            digest = super().resolve_tag(endpoint, ref)
            env.push("moving", [(gz(tar_bytes([RUN_SH, file("which", b"second")])), LAYER_GZIP)])
            return digest

    client = httpx.Client(trust_env=False, timeout=10)
    registry = MovesTheTag.from_config(config, client, retry=RetryPolicy(attempts=2, initial_wait=0))
    result = env.installer(config, registry=registry).install_one("echo")
    assert result.error is None and result.digest == first
    assert (env.backends / "echo" / "which").read_text() == "first"


def test_tampered_blob_installs_nothing_and_exits_3(env: Env) -> None:
    layer = gz(tar_bytes([RUN_SH, file("payload", b"genuine" * 100)]))
    env.push("t", [(layer, LAYER_GZIP)])
    data_path = env.registry.blob_data_path(digest_of(layer))
    original = data_path.read_bytes()
    data_path.write_bytes(original[:-30] + bytes(30))
    try:
        env.entries = [{"name": "echo", "uri": env.ref("t")}]
        result = env.installer(env.config()).install_one("echo")
    finally:
        data_path.write_bytes(original)
    assert result.exit_code == 3 and result.error is not None
    assert digest_of(layer) in result.error.message and env.ref("t") in result.error.message
    assert env.visible() == [] and env.leftovers() == []
    assert not any((env.tmp / "cache" / "blobs" / "sha256").glob("*"))


def test_hostile_layer_from_a_registry_fails_cleanly(env: Env) -> None:
    evil = tar_bytes([RUN_SH, symlink("escape", str(env.tmp)), file("escape/pwned", b"x")])
    env.push("evil", [(evil, LAYER_TAR)])
    env.entries = [{"name": "evil", "uri": env.ref("evil")}]
    result = env.installer(env.config()).install_one("evil")
    assert result.exit_code == 3 and "through the symlink" in result.error.message  # type: ignore[union-attr]
    assert not (env.tmp / "pwned").exists() and env.visible() == [] and env.leftovers() == []


def test_image_without_run_sh_is_refused(env: Env) -> None:
    env.push("t", [(gz(tar_bytes([file("not-a-backend")])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("t")}]
    result = env.installer(env.config()).install_one("echo")
    assert result.error is not None and "run.sh" in result.error.message
    assert env.visible() == [] and env.leftovers() == []


def test_strict_mode_refuses_before_writing_anything(env: Env) -> None:
    env.push("t", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [
        {"name": "echo", "uri": env.ref("t")},
        {"name": "tgz", "uri": "https://example.invalid/b.tar.gz"},
    ]
    config = env.config(require_integrity=True)
    batch = env.installer(config).install(["echo", "tgz"])
    assert [r.exit_code for r in batch.results] == [3, 3] and batch.exit_code == 3
    assert "strict mode" in batch.results[0].error.message  # type: ignore[union-attr]
    assert "no sha256" in batch.results[1].error.message  # type: ignore[union-attr]
    assert not (env.tmp / "backends").exists() and not (env.tmp / "cache" / "blobs").exists()


def test_a_policy_that_cannot_be_checked_refuses_the_image(env: Env) -> None:
    env.push("t", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("t")}]
    config = env.config(verification={"issuer": "https://issuer.example", "identity": "ci@example.org"})
    result = env.installer(config).install_one("echo")
    assert result.exit_code == 3 and "no signature found" in result.error.message  # type: ignore[union-attr]
    assert env.visible() == [] and not (env.tmp / "cache" / "blobs").exists()


def test_meta_backend_batch_and_uninstall(env: Env) -> None:
    env.push("cpu", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [
        {"name": "echo", "capabilities": {"default": "cpu-echo", "nvidia": "cuda-echo"}},
        {"name": "cpu-echo", "uri": env.ref("cpu"), "alias": "echo"},
    ]
    installer = env.installer(env.config())
    batch = installer.install(["nope", "echo"])
    assert [r.status for r in batch.results] == ["failed", "installed"] and batch.exit_code == 2
    assert env.visible() == ["cpu-echo", "echo"]
    meta = read_metadata(env.backends / "echo")
    assert meta is not None and meta.meta_backend_for == "cpu-echo"
    assert [b.name for b in installer.installed()] == ["cpu-echo", "echo"]
    assert installer.install(["nope", "echo"], fail_fast=True).results[-1].requested == "nope"
    removed = installer.uninstall(["echo"])
    assert removed.exit_code == 0 and env.visible() == [] and env.leftovers() == []
    assert installer.uninstall(["echo"]).exit_code == 2


def test_localai_installed_backends_are_listed(env: Env) -> None:
    legacy = env.backends / "cpu-llama-cpp"
    legacy.mkdir(parents=True)
    (legacy / "run.sh").write_text("#!/bin/sh\n")
    (legacy / "metadata.json").write_text(
        json.dumps(
            {
                "name": "cpu-llama-cpp",
                "gallery_url": "github:x/y/z",
                "installed_at": "2026-01-01T00:00:00Z",
                "digest": "",
            }
        )
    )
    env.entries = []
    installed = env.installer(env.config()).installed()
    assert [(b.name, b.written_by_localai) for b in installed] == [("cpu-llama-cpp", True)]


def test_cli_install_list_uninstall(env: Env, make_config: Callable[..., Path]) -> None:
    env.push("t", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries = [{"name": "echo", "uri": env.ref("t")}]
    env.config()
    config_path = str(env.tmp / "gallery.yaml")
    runner = CliRunner()
    result = runner.invoke(app, ["--config", config_path, "install", "echo", "missing", "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [r["status"] for r in data["results"]] == ["installed", "failed"]
    listed = runner.invoke(app, ["--config", config_path, "list", "--installed", "--json"])
    assert [b["name"] for b in json.loads(listed.stdout)["installed"]] == ["echo"]
    text = runner.invoke(app, ["--config", config_path, "install", "echo"])
    assert text.exit_code == 0 and "echo: unchanged" in text.stdout
    assert runner.invoke(app, ["--config", config_path, "uninstall", "echo"]).exit_code == 0
    assert env.visible() == []


def test_a_digest_in_the_uri_is_pinned_as_it_is_without_a_tag_lookup(env: Env) -> None:
    digest = env.push("real-tag", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    # The tag in the uri does not exist: with a digest present it must never be looked up.
    env.entries = [{"name": "echo", "uri": f"{env.ref('no-such-tag')}@{digest}"}]
    result = env.installer(env.config()).install_one("echo")
    assert result.error is None and result.digest == digest


def test_credentials_come_from_the_configured_docker_config(env: Env) -> None:
    docker = env.tmp / "docker-config.json"
    docker.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub-user:hub-pass").decode()},
        "quay.io": {"username": "q", "password": "p"},
    }}))  # fmt: skip
    env.entries = []
    config = env.config(docker_config=str(docker))
    client = RegistryClient.from_config(config, httpx.Client(trust_env=False))
    assert client.credentials == {"docker.io": ("hub-user", "hub-pass"), "quay.io": ("q", "p")}
