from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gallery.config.models import Config, load_config
from gallery.errors import ConfigError
from gallery.verify.policy import VerificationPolicy

from .conftest import REPO

POLICY = {
    "issuer": "https://token.actions.githubusercontent.com",
    "identity_regex": r"^https://github\.com/org/repo/\.github/workflows/build\.yml@refs/heads/main$",
    "not_before": "2026-05-01T00:00:00Z",
}


def test_full_config_loads_with_paths_relative_to_the_file(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_config(
        galleries=[
            {
                "name": "localai",
                "url": "https://example.org/index.yaml",
                "mirrors": ["./mirror.yaml"],
                "verification": POLICY,
            },
            {"name": "local", "url": "indexes/local.yaml", "trusted_root": "roots/trusted_root.json"},
        ],
        require_integrity=True,
        trusted_root="./trusted_root.json",
        insecure_registries=["127.0.0.1:5000"],
        registry_mirrors={"index.docker.io": ["mirror.internal:5000", "mirror.internal:5000/dockerhub"]},
        docker_config="docker/config.json",
        keep_generations=2,
        timeouts={"connect": 3, "read": 30},
        limits={"max_index_bytes": 2048},
        platform="linux/arm64",
    )
    config = load_config(path)
    assert config.backends_path == tmp_path / "roots" / "backends"
    assert config.cache_path == tmp_path / "roots" / "cache"
    assert config.trusted_root == str(tmp_path / "trusted_root.json")
    assert config.docker_config == tmp_path / "docker" / "config.json"
    assert config.registry_mirrors == {
        "docker.io": ("mirror.internal:5000", "mirror.internal:5000/dockerhub")
    }
    assert config.galleries[0].mirrors == (str(tmp_path / "mirror.yaml"),)
    assert config.galleries[1].url == str(tmp_path / "indexes" / "local.yaml")
    assert config.galleries[1].trusted_root == str(tmp_path / "roots" / "trusted_root.json")
    policy = config.galleries[0].verification
    assert policy is not None and policy.not_before == datetime(2026, 5, 1, tzinfo=UTC)
    assert config.require_integrity is True and config.limits.max_index_bytes == 2048


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {
                "galleries": [
                    {"name": "g", "url": "i.yaml", "verification": {**POLICY, "identity_regex": "(unclosed"}}
                ]
            },
            "does not compile",
        ),
        (
            {"galleries": [{"name": "g", "url": "i.yaml", "verification": {"issuer": "https://x"}}]},
            "exactly one of 'identity' or 'identity_regex'",
        ),
        (
            {"galleries": [{"name": "g", "url": "i.yaml", "verification": {**POLICY, "issuer_regex": ".*"}}]},
            "exactly one of 'issuer' or 'issuer_regex'",
        ),
        (
            {
                "galleries": [
                    {
                        "name": "g",
                        "url": "i.yaml",
                        "verification": {**POLICY, "not_before": "2026-05-01T00:00:00"},
                    }
                ]
            },
            "time zone",
        ),
        (
            {"galleries": [{"name": "g", "url": "i.yaml", "verificaton": POLICY}]},
            "galleries[0].verificaton: unknown key",
        ),
        ({"backend_path": "x"}, "backend_path: unknown key"),
        ({"galleries": [{"name": "../x", "url": "i.yaml"}]}, "safe single path component"),
        ({"galleries": [{"name": "g", "url": "i.yaml"}, {"name": "g", "url": "j.yaml"}]}, "used twice"),
        ({"galleries": [{"name": "g", "url": "s3://bucket/i.yaml"}]}, "unsupported scheme"),
        ({"galleries": [{"name": "g", "url": "i.yaml", "require_signed_index": True}]}, "need a policy"),
        ({"galleries": [{"name": "g", "url": "i.yaml", "max_index_age": "P7D"}]}, "need a policy"),
        (
            {
                "galleries": [
                    {
                        "name": "g",
                        "url": "i.yaml",
                        "max_index_age": "-P1D",
                        "index_verification": {"issuer": "https://i", "identity": "x"},
                    }
                ]
            },
            "must be positive",
        ),
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"capability": "NVIDIA GPU"}, "capability"),
        ({"platform": "amd64"}, "OCI platform"),
        ({"insecure_registries": ["not a host"]}, "registry host"),
        ({"registry_mirrors": {"docker.io": ["a"], "index.docker.io": ["b"]}}, "twice"),
        ({"keep_generations": -1}, "keep_generations"),
        ({"timeouts": {"connect": 0}}, "timeouts.connect"),
    ],
)
def test_invalid_configs_are_explained(
    make_config: Callable[..., Path], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(make_config(**fields))
    assert message in caught.value.message
    assert caught.value.code() == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"format_version: 1\nbackends_path: [unclosed\n", "YAML error"),
        (b"- just\n- a list\n", "must be a YAML mapping"),
        (b"backends_path: ./b\n", "format_version is missing"),
        (b"format_version: 1\n" + b"x: " + b"y" * (2 * 1024 * 1024) + b"\n", "over the limit"),
    ],
)
def test_unreadable_configs(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file_gives_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.hint is not None and "--config" in caught.value.hint


def test_overrides_are_validated(make_config: Callable[..., Path]) -> None:
    config = load_config(make_config())
    assert config.with_overrides(require_integrity=True).require_integrity is True
    assert config.with_overrides(capability="nvidia").capability == "nvidia"
    assert config.with_overrides() is config
    with pytest.raises(ConfigError):
        config.with_overrides(capability="bad key!")


def test_programmatic_config_needs_absolute_paths(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="relative path"):
        Config.model_validate({"format_version": 1, "backends_path": "rel"})
    config = Config(format_version=1, backends_path=tmp_path / "b", cache_path=tmp_path / "c")
    assert config.galleries == ()


def test_policy_regexes_match_in_full() -> None:
    policy = VerificationPolicy.model_validate(
        {
            "issuer": "https://token.actions.githubusercontent.com",
            "identity_regex": r"https://github\.com/org/repo/.*",
        }
    )
    assert policy.matches_identity("https://github.com/org/repo/.github/workflows/x.yml@refs/heads/main")
    assert not policy.matches_identity("https://evil.example/?https://github.com/org/repo/x")
    assert not policy.matches_identity("https://github.com/org/repository-other")
    assert policy.matches_issuer("https://token.actions.githubusercontent.com")
    assert not policy.matches_issuer("https://token.actions.githubusercontent.com.evil")
    anchored_prefix = VerificationPolicy.model_validate(
        {"issuer_regex": "https://accounts", "identity": "a@b"}
    )
    assert not anchored_prefix.matches_issuer("https://accounts.google.com")


def test_shipped_configs_are_valid() -> None:
    localai = load_config(REPO / "galleries" / "localai.yaml")
    policy = localai.galleries[0].verification
    assert policy is not None
    assert policy.matches_identity(
        "https://github.com/mudler/LocalAI/.github/workflows/backend_merge.yml@refs/heads/master"
    )
    assert policy.matches_identity(
        "https://github.com/mudler/LocalAI/.github/workflows/backend_merge.yml@refs/tags/v3.1.0"
    )
    assert not policy.matches_identity(
        "https://github.com/mudler/LocalAI/.github/workflows/other.yml@refs/heads/master"
    )
    demo = load_config(REPO / "galleries" / "demo" / "gallery.yaml")
    assert demo.galleries[0].url == str(REPO / "galleries" / "demo" / "index.yaml")
