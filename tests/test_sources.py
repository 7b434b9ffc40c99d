from __future__ import annotations

from pathlib import Path

import pytest

from gallery.catalog.sources import (
    OciLayoutSource,
    OciSource,
    SourceParseError,
    TarballSource,
    parse_backend_uri,
    parse_index_location,
)

HEX = "b" * 64


def test_backend_uri_forms() -> None:
    assert isinstance(parse_backend_uri("quay.io/a/b:t"), OciSource)
    oci = parse_backend_uri("oci://localai/b:t")
    assert isinstance(oci, OciSource) and oci.reference.registry == "docker.io"
    layout = parse_backend_uri("ocifile:///srv/layouts/b.tar")
    assert layout == OciLayoutSource(path="/srv/layouts/b.tar")
    tarball = parse_backend_uri(f"https://example.org/b.tar.gz#sha256={HEX}")
    assert tarball == TarballSource(url="https://example.org/b.tar.gz", sha256=HEX)
    assert parse_backend_uri("file:///srv/b.tar.gz") == TarballSource(url="file:///srv/b.tar.gz")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("huggingface://org/model", "not supported"),
        ("ftp://example.org/x.tar", "not supported"),
        ("https://example.org/x.tar#md5=abc", "fragment"),
        (f"https://example.org/x.tar#sha256={HEX.upper()}", "fragment"),
        ("https:///no-host.tar", "no host"),
        ("file://host/x.tar", "file:///"),
        ("ocifile://", "path"),
        (" quay.io/a/b", "whitespace"),
        ("quay.io/A/b", "OCI reference"),
    ],
)
def test_backend_uri_rejections_say_why(uri: str, reason: str) -> None:
    with pytest.raises(SourceParseError, match=reason):
        parse_backend_uri(uri)


def test_index_locations(tmp_path: Path) -> None:
    github = parse_index_location("github:mudler/LocalAI/backend/index.yaml@master", base_dir=tmp_path)
    assert github.kind == "http"
    assert github.target == "https://raw.githubusercontent.com/mudler/LocalAI/master/backend/index.yaml"
    default_ref = parse_index_location("github:o/r/index.yaml", base_dir=tmp_path)
    assert default_ref.target == "https://raw.githubusercontent.com/o/r/main/index.yaml"
    local = parse_index_location("sub/index.yaml", base_dir=tmp_path)
    assert local.kind == "file" and local.target == str(tmp_path / "sub" / "index.yaml")
    assert parse_index_location("file:///srv/i.yaml", base_dir=tmp_path).target == "/srv/i.yaml"
    assert parse_index_location("https://h/i.yaml", base_dir=tmp_path).kind == "http"


@pytest.mark.parametrize(
    "location", ["github:owner/repo", "github:o/r/../x@main", "s3://bucket/i.yaml", "file://host/i.yaml", ""]
)
def test_index_location_rejections(location: str, tmp_path: Path) -> None:
    with pytest.raises(SourceParseError):
        parse_index_location(location, base_dir=tmp_path)
