"""The one place HTTP clients are built. Callers may inject their own transport (tests do)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import certifi
import httpx

from . import __version__
from .config import Config

__all__ = ["make_http_client", "make_tls_context", "raw_chunks"]


def make_tls_context() -> ssl.SSLContext:
    """Certificate-verifying TLS client context built without reading the environment.

    ``ssl.create_default_context()`` (which httpx uses) honours ``SSLKEYLOGFILE`` even with
    ``trust_env=False``; a library that promises to read no environment cannot use it. The
    ``PROTOCOL_TLS_CLIENT`` defaults already require certificates, check host names and refuse
    anything older than TLS 1.2.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=certifi.where())
    return context


def make_http_client(config: Config, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client honouring the config's timeouts.

    ``trust_env=False``: no proxy variables, no SSL_CERT_FILE, no .netrc; the library reads no
    environment. Redirects are not followed by default: each caller decides, because credentials
    must never follow a redirect to another host.
    """
    return httpx.Client(
        trust_env=False,
        verify=make_tls_context(),
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(config.timeouts.read, connect=config.timeouts.connect),
        headers={"User-Agent": f"gallery/{__version__}"},
    )


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent (no Content-Encoding decoding: digests are over the bytes as stored),
    in network-sized chunks so that bytes received before a dropped connection are kept."""
    try:
        yield from response.iter_raw()
    except httpx.StreamConsumed:  # a response built in memory (e.g. a test transport)
        yield response.content
