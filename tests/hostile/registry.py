"""Hostile registries: each case bends one response of an otherwise good registry.

A case's ``setup(world)`` installs its overrides on ``world.server`` (and, for cross-host cases,
``world.other``, a second server addressed as ``localhost``) and returns the entry to install;
``check(world)`` then looks at what was requested and sent.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gallery.errors import DigestMismatch, SignatureError
from gallery.oci.models import InvalidManifest
from gallery.oci.registry import RegistryError
from gallery.prepare.pin import UnsupportedImage

from ..registry_server import BUNDLE_TYPE, EMPTY_CONFIG
from ..sigstore_instance import SigstoreInstance
from .harness import Case
from .server import (
    OCI_INDEX,
    OCI_MANIFEST,
    REPO,
    HostileRegistry,
    drip,
    endless,
    redirect,
    respond,
    sha256,
    stall,
)

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class World:
    server: HostileRegistry
    other: HostileRegistry
    instance: SigstoreInstance
    trusted_root: Path

    def uri(self, tag: str = "v1") -> str:
        return f"{self.server.host}/{REPO}:{tag}"


def _manifest_override(world: World, body: bytes, **headers: str) -> None:
    for reference in ("v1", sha256(body)):
        world.server.overrides[world.server.path("manifests", reference)] = respond(
            200, body, {"Content-Type": OCI_MANIFEST, **headers}
        )


def _with_manifest(world: World, change: Any) -> dict[str, Any]:
    """The good image with its manifest document changed by ``change(manifest)``."""
    _, manifest = world.server.image()
    change(manifest)
    world.server.add_manifest(manifest, OCI_MANIFEST, "v1")
    return {"uri": world.uri()}


def _referrers(world: World, digest: str, manifests: list[dict[str, Any]]) -> None:
    """The tag-schema fallback index of ``digest``'s referrers (distribution 2.8 has no API)."""
    world.server.add_manifest(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
        OCI_INDEX,
        digest.replace(":", "-"),
    )


def _referrer(world: World, digest: str, bundle: dict[str, Any]) -> dict[str, Any]:
    """A referrer manifest carrying ``bundle`` (a descriptor) for ``digest``; returns its descriptor."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, **world.server.add_blob(b"{}")},
        "layers": [{"mediaType": BUNDLE_TYPE, **bundle}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": 0},
    }
    body = json.dumps(manifest).encode()
    world.server.add_manifest(body, OCI_MANIFEST)
    return {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body), "artifactType": BUNDLE_TYPE}


# -- the cases ---------------------------------------------------------------------------------


def manifest_over_the_cap_declared(world: World) -> dict[str, Any]:
    world.server.image()
    body = b"{" + b" " * (4 * 1024 * 1024) + b"}"
    _manifest_override(world, body)
    return {"uri": world.uri()}


def manifest_over_the_cap_endless(world: World) -> dict[str, Any]:
    world.server.image()
    world.server.overrides[world.server.path("manifests", "v1")] = endless(
        headers={"Content-Type": OCI_MANIFEST}
    )
    return {"uri": world.uri()}


def garbage_json(world: World) -> dict[str, Any]:
    _manifest_override(world, b'{"schemaVersion": 2, "layers": [{"digest": ')
    return {"uri": world.uri()}


def wrong_media_type(world: World) -> dict[str, Any]:
    """A Docker schema 1 manifest (signed JWS, no content digests we could pin)."""
    body = json.dumps({"schemaVersion": 1, "name": REPO, "tag": "v1", "fsLayers": [], "history": []}).encode()
    _manifest_override(
        world, body, **{"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
    )
    return {"uri": world.uri()}


def html_instead_of_a_manifest(world: World) -> dict[str, Any]:
    _manifest_override(world, b"<html><body>Login required</body></html>", **{"Content-Type": "text/html"})
    return {"uri": world.uri()}


def digest_header_lies(world: World) -> dict[str, Any]:
    """The tag answers with another digest; that digest serves our good manifest's bytes."""
    digest, _ = world.server.image()
    body = world.server.manifests[digest][0]
    liar = sha256(b"something else")
    for reference in ("v1", liar):
        world.server.overrides[world.server.path("manifests", reference)] = respond(
            200, body, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": liar}
        )
    return {"uri": world.uri()}


def layer_size_smaller_than_the_blob(world: World) -> dict[str, Any]:
    return _with_manifest(world, lambda m: m["layers"][0].update(size=m["layers"][0]["size"] - 10))


