"""Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1, and pushing images to it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @cached_property
    def client(self) -> httpx.Client:
        """One client for every push: building one costs tens of milliseconds (its TLS context)."""
        return httpx.Client(trust_env=False, timeout=30)

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        client = self.client
        start = client.post(f"{self.url}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        separator = "&" if "?" in location else "?"
        put = client.put(
            f"{httpx.URL(self.url).join(location)}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 201, put.text
        return digest

    def push_manifest(self, repo: str, reference: str, document: dict[str, object], media_type: str) -> str:
        data = json.dumps(document).encode()
        client = self.client
        put = client.put(
            f"{self.url}/v2/{repo}/manifests/{reference}",
            content=data,
            headers={"Content-Type": media_type},
        )
        assert put.status_code == 201, put.text
        return digest_of(data)

    def push_image(
        self, repo: str, tag: str, layers: list[tuple[bytes, str]], *, platform: str = "linux/amd64"
    ) -> tuple[str, dict[str, object]]:
        """Push layers, a config and a manifest; returns (manifest digest, manifest document)."""
        os_name, arch = platform.split("/")[:2]
        config = json.dumps(
            {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        descriptors = []
        for data, media_type in layers:
            descriptors.append(
                {"mediaType": media_type, "digest": self.push_blob(repo, data), "size": len(data)}
            )
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(repo, config), "size": len(config)},
            "layers": descriptors,
        }
        return self.push_manifest(repo, tag, manifest, OCI_MANIFEST), manifest

    def push_index(self, repo: str, tag: str, manifests: list[tuple[str, int, str]]) -> str:
        """An OCI index over already-pushed manifests: (digest, size, platform)."""
        entries = []
        for digest, size, platform in manifests:
            os_name, arch, *variant = platform.split("/")
            plat: dict[str, str] = {"os": os_name, "architecture": arch}
            if variant:
                plat["variant"] = variant[0]
            entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": plat})
        return self.push_manifest(
            repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX
        )

    def blob_data_path(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


@contextmanager
def running_registry(workdir: Path, *, proxy_of: str | None = None) -> Iterator[Registry]:
    """``proxy_of``: the URL of an upstream registry; this one then runs as its pull-through cache
    (distribution's proxy mode, read-only)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install -y docker-registry)")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        + (f"proxy: {{remoteurl: '{proxy_of}'}}\n" if proxy_of else "")
    )
    log = (workdir / "registry.log").open("wb")
    process = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={"PATH": os.environ.get("PATH", "")},
    )
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{host}/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(workdir / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield Registry(host=host, storage=storage)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def push_signature(
    registry: Registry,
    repo: str,
    subject_digest: str,
    bundle: bytes,
    *,
    subject_media_type: str = OCI_MANIFEST,
    subject_size: int = 0,
) -> str:
    """Publish a Sigstore bundle as cosign does on a registry without the referrers API: a referrer
    manifest pushed by digest, listed in the tag-schema fallback index ``sha256-<hex>``."""
    empty = registry.push_blob(repo, b"{}")
    layer = registry.push_blob(repo, bundle)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
        "layers": [{"mediaType": BUNDLE_TYPE, "digest": layer, "size": len(bundle)}],
        "subject": {"mediaType": subject_media_type, "digest": subject_digest, "size": subject_size},
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        },
    }
    data = json.dumps(manifest).encode()
    digest = registry.push_manifest(repo, digest_of(data), manifest, OCI_MANIFEST)
    tag = subject_digest.replace(":", "-")
    client = registry.client
    existing = client.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_INDEX})
    entries = existing.json()["manifests"] if existing.status_code == 200 else []
    entries.append(
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data), "artifactType": BUNDLE_TYPE}
    )
    registry.push_manifest(
        repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX
    )
    return digest
