"""Where a repository is fetched from (a registry or one of its mirrors), and the credentials a
Docker ``config.json`` gives for registries."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gallery.errors import OperationalError
from gallery.oci.references import DOCKER_HUB, OciReference

__all__ = ["Endpoint", "load_docker_credentials"]


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


def load_docker_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """Registry host -> (username, password) from a Docker ``config.json`` (``auths`` only).

    Raises:
        OperationalError: the file cannot be read or is not a Docker config.
    """
    try:
        with path.open("rb") as handle:
            raw = json.loads(handle.read(1024 * 1024))
    except (OSError, ValueError) as exc:
        raise OperationalError(f"cannot read docker_config {path}: {exc}") from exc
    result: dict[str, tuple[str, str]] = {}
    auths = raw.get("auths", {}) if isinstance(raw, dict) else {}
    for key, value in auths.items() if isinstance(auths, dict) else ():
        if not isinstance(value, dict):
            continue
        host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
        if value.get("auth"):
            user, _, password = base64.b64decode(value["auth"]).decode("utf-8", "replace").partition(":")
        else:
            user, password = str(value.get("username", "")), str(value.get("password", ""))
        if user:
            result[DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host] = (
                user,
                password,
            )
    return result
