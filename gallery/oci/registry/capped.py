"""A response body read as it arrives, refused once it passes its cap."""

from __future__ import annotations

import httpx

from gallery.net.client import read_capped
from gallery.oci.registry.errors import RegistryError

__all__ = ["capped_body"]


def capped_body(response: httpx.Response, cap: int, *, where: str, setting: str) -> bytes:
    """The body as it arrives, refused (a ``RegistryError``) once it passes ``cap``."""
    declared = response.headers.get("Content-Length")

    def too_large() -> RegistryError:
        if declared and declared.isdigit() and int(declared) > cap:
            return RegistryError(f"{where}: {declared} bytes is over {setting} ({cap})")
        return RegistryError(f"{where}: more than {setting} ({cap})")

    return read_capped(response, cap, too_large)
