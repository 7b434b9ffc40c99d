from __future__ import annotations

import pytest

from gallery.catalog.index import parse_index
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import IndexFormatError

from .localai_fixture import build_localai_like_index

HEX = "c" * 64
LIMITS = YamlLimits()


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_index(text.encode(), limits=LIMITS, local=True)


def test_localai_shaped_index_loads_every_valid_entry() -> None:
    fixture = build_localai_like_index()
    parsed = parse(fixture.text)
    assert [e.name for e in parsed.entries] == fixture.valid_names
    assert len(parsed.entries) >= 890
    assert sorted(p.name for p in parsed.problems if p.name) == sorted(fixture.duplicates)
    assert all("duplicate name" in p.reason for p in parsed.problems)
    concrete = next(e for e in parsed.entries if e.name == "cuda12-llama-cpp")
    # Inherited through the merge key: capabilities and an alias equal to the meta-backend's name.
    assert concrete.alias == "llama-cpp" and concrete.capabilities["nvidia"] == "cuda12-llama-cpp"
    assert not concrete.is_meta
    mirror = concrete.mirror_sources[0]
    assert str(mirror) == "docker.io/localai/localai-backends:latest-gpu-nvidia-cuda-12-llama-cpp"
    meta = next(e for e in parsed.entries if e.name == "llama-cpp")
    assert meta.is_meta and meta.source is None


def test_first_duplicate_wins() -> None:
    parsed = parse('- {name: a, uri: "quay.io/x/a:1"}\n- {name: a, uri: "quay.io/x/a:2"}\n')
    assert [e.uri for e in parsed.entries] == ["quay.io/x/a:1"]
    assert parsed.problems[0].position == 1 and "first entry" in parsed.problems[0].reason


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ('{name: "../x", uri: "quay.io/x/a:1"}', "safe single path component"),
        ('{name: "a/b", uri: "quay.io/x/a:1"}', "safe single path component"),
        ('{name: ".hidden", uri: "quay.io/x/a:1"}', "safe single path component"),
        ('{name: a, uri: "https://h/a.tgz", sha256: "ABC"}', "64 lowercase hex"),
        ('{name: a, uri: "https://h/a.tgz", sha256: "' + HEX.upper() + '"}', "64 lowercase hex"),
        ('{name: a, uri: "https://h/a.tgz#sha256=' + "d" * 64 + '", sha256: "' + HEX + '"}', "disagree"),
        ("{name: a}", "neither 'uri' nor 'capabilities'"),
        ('{name: a, uri: "huggingface://x/y"}', "not supported"),
        ('{name: a, uri: "quay.io/x/a:1", mirrors: ["ftp://m/a"]}', "mirrors"),
        ('{name: a, capabilities: {default: "../b"}}', "capabilities.default"),
        ('{name: a, capabilities: {default: b}, mirrors: ["quay.io/x/a:1"]}', "meta-backend"),
        ('{name: a, alias: "x y", uri: "quay.io/x/a:1"}', "alias"),
        ('{uri: "quay.io/x/a:1"}', "name"),
        ("just a string", "not a mapping"),
    ],
)
def test_malformed_entries_are_reported_and_skipped(entry: str, reason: str) -> None:
    parsed = parse(f'- {{name: good, uri: "quay.io/x/good:1"}}\n- {entry}\n')
    assert [e.name for e in parsed.entries] == ["good"]
    assert len(parsed.problems) == 1
    assert reason in parsed.problems[0].reason
    assert "skipped" in str(parsed.problems[0])


def test_unknown_fields_are_kept_but_ignored() -> None:
    parsed = parse('- {name: a, uri: "quay.io/x/a:1", future_field: {nested: true}, version: 1.5}\n')
    entry = parsed.entries[0]
    assert entry.model_extra == {"future_field": {"nested": True}}
    assert entry.version == "1.5"
    assert "future_field" not in entry.known_fields()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("name: a\nuri: quay.io/x/a:1\n", "YAML list"),
        ("- [unclosed\n", "YAML error"),
    ],
)
def test_whole_index_errors(document: str, message: str) -> None:
    with pytest.raises(IndexFormatError, match=message):
        parse(document)


def test_empty_index_is_empty() -> None:
    assert parse("").entries == ()


def test_a_remote_index_keeps_remote_entries_and_refuses_only_local_paths() -> None:
    """Fetched over HTTP: registry and https entries are used; an entry naming a local path
    (file://, ocifile://, a local signature) is refused with that reason, the rest are kept."""
    document = b"""
- {name: image, uri: quay.io/org/backend:v1}
- {name: tarball, uri: "https://example.com/b.tar.gz", sha256: "%s"}
- {name: local-file, uri: "file:///etc/shadow"}
- {name: local-layout, uri: "ocifile:///var/lib/x"}
- {name: local-signature, uri: quay.io/org/backend:v1, signature: "file:///etc/passwd"}
""" % (b"a" * 64)
    parsed = parse_index(document, limits=YamlLimits(max_bytes=1 << 20), local=False)
    assert [e.name for e in parsed.entries] == ["image", "tarball"]
    refused = {p.name: p for p in parsed.problems}
    assert set(refused) == {"local-file", "local-layout", "local-signature"}
    assert all(p.untrusted for p in refused.values())
    assert [e.name for e in parse_index(document, limits=YamlLimits(max_bytes=1 << 20), local=True).entries] == [
        "image", "tarball", "local-file", "local-layout", "local-signature"]  # fmt: skip
