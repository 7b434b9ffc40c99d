"""The OCI client against a real registry (and a faulty proxy), plus protocol details via MockTransport."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import httpx
import pytest

from gallery.errors import DigestMismatch
from gallery.oci.models import Descriptor, ImageIndex, ImageManifest
from gallery.oci.references import parse_reference
from gallery.oci.registry import (
    Endpoint,
    ManifestNotFound,
    RegistryClient,
    RegistryError,
    RegistryUnauthorized,
    RetryPolicy,
)
from gallery.prepare.blobcache import BlobCache

from .faulty_proxy import Faults, faulty_proxy
from .registry_server import LAYER_GZIP, LAYER_ZSTD, OCI_MANIFEST, Registry, digest_of
from .tarbuild import file, gz, tar_bytes, zst

FAST = RetryPolicy(attempts=3, initial_wait=0)


def client_for(host: str) -> RegistryClient:
    return RegistryClient(
        httpx.Client(trust_env=False, timeout=10), insecure_registries=frozenset({host}), retry=FAST
    )


def repo_name() -> str:
    return f"test/{secrets.token_hex(4)}"


def test_pin_fetch_and_verify_against_a_real_registry(registry: Registry, tmp_path: Path) -> None:
    repo = repo_name()
    layer = gz(tar_bytes([file("run.sh", b"#!/bin/sh\n")]))
    digest, _ = registry.push_image(
        repo, "latest-cpu", [(layer, LAYER_GZIP), (zst(tar_bytes([file("b")])), LAYER_ZSTD)]
    )
    client = client_for(registry.host)
    ref = parse_reference(f"{registry.host}/{repo}:latest-cpu")
    endpoint = client.endpoint(registry.host)
    assert client.resolve_tag(endpoint, ref) == digest
    manifest = client.get_manifest(endpoint, ref, digest)
    assert isinstance(manifest, ImageManifest) and len(manifest.layers) == 2
    cache = BlobCache(tmp_path / "blobs")
    descriptor = manifest.layers[0]
    client.fetch_blob(endpoint, ref, descriptor, cache.writer(descriptor.digest, descriptor.size))
    assert cache.path(descriptor.digest).read_bytes() == layer
    with pytest.raises(ManifestNotFound):
        client.resolve_tag(endpoint, ref.with_tag("missing"))


def test_multi_arch_index_selects_the_platform(registry: Registry) -> None:
    repo = repo_name()
    amd, amd_doc = registry.push_image(repo, "amd", [(gz(tar_bytes([file("amd")])), LAYER_GZIP)])
    arm, arm_doc = registry.push_image(
        repo, "arm", [(gz(tar_bytes([file("arm")])), LAYER_GZIP)], platform="linux/arm64"
    )
    size = lambda doc: len(json.dumps(doc).encode())  # noqa: E731
    index = registry.push_index(
        repo, "multi", [(amd, size(amd_doc), "linux/amd64"), (arm, size(arm_doc), "linux/arm64")]
    )
    client = client_for(registry.host)
    ref = parse_reference(f"{registry.host}/{repo}:multi")
    endpoint = client.endpoint(registry.host)
    document = client.get_manifest(endpoint, ref, client.resolve_tag(endpoint, ref))
    assert isinstance(document, ImageIndex) and client.resolve_tag(endpoint, ref) == index
    selected = document.select("linux/arm64")
    assert selected is not None and selected.digest == arm
    assert document.select("linux/s390x") is None


def test_blob_altered_in_registry_storage_is_a_digest_mismatch(registry: Registry, tmp_path: Path) -> None:
    repo = repo_name()
    layer = gz(tar_bytes([file("x", b"original")]))
    digest, _ = registry.push_image(repo, "t", [(layer, LAYER_GZIP)])
    blob_digest = digest_of(layer)
    data_path = registry.blob_data_path(blob_digest)
    original = data_path.read_bytes()
    tampered = bytearray(original)
    tampered[-20] ^= 0xFF
    data_path.write_bytes(bytes(tampered))
    try:
        client = client_for(registry.host)
        cache = BlobCache(tmp_path / "blobs")
        ref = parse_reference(f"{registry.host}/{repo}@{digest}")
        descriptor = Descriptor.model_validate(
            {"mediaType": LAYER_GZIP, "digest": blob_digest, "size": len(layer)}
        )
        with pytest.raises(DigestMismatch, match=blob_digest):
            client.fetch_blob(
                client.endpoint(registry.host), ref, descriptor, cache.writer(blob_digest, len(layer))
            )
        assert not cache.has(blob_digest)
        assert not cache.partial_path(blob_digest).exists()
    finally:
        data_path.write_bytes(original)


def test_dropped_connection_resumes_with_range(registry: Registry, tmp_path: Path) -> None:
    repo = repo_name()
    layer = gz(tar_bytes([file("big", os.urandom(300_000))]))
    _, manifest = registry.push_image(repo, "t", [(layer, LAYER_GZIP)])
    descriptor = Descriptor.model_validate(manifest["layers"][0])  # type: ignore[index]
    faults = Faults(drop_blob_after=100_000)
    with faulty_proxy(registry.url, faults) as proxy:
        client = client_for(proxy)
        cache = BlobCache(tmp_path / "blobs")
        ref = parse_reference(f"{proxy}/{repo}:t")
        client.fetch_blob(
            client.endpoint(proxy), ref, descriptor, cache.writer(descriptor.digest, descriptor.size)
        )
    assert cache.path(descriptor.digest).read_bytes() == layer
    ranges = [r for method, path, r in faults.seen if "/blobs/" in path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0


def test_503_then_success_and_persistent_503_fails_cleanly(registry: Registry) -> None:
    repo = repo_name()
    digest, _ = registry.push_image(repo, "t", [(gz(tar_bytes([file("a")])), LAYER_GZIP)])
    with faulty_proxy(registry.url, Faults(unavailable=2)) as proxy:
        client = client_for(proxy)
        assert client.resolve_tag(client.endpoint(proxy), parse_reference(f"{proxy}/{repo}:t")) == digest
    with faulty_proxy(registry.url, Faults(unavailable=10)) as proxy:
        client = client_for(proxy)
        with pytest.raises(RegistryError, match="503 \\(after 3 attempts\\)"):
            client.resolve_tag(client.endpoint(proxy), parse_reference(f"{proxy}/{repo}:t"))


# -- protocol details with MockTransport ------------------------------------------------------


def test_token_auth_with_credentials_and_no_credentials_across_redirects(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    blob = b"layer-bytes"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.host == "auth.example":
            expected = "Basic " + base64.b64encode(b"user:secret").decode()
            assert request.headers.get("Authorization") == expected
            assert request.url.params["scope"] == "repository:org/app:pull"
            return httpx.Response(200, json={"token": "T0KEN"})
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=blob)
        if request.headers.get("Authorization") != "Bearer T0KEN":
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg",scope="repository:org/app:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(307, headers={"Location": "https://cdn.example/blob?sig=1"})

    client = RegistryClient(
        httpx.Client(transport=httpx.MockTransport(handler), trust_env=False),
        credentials={"reg.example": ("user", "secret")},
        retry=FAST,
    )
    cache = BlobCache(tmp_path / "blobs")
    descriptor = Descriptor.model_validate(
        {"mediaType": LAYER_GZIP, "digest": digest_of(blob), "size": len(blob)}
    )
    ref = parse_reference("reg.example/org/app:1")
    client.fetch_blob(
        Endpoint("reg.example"), ref, descriptor, cache.writer(descriptor.digest, descriptor.size)
    )
    cdn_requests = [auth for url, auth in seen if "cdn.example" in url]
    assert cdn_requests == [None], "credentials must not follow a redirect to another host"
    assert ("https://reg.example/v2/org/app/blobs/" + descriptor.digest, "Bearer T0KEN") in seen


def test_manifest_checks() -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 2},
            "layers": [],
        }
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("c" * 64):
            return httpx.Response(200, content=b"{" + b" " * 10_000 + b"}")
        if request.method == "HEAD":
            return httpx.Response(200)  # no Docker-Content-Digest: falls back to GET and hashes
        return httpx.Response(200, content=manifest, headers={"Docker-Content-Digest": "sha256:" + "b" * 64})

    client = RegistryClient(
        httpx.Client(transport=httpx.MockTransport(handler), trust_env=False),
        max_manifest_bytes=4096,
        retry=FAST,
    )
    endpoint = Endpoint("reg.example")
    with pytest.raises(DigestMismatch, match="the registry says"):
        client.resolve_tag(endpoint, parse_reference("reg.example/a/b:tag"))
    with pytest.raises(DigestMismatch, match="hashes to"):
        client.get_manifest(endpoint, parse_reference("reg.example/a/b"), "sha256:" + "b" * 64)
    with pytest.raises(RegistryError, match=r"over limits\.max_manifest_bytes \(4096\)"):
        client.get_manifest(endpoint, parse_reference("reg.example/a/b"), "sha256:" + "c" * 64)


def test_plain_http_only_for_insecure_registries() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.host}")
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "d" * 64})

    client = RegistryClient(
        httpx.Client(transport=httpx.MockTransport(handler), trust_env=False),
        insecure_registries=frozenset({"local.test:5000"}),
        retry=FAST,
    )
    for host in ("quay.io", "local.test:5000", "docker.io"):
        ref = parse_reference(f"{host}/org/app:1")
        client.resolve_tag(client.endpoint(ref.registry), ref)
    assert seen == ["https://quay.io", "http://local.test", "https://registry-1.docker.io"]
    mirror = client.endpoint("mirror.internal:5000/dockerhub")
    assert (
        mirror.repository(parse_reference("localai/x:1")) == "dockerhub/localai/x"
        and mirror.scheme == "https"
    )


def test_referrers_api_paging_and_fallback() -> None:
    subject = "sha256:" + "e" * 64
    bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"

    def descriptor(n: int) -> dict[str, object]:
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + f"{n:064x}",
                "size": 10, "artifactType": bundle_type}  # fmt: skip

    def index(*items: dict[str, object]) -> dict[str, object]:
        return {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list(items),
        }

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if path == f"/v2/paged/app/referrers/{subject}" and not request.url.query:
            headers["Link"] = f'</v2/paged/app/referrers/{subject}?last=1>; rel="next"'
            return httpx.Response(200, json=index(descriptor(1)), headers=headers)
        if path == f"/v2/paged/app/referrers/{subject}":
            return httpx.Response(200, json=index(descriptor(2), descriptor(3)), headers=headers)
        if path.startswith("/v2/old/app/referrers/"):
            return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND"}]})
        if path == f"/v2/old/app/manifests/{subject.replace(':', '-')}":
            return httpx.Response(200, json=index(descriptor(4)), headers=headers)
        return httpx.Response(404)

    client = RegistryClient(httpx.Client(transport=httpx.MockTransport(handler), trust_env=False), retry=FAST)
    endpoint = Endpoint("reg.example")
    paged = client.referrers(endpoint, parse_reference("reg.example/paged/app:1"), subject, limit=10)
    assert [d.digest[-1] for d in paged] == ["1", "2", "3"]
    assert len(client.referrers(endpoint, parse_reference("reg.example/paged/app:1"), subject, limit=2)) == 2
    fallback = client.referrers(endpoint, parse_reference("reg.example/old/app:1"), subject, limit=10)
    assert [d.digest[-1] for d in fallback] == ["4"]
    assert client.referrers(endpoint, parse_reference("reg.example/none/app:1"), subject, limit=10) == []


def test_a_host_that_never_answers_is_skipped_for_the_rest_of_the_run() -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        raise httpx.ConnectError("connection refused", request=request)

    client = RegistryClient(
        client=httpx.Client(transport=httpx.MockTransport(refuse), trust_env=False),
        insecure_registries=frozenset({"mirror.test:5000"}),
        retry=RetryPolicy(attempts=3, initial_wait=0),
    )
    endpoint = client.endpoint("mirror.test:5000")
    reference = parse_reference("mirror.test:5000/backends/echo:v1")
    with pytest.raises(RegistryError, match="after 3 attempts"):
        client.resolve_tag(endpoint, reference)
    assert len(calls) == 3
    with pytest.raises(RegistryError, match="did not respond earlier in this run"):
        client.get_manifest(endpoint, reference, "sha256:" + "a" * 64)
    assert len(calls) == 3, "no new attempt against a dead mirror"


def test_a_refused_bearer_token_is_fetched_again_once() -> None:
    """Tokens expire: the registry refusing the cached one gets one fresh token request, not a
    failure; a registry that refuses the fresh one too is an authorization error."""
    issued: list[str] = []
    valid: set[str] = set()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 2},
                           "layers": []}).encode()  # fmt: skip
    digest = digest_of(manifest)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token = f"T{len(issued)}"
            issued.append(token)
            valid.add(token)
            return httpx.Response(200, json={"token": token})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in valid:
            challenge = 'Bearer realm="https://auth.example/token",service="reg"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge}, content=b"x" * 100)
        return httpx.Response(200, content=manifest, headers={"Content-Type": OCI_MANIFEST})

    client = RegistryClient(httpx.Client(transport=httpx.MockTransport(handler), trust_env=False), retry=FAST)
    ref = parse_reference("reg.example/org/app:1")
    endpoint = Endpoint("reg.example")
    client.get_manifest_bytes(endpoint, ref, digest)
    assert issued == ["T0"]
    client.get_manifest_bytes(endpoint, ref, digest)  # the cached token still works: no new one
    assert issued == ["T0"]
    valid.clear()  # it expired
    client.get_manifest_bytes(endpoint, ref, digest)
    assert issued == ["T0", "T1"]
    valid.clear()

    def refuse_all(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "useless"})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/t"'})

    stubborn = RegistryClient(
        httpx.Client(transport=httpx.MockTransport(refuse_all), trust_env=False), retry=FAST
    )
    with pytest.raises(RegistryUnauthorized):
        stubborn.get_manifest_bytes(endpoint, ref, digest)
