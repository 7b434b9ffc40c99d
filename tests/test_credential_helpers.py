"""Docker credential helpers (credHelpers, credsStore, our credential_helpers), run as Docker runs
them: ``docker-credential-NAME get`` with the server on stdin, JSON on stdout."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from gallery.config.models import load_config
from gallery.errors import OperationalError
from gallery.oci.references import parse_reference
from gallery.oci.registry import Endpoint, RegistryClient, RetryPolicy
from gallery.oci.registry.errors import RegistryUnauthorized

FAST = RetryPolicy(attempts=1, initial_wait=0)
MANIFEST = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}  # fmt: skip


def helper(tmp_path: Path, name: str, body: str) -> Path:
    """A credential helper that logs its stdin and environment, then runs ``body``."""
    path = tmp_path / f"docker-credential-{name}"
    log = tmp_path / f"{name}.log"
    path.write_text(f'#!/bin/sh\nread server\necho "$server|$HOME|$GALLERY_TEST_LEAK" >> {log}\n{body}\n')
    path.chmod(0o755)
    return path


def registry(user: str, secret: str, seen: list[str | None]) -> httpx.Client:
    expected = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        body = json.dumps(MANIFEST).encode()
        headers = {"Content-Type": str(MANIFEST["mediaType"]), "Docker-Content-Digest": "sha256:" + "1" * 64}
        return httpx.Response(200, content=body, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handler), trust_env=False)


def config_with(tmp_path: Path, **fields: object):  # type: ignore[no-untyped-def]
    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump({"format_version": 1, "backends_path": "b", "cache_path": "c", **fields}))
    return load_config(path)


def fetch(client: RegistryClient, ref: str = "reg.example/org/app:1") -> None:
    parsed = parse_reference(ref)
    client.resolve_tag(Endpoint(parsed.registry), parsed)


def test_the_docker_configs_cred_helper_answers_once_per_host_with_only_the_configured_env(
    tmp_path: Path,
) -> None:
    program = helper(
        tmp_path, "test", 'echo \'{"ServerURL":"reg.example","Username":"u","Secret":"s3cret"}\''
    )
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"credHelpers": {"reg.example": str(program)}}))
    config = config_with(tmp_path, docker_config=str(docker), credential_helper_env={"HOME": "/home/helper"})
    seen: list[str | None] = []
    client = RegistryClient.from_config(config, registry("u", "s3cret", seen), retry=FAST)
    fetch(client)
    fetch(client)
    assert (
        tmp_path / "test.log"
    ).read_text() == "reg.example|/home/helper|\n"  # asked once; nothing inherited
    assert seen[0] is None and seen.count(None) == 1


def test_our_credential_helpers_win_over_creds_store_and_not_found_means_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GALLERY_TEST_LEAK", "leaked")
    store = helper(tmp_path, "store", 'echo "credentials not found in native keychain"; exit 1')
    ours = helper(tmp_path, "ours", 'echo \'{"Username":"me","Secret":"tok"}\'')
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"credsStore": str(store)}))
    config = config_with(tmp_path, docker_config=str(docker), credential_helpers={"reg.example": str(ours)})
    seen: list[str | None] = []
    fetch(RegistryClient.from_config(config, registry("me", "tok", seen), retry=FAST))
    assert not (tmp_path / "store.log").exists() and (tmp_path / "ours.log").exists()
    # Another host falls to credsStore, which has nothing: anonymous, and the 401 is the answer.
    other: list[str | None] = []
    with pytest.raises(RegistryUnauthorized, match="requires credentials we do not have"):
        fetch(
            RegistryClient.from_config(config, registry("x", "y", other), retry=FAST), "other.example/a/b:1"
        )
    assert (tmp_path / "store.log").read_text() == "other.example||\n"


def test_a_failing_helper_says_which_and_how_to_try_it(tmp_path: Path) -> None:
    broken = helper(tmp_path, "broken", 'echo "gpg: decryption failed" >&2; exit 2')
    config = config_with(tmp_path, credential_helpers={"reg.example": str(broken)})
    with pytest.raises(OperationalError, match="failed \\(exit 2\\): gpg: decryption failed") as caught:
        fetch(RegistryClient.from_config(config, registry("u", "s", []), retry=FAST))
    assert "docker-credential-NAME get" in (caught.value.hint or "")


def test_helper_names_are_looked_up_in_fixed_directories_and_validated(tmp_path: Path) -> None:
    from gallery.errors import ConfigError
    from gallery.oci.registry.credentials import helper_program

    with pytest.raises(OperationalError, match="no docker-credential-nonexistent-helper in /usr/local/bin"):
        helper_program("nonexistent-helper")
    with pytest.raises(ConfigError, match="not a helper name or absolute path"):
        config_with(tmp_path, credential_helpers={"reg.example": "../evil"})
