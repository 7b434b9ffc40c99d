"""Where a repository is fetched from (a registry or one of its mirrors), and what a Docker
``config.json`` says about registries' credentials."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gallery.errors import OperationalError
from gallery.oci.references import DOCKER_HUB, OciReference

__all__ = ["DockerConfig", "Endpoint", "load_docker_config", "load_docker_credentials"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a repository is fetched from: the registry itself or one of its mirrors."""

    host: str  # API host[:port]
    prefix: str = ""  # path prefix in front of the repository (mirrors such as host/dockerhub)
    insecure: bool = False

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    def repository(self, ref: OciReference) -> str:
        return f"{self.prefix}/{ref.repository}" if self.prefix else ref.repository

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """What a Docker ``config.json`` says about registries: ``auths`` (host -> (user, password)),
    ``credHelpers`` (host -> helper name) and ``credsStore`` (the helper for every other host)."""

    auths: dict[str, tuple[str, str]]
    cred_helpers: dict[str, str]
    creds_store: str | None


def load_docker_config(path: Path) -> DockerConfig:
    """Raises: OperationalError: the file cannot be read or is not a Docker config."""
    raw = _read_docker_config(path)
    helpers = raw.get("credHelpers", {})
    store = raw.get("credsStore")
    return DockerConfig(
        auths=load_docker_credentials(path, raw),
        cred_helpers={_host(k): str(v) for k, v in helpers.items() if isinstance(v, str) and v}
        if isinstance(helpers, dict)
        else {},
        creds_store=store if isinstance(store, str) and store else None,
    )


def _read_docker_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = json.loads(handle.read(1024 * 1024))
    except (OSError, ValueError) as exc:
        raise OperationalError(f"cannot read docker_config {path}: {exc}") from exc
    return raw if isinstance(raw, dict) else {}


def _host(key: str) -> str:
    host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


def load_docker_credentials(path: Path, raw: dict[str, Any] | None = None) -> dict[str, tuple[str, str]]:
    """Registry host -> (username, password) from a Docker ``config.json``'s ``auths``.

    Raises:
        OperationalError: the file cannot be read or is not a Docker config.
    """
    raw = raw if raw is not None else _read_docker_config(path)
    result: dict[str, tuple[str, str]] = {}
    auths = raw.get("auths", {}) if isinstance(raw, dict) else {}
    for key, value in auths.items() if isinstance(auths, dict) else ():
        if not isinstance(value, dict):
            continue
        host = _host(key)
        if value.get("auth"):
            user, _, password = base64.b64decode(value["auth"]).decode("utf-8", "replace").partition(":")
        else:
            user, password = str(value.get("username", "")), str(value.get("password", ""))
        if user:
            result[host] = (user, password)
    return result
