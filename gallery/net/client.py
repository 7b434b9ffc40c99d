"""The one place HTTP clients are built. Callers may inject their own transport (tests do)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import certifi
import httpx

from gallery import __version__
from gallery.config.models import Config
from gallery.errors import ConfigError

__all__ = [
    "IDENTITY",
    "InsecureRedirect",
    "RequestLog",
    "SpeedFloorTransport",
    "capped_chunks",
    "make_http_client",
    "make_tls_context",
    "raw_chunks",
    "read_capped",
    "stream_get",
]

_MAX_REDIRECTS = 10


class InsecureRedirect(httpx.HTTPError):
    """A redirect we refuse to follow: from https to plain http, or to something not http(s)."""


@contextmanager
def stream_get(
    client: httpx.Client, url: str, *, headers: dict[str, str] | None = None
) -> Iterator[httpx.Response]:
    """GET ``url`` as a stream, following redirects ourselves (for URLs that carry no
    credentials: indexes, tarballs, bundles on CDNs): never from https down to plain http, at
    most ten. Raises ``InsecureRedirect`` (an ``httpx.HTTPError``) for a refused one."""
    current = httpx.URL(url)
    for _hop in range(_MAX_REDIRECTS + 1):
        with client.stream("GET", current, headers=headers, follow_redirects=False) as response:
            if not response.is_redirect:
                yield response
                return
            target = current.join(response.headers.get("Location", ""))
            if target.scheme not in ("http", "https"):
                raise InsecureRedirect(f"{current} redirects to unsupported location {target}")
            if current.scheme == "https" and target.scheme == "http":
                raise InsecureRedirect(
                    f"{current} redirects to {target}: from https to plain http is refused"
                )
            current = target
    raise InsecureRedirect(f"{url}: more than {_MAX_REDIRECTS} redirects")


# Asked of servers whose bodies are read whole: a capped read counts the bytes that arrive, so a
# compressed body (a gzip or zstd bomb) must not be decoded behind its back.
IDENTITY = {"Accept-Encoding": "identity"}


def make_tls_context(extra_authorities: Path | None = None) -> ssl.SSLContext:
    """Certificate-verifying TLS client context built without reading the environment.

    ``ssl.create_default_context()`` (which httpx uses) honours ``SSLKEYLOGFILE`` even with
    ``trust_env=False``; a library that promises to read no environment cannot use it. The
    ``PROTOCOL_TLS_CLIENT`` defaults already require certificates, check host names and refuse
    anything older than TLS 1.2.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=certifi.where())
    if extra_authorities is not None:  # the config's tls_ca_bundle: a private CA, beside the public ones
        try:
            context.load_verify_locations(cafile=str(extra_authorities))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls_ca_bundle {extra_authorities} is not a readable PEM file of certificates: {exc}",
                hint="point tls_ca_bundle at your CA's certificate (PEM)",
            ) from exc
    return context


def make_http_client(
    config: Config,
    *,
    transport: httpx.BaseTransport | None = None,
    request_log: Callable[[str], None] | None = None,
) -> httpx.Client:
    """An httpx client honouring the config's timeouts and its speed floor; ``request_log`` hears
    one line per request (method, URL without its query, status or error, time).

    ``trust_env=False``: no proxy variables, no SSL_CERT_FILE, no .netrc; the library reads no
    environment. Redirects are not followed by default: each caller decides, because credentials
    must never follow a redirect to another host.
    """
    inner = transport or _transport(config)
    floored: httpx.BaseTransport = SpeedFloorTransport(
        inner, bytes_per_second=config.timeouts.min_speed, window=config.timeouts.read
    )
    return httpx.Client(
        trust_env=False,
        transport=floored if request_log is None else RequestLog(floored, request_log),
        follow_redirects=False,
        timeout=httpx.Timeout(config.timeouts.read, connect=config.timeouts.connect),
        headers={"User-Agent": f"gallery/{__version__}"},
    )


def _transport(config: Config) -> httpx.BaseTransport:
    """Direct, or through the configured ``proxy`` for every host ``no_proxy`` does not name."""
    tls = make_tls_context(config.tls_ca_bundle)
    direct = httpx.HTTPTransport(verify=tls, trust_env=False)
    if config.proxy is None:
        return direct
    proxied = httpx.HTTPTransport(verify=tls, trust_env=False, proxy=httpx.Proxy(config.proxy))
    return ProxyRouting(proxied, direct, config.no_proxy)


