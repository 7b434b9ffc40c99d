from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gallery.oci.references import ReferenceParseError, parse_reference, validate_registry_host

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        (
            "quay.io/go-skynet/local-ai-backends:latest-cpu",
            "quay.io",
            "go-skynet/local-ai-backends",
            "latest-cpu",
            None,
        ),
        ("localai/localai-backends:latest-cpu", "docker.io", "localai/localai-backends", "latest-cpu", None),
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("docker.io/ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("index.docker.io/library/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("registry-1.docker.io/localai/x:1", "docker.io", "localai/x", "1", None),
        ("localhost/x/y", "localhost", "x/y", "latest", None),
        ("127.0.0.1:5000/x/y:t", "127.0.0.1:5000", "x/y", "t", None),
        (f"quay.io/a/b@sha256:{HEX}", "quay.io", "a/b", None, f"sha256:{HEX}"),
        (f"quay.io/a/b:tag@sha256:{HEX}", "quay.io", "a/b", "tag", f"sha256:{HEX}"),
        ("Quay.IO/a/b", "quay.io", "a/b", "latest", None),
    ],
)
def test_parse_and_normalise(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER/case",
        "quay.io/a/b:",
        "quay.io/a/b@",
        "quay.io/a/b@sha256:abc",
        f"quay.io/a/b@sha512:{'a' * 128}",
        f"quay.io/a/b@sha256:{'A' * 64}",
        "quay.io/a/b:bad tag",
        "quay.io/a//b",
        "quay.io/../b",
        "a/b:" + "x" * 129,
        f"quay.io/a/b@sha256:{HEX}\n",
    ],
)
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(ReferenceParseError):
        parse_reference(text)


def test_digest_wins_but_tag_is_kept_for_display() -> None:
    ref = parse_reference(f"quay.io/a/b:v1@sha256:{HEX}")
    assert ref.is_pinned
    assert str(ref) == f"quay.io/a/b:v1@sha256:{HEX}"


def test_mirror_and_tag_rewrites() -> None:
    ref = parse_reference("localai/x:latest-cpu")
    assert str(ref.with_registry("mirror.internal:5000")) == "mirror.internal:5000/localai/x:latest-cpu"
    assert str(ref.with_tag("master-cpu")) == "docker.io/localai/x:master-cpu"
    with pytest.raises(ReferenceParseError):
        ref.pinned("sha256:short")


def test_registry_host_validation() -> None:
    assert validate_registry_host("index.docker.io") == "docker.io"
    assert validate_registry_host("[::1]:5000") == "[::1]:5000"
    with pytest.raises(ReferenceParseError):
        validate_registry_host("bad host")


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(
    registry=st.sampled_from(["quay.io", "127.0.0.1:5000", "docker.io", "localhost:8080"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
)
def test_canonical_form_round_trips(
    registry: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = f"{registry}/{'/'.join(path)}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert ref.digest == digest
