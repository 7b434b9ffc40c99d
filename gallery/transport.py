"""The one place HTTP clients are built. Callers may inject their own transport (tests do)."""

from __future__ import annotations

import httpx

from . import __version__
from .config import Config

__all__ = ["make_http_client"]


def make_http_client(config: Config, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client honouring the config's timeouts.

    ``trust_env=False``: no proxy variables, no SSL_CERT_FILE, no .netrc; the library reads no
    environment. Redirects are not followed by default: each caller decides, because credentials
    must never follow a redirect to another host.
    """
    return httpx.Client(
        trust_env=False,
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(config.timeouts.read, connect=config.timeouts.connect),
        headers={"User-Agent": f"gallery/{__version__}"},
    )