def layer_size_larger_than_the_blob(world: World) -> dict[str, Any]:
    return _with_manifest(world, lambda m: m["layers"][0].update(size=m["layers"][0]["size"] + 10))


def config_size_lies(world: World) -> dict[str, Any]:
    return _with_manifest(world, lambda m: m["config"].update(size=m["config"]["size"] - 5))


def layer_blob_replaced(world: World) -> dict[str, Any]:
    digest = world.server.image()[1]["layers"][0]["digest"]
    world.server.overrides[world.server.path("blobs", digest)] = respond(200, b"\x1f\x8b" + bytes(200))
    return {"uri": world.uri()}


def index_that_lists_itself(world: World) -> dict[str, Any]:
    """An index whose linux/amd64 entry names a digest that serves the index again."""
    loop = sha256(b"the index's own entry")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": loop, "size": 300,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }  # fmt: skip
    body = json.dumps(index).encode()
    world.server.add_manifest(body, OCI_INDEX, "v1")
    world.server.overrides[world.server.path("manifests", loop)] = respond(
        200, body, {"Content-Type": OCI_INDEX}
    )
    return {"uri": world.uri()}


def index_inside_an_index(world: World) -> dict[str, Any]:
    digest, _ = world.server.image()
    inner = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}
    ]}  # fmt: skip
    inner_digest = world.server.add_manifest(inner, OCI_INDEX)
    outer = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": inner_digest, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}
    ]}  # fmt: skip
    world.server.add_manifest(outer, OCI_INDEX, "v1")
    return {"uri": world.uri()}


def ten_thousand_layers(world: World) -> dict[str, Any]:
    def many(manifest: dict[str, Any]) -> None:
        layer = manifest["layers"][0]
        manifest["layers"] = [dict(layer, digest=sha256(b"%d" % i)) for i in range(10_000)]

    return _with_manifest(world, many)


def ten_thousand_referrers(world: World) -> dict[str, Any]:
    digest, _ = world.server.image()
    bundle = world.server.add_blob(b"{}")
    referrer = _referrer(world, digest, {**bundle})
    _referrers(world, digest, [dict(referrer, annotations={"n": str(i)}) for i in range(10_000)])
    return {"uri": world.uri()}


def bundle_of_100_mb(world: World) -> dict[str, Any]:
    digest, _ = world.server.image()
    huge = {"digest": sha256(b"huge"), "size": 100 * 1024 * 1024}
    world.server.overrides[world.server.path("blobs", huge["digest"])] = endless()
    _referrers(world, digest, [_referrer(world, digest, huge)])
    return {"uri": world.uri()}


def bundle_blob_replaced(world: World) -> dict[str, Any]:
    """A referrer whose bundle descriptor names a good bundle; the registry serves another."""
    digest, _ = world.server.image()
    good = world.instance.sign_image(digest)
    descriptor = world.server.add_blob(good)
    forged = world.instance.sign_image(
        digest, identity="https://github.com/mallory/x/.github/workflows/a.yml@refs/heads/main"
    )
    world.server.overrides[world.server.path("blobs", descriptor["digest"])] = respond(200, forged)
    _referrers(world, digest, [_referrer(world, digest, descriptor)])
    return {"uri": world.uri()}


def slow_drip_manifest(world: World) -> dict[str, Any]:
    digest, _ = world.server.image()
    body = world.server.manifests[digest][0]
    world.server.overrides[world.server.path("manifests", digest)] = drip(
        body, every=0.2, headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
    )
    return {"uri": world.uri()}


def slow_drip_layer(world: World) -> dict[str, Any]:
    layer = world.server.image()[1]["layers"][0]["digest"]
    world.server.overrides[world.server.path("blobs", layer)] = drip(world.server.blobs[layer], every=0.2)
    return {"uri": world.uri()}


def stalled_manifest(world: World) -> dict[str, Any]:
    world.server.image()
    world.server.overrides[world.server.path("manifests", "v1")] = stall(seconds=30)
    return {"uri": world.uri()}


def endless_layer(world: World) -> dict[str, Any]:
    layer = world.server.image()[1]["layers"][0]["digest"]
    world.server.overrides[world.server.path("blobs", layer)] = endless()
    return {"uri": world.uri()}


def redirect_loop(world: World) -> dict[str, Any]:
    layer = world.server.image()[1]["layers"][0]["digest"]
    path = world.server.path("blobs", layer)
    world.server.overrides[path] = redirect(f"http://{world.server.host}{path}")
    return {"uri": world.uri()}


