"""What a registry can fail with, and how an HTTP response becomes one of those errors."""

from __future__ import annotations

import json

import httpx

from gallery.errors import SourceUnavailable
from gallery.net.client import read_capped
from gallery.oci.registry.endpoint import Endpoint

__all__ = ["ManifestNotFound", "RegistryError", "RegistryUnauthorized", "registry_error"]

_MAX_ERROR_BODY = 4096


class RegistryError(SourceUnavailable):
    """A registry could not give us what we asked for."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ManifestNotFound(RegistryError):
    """MANIFEST_UNKNOWN / NAME_UNKNOWN / 404: the next candidate may have it."""


class RegistryUnauthorized(RegistryError):
    """401/403 after authenticating."""


def registry_error(endpoint: Endpoint, repo: str, path: str, response: httpx.Response) -> RegistryError:
    body = read_capped(response, _MAX_ERROR_BODY) if response.request.method != "HEAD" else b""
    code = ""
    try:
        errors = json.loads(body).get("errors") or []
        code = str(errors[0].get("code", "")) if errors else ""
    except (ValueError, AttributeError, IndexError):
        pass
    where = f"{endpoint}/{repo}/{path}"
    detail = f"HTTP {response.status_code}" + (f" {code}" if code else "")
    if response.status_code == 404 or code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"):
        return ManifestNotFound(f"{where}: not found ({detail})")
    if response.status_code in (401, 403):
        return RegistryUnauthorized(
            f"{where}: access denied ({detail})", hint="check docker_config credentials"
        )
    return RegistryError(f"{where}: {detail}")
