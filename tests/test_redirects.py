"""Redirects of URLs that carry no credentials (indexes, their signatures, tarballs): followed,
but never from https down to plain http, and not endlessly (httpx.MockTransport plays the CDN)."""

from __future__ import annotations

import httpx
import pytest

from gallery.net.client import InsecureRedirect, stream_get


def client(routes: dict[str, httpx.Response]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        return routes.get(str(request.url), httpx.Response(404))

    return httpx.Client(transport=httpx.MockTransport(handle), follow_redirects=False)


def moved(to: str) -> httpx.Response:
    return httpx.Response(302, headers={"Location": to})


def test_redirects_are_followed_to_https_and_from_http() -> None:
    routes = {
        "https://gallery.test/index.yaml": moved("https://cdn.test/index.yaml"),
        "https://cdn.test/index.yaml": moved("/real/index.yaml"),
        "https://cdn.test/real/index.yaml": httpx.Response(200, content=b"- name: a\n"),
        "http://plain.test/x": moved("https://cdn.test/real/index.yaml"),
    }
    with client(routes) as http:
        with stream_get(http, "https://gallery.test/index.yaml") as response:
            assert response.read() == b"- name: a\n"
        with stream_get(http, "http://plain.test/x") as response:
            assert response.status_code == 200


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ({"https://gallery.test/i": moved("http://evil.test/i")}, "from https to plain http is refused"),
        ({"https://gallery.test/i": moved("file:///etc/passwd")}, "unsupported location"),
        ({"https://gallery.test/i": moved("https://gallery.test/i")}, "more than 10 redirects"),
    ],
    ids=["downgrade", "file", "loop"],
)
def test_a_redirect_we_will_not_follow(routes: dict[str, httpx.Response], reason: str) -> None:
    with (
        client(routes) as http,
        pytest.raises(InsecureRedirect, match=reason),
        stream_get(http, "https://gallery.test/i"),
    ):
        pass


def test_the_index_and_tarball_fetchers_refuse_a_downgrade() -> None:
    """Both fetchers go through stream_get: an index or tarball behind https that redirects to
    plain http is a failed source, and the plain-http server is never asked."""
    from gallery.catalog.fetch import _read_http
    from gallery.prepare.tarball import TarballUnavailable, stream_url

    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.scheme == "https":
            return moved(str(request.url.copy_with(scheme="http")))
        return httpx.Response(200, content=b"bytes an attacker chose")

    with httpx.Client(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(InsecureRedirect):
            _read_http(http, "https://gallery.test/index.yaml", 1024)
        with pytest.raises(TarballUnavailable, match="from https to plain http"):
            stream_url("https://cdn.test/b.tar.gz", client=http, max_bytes=1024, sink=lambda chunk: None,
                       what="tarball", limit="limits.max_extract_bytes")  # fmt: skip
    assert all(url.startswith("https://") for url in asked), asked
