"""A response body read as it arrives, refused once it passes its cap."""

from __future__ import annotations

import httpx

from gallery.net.client import raw_chunks
from gallery.oci.registry.errors import RegistryError

__all__ = ["capped_body"]


def capped_body(response: httpx.Response, cap: int, *, where: str, setting: str) -> bytes:
    """The body as it arrives, refused once it passes ``cap`` (the declared length first)."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise RegistryError(f"{where}: {declared} bytes is over {setting} ({cap})")
    chunks, total = [], 0
    for chunk in raw_chunks(response):
        total += len(chunk)
        if total > cap:
            raise RegistryError(f"{where}: more than {setting} ({cap})")
        chunks.append(chunk)
    return b"".join(chunks)
