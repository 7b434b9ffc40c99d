"""What pinning refuses before any layer is fetched: layers that are no image layers, and an
index hidden where the platform's manifest should be (pure: documents from a dict)."""

from __future__ import annotations

import json

import pytest

from gallery.prepare.pin import UnsupportedImage, _platform_manifest

from .registry_server import LAYER_GZIP, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, digest_of

CONFIG = {"mediaType": OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 2}


def manifest(layer_type: str = LAYER_GZIP) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG,
                       "layers": [{"mediaType": layer_type, "digest": "sha256:" + "a" * 64, "size": 3}]}).encode()  # fmt: skip


def index(entry: bytes, entry_type: str = OCI_MANIFEST) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": entry_type, "digest": digest_of(entry), "size": len(entry),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()  # fmt: skip


def pin(documents: dict[str, bytes], resolved: str) -> tuple[str, object]:
    return _platform_manifest(resolved, documents.__getitem__, platform="linux/amd64", where="r/x",
                              documents={}, max_layers=10)  # fmt: skip


def test_a_plain_image_pins() -> None:
    body = manifest()
    digest, _document = pin({digest_of(body): body}, digest_of(body))
    assert digest == digest_of(body)


@pytest.mark.parametrize("layer_type", ["application/vnd.example.weird", "application/vnd.oci.image.config.v1+json",
                                        "application/vnd.dev.sigstore.bundle.v0.3+json"])  # fmt: skip
def test_a_layer_that_is_no_image_layer_is_refused(layer_type: str) -> None:
    body = manifest(layer_type)
    with pytest.raises(UnsupportedImage, match="which is not an image layer"):
        pin({digest_of(body): body}, digest_of(body))


def test_an_index_behind_a_manifest_descriptor_is_refused_on_the_second_fetch() -> None:
    """The index says "manifest" for linux/amd64, but the bytes it names are another index."""
    inner = index(manifest())
    outer = index(inner, entry_type=OCI_MANIFEST)
    with pytest.raises(UnsupportedImage, match="an index inside an index"):
        pin({digest_of(outer): outer, digest_of(inner): inner}, digest_of(outer))


def test_a_platform_entry_typed_as_an_index_is_refused_on_the_first() -> None:
    inner = index(manifest())
    outer = index(inner, entry_type=OCI_INDEX)
    with pytest.raises(UnsupportedImage, match="an index inside an index"):
        pin({digest_of(outer): outer, digest_of(inner): inner}, digest_of(outer))
