from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gallery.catalog.fetch import IndexCache, fetch_gallery_index
from gallery.config.models import GalleryConfig, Limits
from gallery.errors import IndexUnavailable

INDEX = b'- {name: a, uri: "quay.io/x/a:1"}\n'
OTHER = b'- {name: b, uri: "quay.io/x/b:1"}\n'
LIMITS = Limits(max_index_bytes=4096)


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler), trust_env=False)


def cache(tmp_path: Path) -> IndexCache:
    return IndexCache(tmp_path / "indexes", max_bytes=LIMITS.max_index_bytes)


def test_primary_then_mirror_then_saved(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "primary.example":
            return httpx.Response(503)
        return httpx.Response(200, content=INDEX)

    config = GalleryConfig(
        name="g", url="https://primary.example/i.yaml", mirrors=("https://mirror.example/i.yaml",)
    )
    loaded = fetch_gallery_index(config, client=client_for(handler), cache=cache(tmp_path), limits=LIMITS)
    assert seen == ["https://primary.example/i.yaml"] * 3 + ["https://mirror.example/i.yaml"]  # 503: retried
    assert loaded.source == "https://mirror.example/i.yaml" and not loaded.from_cache
    assert [f.reason for f in loaded.failures] == ["HTTP 503 (after 3 attempts)"]
    assert [e.name for e in loaded.parsed.entries] == ["a"]
    record = json.loads((tmp_path / "indexes" / "g.json").read_text())
    assert record["content"].encode() == INDEX and record["source"] == "https://mirror.example/i.yaml"


def test_malformed_primary_moves_on_to_the_mirror(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = b"not: [a list" if request.url.host == "primary.example" else OTHER
        return httpx.Response(200, content=body)

    config = GalleryConfig(
        name="g", url="https://primary.example/i.yaml", mirrors=("https://mirror.example/i.yaml",)
    )
    loaded = fetch_gallery_index(config, client=client_for(handler), cache=cache(tmp_path), limits=LIMITS)
    assert [e.name for e in loaded.parsed.entries] == ["b"]
    assert loaded.failures[0].malformed


def test_every_source_down_uses_the_last_good_copy(tmp_path: Path) -> None:
    store = cache(tmp_path)
    config = GalleryConfig(name="g", url="https://primary.example/i.yaml")
    fetched = datetime(2026, 1, 2, tzinfo=UTC)
    fetch_gallery_index(
        config,
        client=client_for(lambda r: httpx.Response(200, content=INDEX)),
        cache=store,
        limits=LIMITS,
        now=fetched,
    )

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    loaded = fetch_gallery_index(config, client=client_for(down), cache=store, limits=LIMITS)
    assert loaded.from_cache and loaded.fetched_at == fetched
    assert [e.name for e in loaded.parsed.entries] == ["a"]
    assert "connection refused" in loaded.failures[0].reason


def test_no_source_and_no_copy_is_an_operational_failure(tmp_path: Path) -> None:
    config = GalleryConfig(
        name="g", url="https://primary.example/i.yaml", mirrors=(str(tmp_path / "absent.yaml"),)
    )
    with pytest.raises(IndexUnavailable) as caught:
        fetch_gallery_index(
            config, client=client_for(lambda r: httpx.Response(404)), cache=cache(tmp_path), limits=LIMITS
        )
    assert caught.value.code() == 1
    assert "HTTP 404" in caught.value.message and "absent.yaml" in caught.value.message


def test_damaged_copy_is_ignored(tmp_path: Path) -> None:
    store = cache(tmp_path)
    store.path("g").parent.mkdir(parents=True)
    store.path("g").write_text(
        json.dumps(
            {
                "format_version": 1,
                "content": "x",
                "sha256": "0" * 64,
                "source": "s",
                "fetched_at": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    assert store.load("g") is None


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_index_is_refused_while_streaming(tmp_path: Path, declare_length: bool) -> None:
    body = b"- {name: a, uri: quay.io/x/a:1}\n" * 1000

    def handler(request: httpx.Request) -> httpx.Response:
        if declare_length:
            return httpx.Response(200, content=body)
        return httpx.Response(200, content=iter([body[:2000], body[2000:]]))

    config = GalleryConfig(name="g", url="https://primary.example/i.yaml")
    with pytest.raises(IndexUnavailable, match="max_index_bytes") as caught:
        fetch_gallery_index(config, client=client_for(handler), cache=cache(tmp_path), limits=LIMITS)
    assert caught.value.code() == 2


def test_oversized_local_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)  # 100 MB, sparse: only the cap is ever read
    config = GalleryConfig(name="g", url=str(big))
    with pytest.raises(IndexUnavailable, match=r"over limits\.max_index_bytes") as caught:
        fetch_gallery_index(
            config, client=client_for(lambda r: httpx.Response(500)), cache=cache(tmp_path), limits=LIMITS
        )
    assert caught.value.code() == 2


class _IndexHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/index.yaml")
            self.end_headers()
            return
        body = INDEX if self.path == "/index.yaml" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IndexHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_real_http_server_with_redirect(tmp_path: Path, http_server: str) -> None:
    from gallery.config.models import Config
    from gallery.net.client import make_http_client

    config = Config(format_version=1, backends_path=tmp_path / "b", cache_path=tmp_path / "c")
    gallery = GalleryConfig(name="g", url=f"{http_server}/missing.yaml", mirrors=(f"{http_server}/redirect",))
    with make_http_client(config) as client:
        loaded = fetch_gallery_index(gallery, client=client, cache=cache(tmp_path), limits=LIMITS)
    assert loaded.source.endswith("/redirect") and [e.name for e in loaded.parsed.entries] == ["a"]
    assert loaded.failures[0].reason == "HTTP 404"


def test_a_compressed_index_is_refused_not_decoded_behind_the_cap(tmp_path: Path) -> None:
    """A small zstd frame of a gigabyte of zeros, sent as Content-Encoding by a real server: httpx
    would decode a whole network read before any cap saw it. Identity is asked for; anything else
    is refused, and memory stays flat."""
    import resource

    import zstandard

    from gallery.config.models import Config
    from gallery.net.client import make_http_client

    from .file_server import serving

    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush()
    assert len(bomb) < 64 * 1024
    config = Config(format_version=1, backends_path=tmp_path / "b", cache_path=tmp_path / "c")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with serving() as server, make_http_client(config) as client:
        url = server.publish("/index.yaml", bomb)
        server.headers["/index.yaml"] = {"Content-Encoding": "zstd"}
        with pytest.raises(IndexUnavailable, match="Content-Encoding 'zstd'"):
            fetch_gallery_index(
                GalleryConfig(name="g", url=url), client=client, cache=cache(tmp_path), limits=LIMITS
            )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: far from 1 GiB
