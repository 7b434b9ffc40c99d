from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gallery.catalog.capability import HostFacts
from gallery.catalog.fetch import LoadedIndex
from gallery.catalog.galleries import Catalog, GalleryState
from gallery.catalog.index import parse_index
from gallery.catalog.resolve import CapabilitySelector, resolve_backend
from gallery.config.models import GalleryConfig
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import AmbiguousName, BackendNotFound, IndexFormatError

from .localai_fixture import build_localai_like_index


def gallery(name: str, text: str) -> GalleryState:
    parsed = parse_index(text.encode(), limits=YamlLimits(), local=True)
    loaded = LoadedIndex(name, f"/srv/{name}.yaml", False, datetime.now(UTC), parsed, ())
    return GalleryState(GalleryConfig(name=name, url=f"/srv/{name}.yaml"), loaded, None)


def fixed(capability: str) -> CapabilitySelector:
    def never() -> HostFacts:
        raise AssertionError("detection must not run when the config names a capability")

    return CapabilitySelector(capability, never)


LOCALAI = Catalog((gallery("localai", build_localai_like_index().text),))


@pytest.mark.parametrize(
    ("capability", "concrete"),
    [
        ("nvidia", "cuda12-llama-cpp"),
        ("default", "cpu-llama-cpp"),
        ("nvidia-cuda-13", "cuda13-llama-cpp"),
        ("cpu", "cpu-llama-cpp"),
    ],
)
def test_meta_backend_follows_the_configured_capability(capability: str, concrete: str) -> None:
    resolution = resolve_backend(LOCALAI, "llama-cpp", capabilities=fixed(capability))
    assert resolution.entry.name == concrete
    assert resolution.meta is not None and resolution.meta.name == "llama-cpp"
    assert resolution.capability is not None and resolution.capability.source == "config"
    assert not resolution.via_alias


def test_detection_is_injected_and_used_only_for_auto() -> None:
    calls = []

    def amd_host() -> HostFacts:
        calls.append(1)
        return HostFacts("linux", "amd64", frozenset({"amd"}))

    selector = CapabilitySelector("auto", amd_host)
    assert resolve_backend(LOCALAI, "cpu-whisper", capabilities=selector).entry.name == "cpu-whisper"
    assert calls == []  # a concrete entry needs no detection
    resolution = resolve_backend(LOCALAI, "whisper", capabilities=selector)
    assert resolution.entry.name == "rocm-whisper" and resolution.capability is not None
    assert resolution.capability.key == "amd" and resolution.capability.source == "detected"
    resolve_backend(LOCALAI, "vllm", capabilities=selector)
    assert calls == [1]  # detected once per selector


def test_a_name_wins_over_an_alias() -> None:
    # Every concrete llama-cpp entry carries alias "llama-cpp"; the meta-backend has that name.
    assert resolve_backend(LOCALAI, "llama-cpp", capabilities=fixed("default")).meta is not None


def test_alias_resolution_unique_and_ambiguous() -> None:
    text = (
        '- {name: cuda12-rerankers, uri: "quay.io/x/r:latest-cuda12", alias: rerankers-cuda}\n'
        '- {name: a-master, uri: "quay.io/x/r:master-a", alias: rerankers}\n'
        '- {name: b-master, uri: "quay.io/x/r:master-b", alias: rerankers}\n'
    )
    catalog = Catalog((gallery("g", text),))
    resolution = resolve_backend(catalog, "rerankers-cuda", capabilities=fixed("default"))
    assert resolution.entry.name == "cuda12-rerankers" and resolution.via_alias
    with pytest.raises(AmbiguousName, match="a-master, b-master") as caught:
        resolve_backend(catalog, "rerankers", capabilities=fixed("default"))
    assert caught.value.code() == 2


def test_name_clash_between_galleries_first_wins_and_qualified_names_reach_the_other() -> None:
    first = gallery("first", '- {name: x, uri: "quay.io/first/x:1"}\n')
    second = gallery(
        "second", '- {name: x, uri: "quay.io/second/x:1"}\n- {name: y, uri: "quay.io/second/y:1"}\n'
    )
    catalog = Catalog((first, second))
    resolution = resolve_backend(catalog, "x", capabilities=fixed("default"))
    assert resolution.gallery.name == "first" and resolution.shadowed_in == ("second",)
    assert (
        resolve_backend(catalog, "second@x", capabilities=fixed("default")).entry.uri == "quay.io/second/x:1"
    )
    assert [s.shadowed_in for s in catalog.shadowed()] == ["second"]
    with pytest.raises(BackendNotFound, match="no gallery named"):
        resolve_backend(catalog, "third@x", capabilities=fixed("default"))
    with pytest.raises(BackendNotFound):
        resolve_backend(catalog, "first@y", capabilities=fixed("default"))


def test_broken_meta_backends_are_index_errors() -> None:
    text = (
        "- {name: m, capabilities: {nvidia: missing}}\n"
        "- {name: n, capabilities: {default: m}}\n"
        "- {name: o, capabilities: {default: absent}}\n"
    )
    catalog = Catalog((gallery("g", text),))
    with pytest.raises(IndexFormatError, match="no capability for this host"):
        resolve_backend(catalog, "m", capabilities=fixed("default"))
    with pytest.raises(IndexFormatError, match="another meta-backend"):
        resolve_backend(catalog, "n", capabilities=fixed("default"))
    with pytest.raises(IndexFormatError, match="does not have"):
        resolve_backend(catalog, "o", capabilities=fixed("default"))


def test_unknown_name() -> None:
    with pytest.raises(BackendNotFound, match="no backend named 'nope'"):
        resolve_backend(LOCALAI, "nope", capabilities=fixed("default"))


SKIPPING = Catalog((
    gallery("one", "- {name: broken, uri: 'not a uri at all ://'}\n- {name: fine, uri: quay.io/o/fine:v1}\n"),
    gallery("two", "- {name: other, uri: quay.io/o/other:v1}\n"),
))  # fmt: skip


def test_a_skipped_entry_is_explained_not_reported_missing() -> None:
    with pytest.raises(IndexFormatError, match="gallery 'one': entry 'broken' was skipped"):
        resolve_backend(SKIPPING, "broken", capabilities=fixed("default"))
    with pytest.raises(IndexFormatError, match="was skipped"):
        resolve_backend(SKIPPING, "one@broken", capabilities=fixed("default"))


def test_only_the_skipped_name_in_the_asked_gallery_is_explained() -> None:
    """Another missing name is just missing; the name asked of another gallery is missing there
    (gallery one's problem with it is not gallery two's)."""
    with pytest.raises(BackendNotFound):
        resolve_backend(SKIPPING, "absent", capabilities=fixed("default"))
    with pytest.raises(BackendNotFound):
        resolve_backend(SKIPPING, "two@broken", capabilities=fixed("default"))


def test_a_configured_capability_nobody_knows_is_refused_with_the_closest_key() -> None:
    from gallery.errors import UsageError

    with pytest.raises(UsageError, match=r"capability 'nvidai' is not one .* \(did you mean 'nvidia'\?\)"):
        resolve_backend(LOCALAI, "llama-cpp", capabilities=fixed("nvidai"))
    with pytest.raises(UsageError, match="'unknown-accelerator' is not one"):
        resolve_backend(LOCALAI, "llama-cpp", capabilities=fixed("unknown-accelerator"))
    # A key only the galleries use is fine, and so is a CUDA key of any major.
    assert (
        resolve_backend(LOCALAI, "llama-cpp", capabilities=fixed("nvidia-cuda-14")).entry.name
        == "cuda13-llama-cpp"
    )