class RequestLog(httpx.BaseTransport):
    """``-v``'s request log. A URL's query (pre-signed redirect tokens) and credentials are never
    logged; headers are not either."""

    def __init__(self, inner: httpx.BaseTransport, log: Callable[[str], None]) -> None:
        self._inner = inner
        self._log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = f":{url.port}" if url.port else ""
        shown = f"{request.method} {url.scheme}://{url.host}{port}{url.path}{'?…' if url.query else ''}"
        started = time.monotonic()
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as exc:
            self._log(f"{shown} -> {type(exc).__name__}: {exc} ({_ms(started)})")
            raise
        length = response.headers.get("content-length")
        size = f", {length} bytes" if length else ""
        self._log(f"{shown} -> {response.status_code} ({_ms(started)}{size})")
        return response

    def close(self) -> None:
        self._inner.close()


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


class ProxyRouting(httpx.BaseTransport):
    """``no_proxy`` hosts go direct (``host``, ``host:port``, or ``.domain`` for its subdomains);
    everything else through the proxy. The proxy's own credentials (in its URL) go only to it."""

    def __init__(
        self, proxied: httpx.BaseTransport, direct: httpx.BaseTransport, no_proxy: tuple[str, ...]
    ) -> None:
        self._proxied = proxied
        self._direct = direct
        self._no_proxy = tuple(entry.lower() for entry in no_proxy)

    def bypasses(self, url: httpx.URL) -> bool:
        host = url.host.lower()
        with_port = f"{host}:{url.port}" if url.port else host
        for entry in self._no_proxy:
            if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
                return True
            if entry in (host, with_port):
                return True
        return False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._direct if self.bypasses(request.url) else self._proxied
        return transport.handle_request(request)

    def close(self) -> None:
        self._proxied.close()
        self._direct.close()


class SpeedFloorTransport(httpx.BaseTransport):
    """Every response body must keep up ``bytes_per_second`` over each ``window`` seconds.

    A read timeout only fires when nothing arrives for that long; a server dripping a byte just
    inside it would hold a download (or a 4 MB manifest read) open for days. Too slow is raised
    as ``httpx.ReadTimeout``, so it is retried (a blob resumes where it stopped) like any timeout.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        bytes_per_second: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._bytes_per_second = bytes_per_second
        self._window = window
        self._clock = clock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if self._bytes_per_second > 0:
            response.stream = _SpeedFloorStream(response.stream, request, self)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        self._inner.close()


class _SpeedFloorStream(httpx.SyncByteStream):
    def __init__(
        self, stream: httpx.SyncByteStream, request: httpx.Request, floor: SpeedFloorTransport
    ) -> None:
        self._stream = stream
        self._request = request
        self._floor = floor

    def __iter__(self) -> Iterator[bytes]:
        floor = self._floor
        started, received = floor._clock(), 0
        for chunk in self._stream:
            received += len(chunk)
            elapsed = floor._clock() - started
            if elapsed >= floor._window:
                if received < floor._bytes_per_second * elapsed:
                    raise httpx.ReadTimeout(
                        f"{received} bytes in {elapsed:.1f} s, under timeouts.min_speed "
                        f"({floor._bytes_per_second} bytes/s)",
                        request=self._request,
                    )
                started, received = floor._clock(), 0
            yield chunk

    def close(self) -> None:
        self._stream.close()


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent (no Content-Encoding decoding: digests are over the bytes as stored),
    in network-sized chunks so that bytes received before a dropped connection are kept."""
    try:
        yield from response.iter_raw()
    except httpx.StreamConsumed:  # a response built in memory (e.g. a test transport)
        yield response.content


def capped_chunks(
    response: httpx.Response, cap: int, too_large: Callable[[], Exception] | None = None
) -> Iterator[bytes]:
    """The body as it arrives (no Content-Encoding decoding), never more than ``cap`` bytes: past
    it, ``too_large()`` is raised (the declared Content-Length is judged first), or without one
    the body is cut there (an error page read for its first bytes)."""
    declared = response.headers.get("Content-Length")
    if too_large is not None and declared and declared.isdigit() and int(declared) > cap:
        raise too_large()
    received = 0
    for chunk in raw_chunks(response):
        if received + len(chunk) > cap:
            if too_large is not None:
                raise too_large()
            yield chunk[: cap - received]
            return
        received += len(chunk)
        yield chunk


def read_capped(
    response: httpx.Response, cap: int, too_large: Callable[[], Exception] | None = None
) -> bytes:
    """``capped_chunks`` joined: the one capped read of an HTTP body."""
    return b"".join(capped_chunks(response, cap, too_large))