def redirect_to_another_host(world: World) -> dict[str, Any]:
    """Credentials are needed at the registry; its blob redirects to a second host (a CDN)."""
    layer = world.server.image()[1]["layers"][0]["digest"]
    world.other.blobs[layer] = world.server.blobs[layer]
    world.server.challenge, world.server.authorization = 'Basic realm="registry"', BASIC
    world.server.overrides[world.server.path("blobs", layer)] = redirect(
        f"http://{world.other.host}{world.server.path('blobs', layer)}"
    )
    return {"uri": world.uri()}


def foreign_realm_over_plain_http(world: World) -> dict[str, Any]:
    world.server.image()
    world.server.challenge = f'Bearer realm="http://{world.other.host}/token",service="registry"'
    world.server.authorization = "Bearer stolen"
    world.other.overrides["/token"] = respond(
        200, b'{"token": "stolen"}', {"Content-Type": "application/json"}
    )
    return {"uri": world.uri()}


def no_credentials_to_the_other_host(world: World) -> None:
    assert any(s.headers.get("Authorization") == BASIC for s in world.server.seen), "credentials never used"
    assert world.other.seen, "the redirect was not followed"
    assert all("Authorization" not in s.headers for s in world.other.seen), "credentials leaked"


def nothing_asked_of_the_other_host(world: World) -> None:
    assert world.other.seen == [], [s.path for s in world.other.seen]


def config_never_fetched(world: World) -> None:
    """The config is never read (nothing in it is used), so its size cannot matter."""
    config = json.loads(world.server.manifests["v1"][0])["config"]["digest"]
    assert world.server.requests_to(config) == []


def no_blob_fetched(world: World) -> None:
    assert world.server.requests_to("/blobs/") == [], "a blob was fetched"


def referrers_capped(world: World) -> None:
    manifests = world.server.requests_to("/manifests/")
    assert len(manifests) <= 64 + 4, f"{len(manifests)} manifest requests for 10,000 referrers"


def bundle_never_read(world: World) -> None:
    assert world.server.requests_to(sha256(b"huge")) == [], "the oversized bundle was requested"


def cases() -> list[Case]:
    signed = True
    table: list[tuple[Any, type, int, str, Any, bool]] = [
        (manifest_over_the_cap_declared, RegistryError, 1, "max_manifest_bytes", None, False),
        (manifest_over_the_cap_endless, RegistryError, 1, "max_manifest_bytes", None, False),
        (garbage_json, InvalidManifest, 3, "not JSON", no_blob_fetched, False),
        (wrong_media_type, InvalidManifest, 3, "schema 1", no_blob_fetched, False),
        (html_instead_of_a_manifest, InvalidManifest, 3, "not JSON", no_blob_fetched, False),
        (digest_header_lies, DigestMismatch, 3, "hashes to", None, False),
        (layer_size_smaller_than_the_blob, DigestMismatch, 3, "more than the", None, False),
        (layer_size_larger_than_the_blob, DigestMismatch, 3, "", None, False),
        (config_size_lies, type(None), 0, "", config_never_fetched, False),
        (layer_blob_replaced, DigestMismatch, 3, "", None, False),
        (index_that_lists_itself, DigestMismatch, 3, "", no_blob_fetched, False),
        (index_inside_an_index, UnsupportedImage, 3, "index inside an index", no_blob_fetched, False),
        (ten_thousand_layers, UnsupportedImage, 3, "max_layers", no_blob_fetched, False),
        (ten_thousand_referrers, SignatureError, 3, "", referrers_capped, signed),
        (bundle_of_100_mb, SignatureError, 3, "", bundle_never_read, signed),
        (bundle_blob_replaced, SignatureError, 3, "", None, signed),
        (slow_drip_manifest, RegistryError, 1, "timed out", None, False),
        (slow_drip_layer, RegistryError, 1, "timed out", None, False),
        (stalled_manifest, RegistryError, 1, "timed out", None, False),
        (endless_layer, DigestMismatch, 3, "more than the", None, False),
        (redirect_loop, RegistryError, 1, "redirects", None, False),
        (redirect_to_another_host, type(None), 0, "", no_credentials_to_the_other_host, False),
        (
            foreign_realm_over_plain_http,
            RegistryError,
            1,
            "another host",
            nothing_asked_of_the_other_host,
            False,
        ),
    ]
    return [
        Case(
            "registry",
            setup.__name__.replace("_", " "),
            None if expect is type(None) else expect,
            code,
            reason=reason,
            policy=policy,
            setup=setup,
            check=check,
        )
        for setup, expect, code, reason, check, policy in table
    ]
