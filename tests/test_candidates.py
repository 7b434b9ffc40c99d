from __future__ import annotations

from gallery.catalog.candidates import build_candidates, registry_endpoints
from gallery.catalog.index import IndexEntry, parse_index
from gallery.config.safe_yaml import YamlLimits
from gallery.oci.references import parse_reference

from .localai_fixture import build_localai_like_index


def test_order_uri_mirrors_then_fallbacks() -> None:
    entries = {
        e.name: e
        for e in parse_index(
            build_localai_like_index().text.encode(), limits=YamlLimits(), local=True
        ).entries
    }
    candidates = build_candidates(entries["cuda12-llama-cpp"], lookup=entries.get)
    assert [(c.kind, str(c)) for c in candidates] == [
        ("uri", "quay.io/go-skynet/local-ai-backends:latest-gpu-nvidia-cuda-12-llama-cpp"),
        ("mirror", "docker.io/localai/localai-backends:latest-gpu-nvidia-cuda-12-llama-cpp"),
        ("fallback", "quay.io/go-skynet/local-ai-backends:master-gpu-nvidia-cuda-12-llama-cpp"),
        ("fallback", "docker.io/localai/localai-backends:master-gpu-nvidia-cuda-12-llama-cpp"),
    ]
    # The -development entry's uri equals the master- fallback here, so it is not repeated.
    assert len({str(c) for c in candidates}) == len(candidates)


def test_development_entry_and_pinned_uris() -> None:
    entry = IndexEntry(name="x", uri="quay.io/o/x:v1")
    dev = IndexEntry(name="x-development", uri="quay.io/o/x:dev")
    lookup = {"x-development": dev}.get
    assert [str(c) for c in build_candidates(entry, lookup=lookup)] == ["quay.io/o/x:v1", "quay.io/o/x:dev"]
    pinned = IndexEntry(name="p", uri="quay.io/o/p:latest-cpu@sha256:" + "e" * 64)
    assert [c.kind for c in build_candidates(pinned, lookup=lookup)] == ["uri"]


def test_registry_mirrors_come_first() -> None:
    ref = parse_reference("localai/x:latest")
    mirrors = {"docker.io": ("mirror.internal:5000",)}
    assert registry_endpoints(ref, mirrors) == ("mirror.internal:5000", "docker.io")
    assert registry_endpoints(parse_reference("quay.io/a/b"), mirrors) == ("quay.io",)
