"""Registry failures that outlived the retries (``gallery.net.retry``), as one RegistryError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from gallery.net.retry import TRANSIENT_STATUS, RetryPolicy, TransientStatus, retry_after
from gallery.oci.registry.errors import RegistryError

__all__ = ["TRANSIENT_STATUS", "RetryPolicy", "TransientStatus", "as_registry_errors", "retry_after"]


@contextmanager
def as_registry_errors(where: str, attempts: int) -> Iterator[None]:
    """Transient failures that outlived the retries become one RegistryError naming the place."""
    try:
        yield
    except TransientStatus as exc:
        raise RegistryError(f"{where}: {exc} (after {attempts} attempts)") from exc
    except httpx.TimeoutException as exc:
        raise RegistryError(f"{where}: timed out (after {attempts} attempts)") from exc
    except httpx.TransportError as exc:
        raise RegistryError(f"{where}: {type(exc).__name__}: {exc} (after {attempts} attempts)") from exc
