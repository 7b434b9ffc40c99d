"""Build the demo gallery's signed OCI image layouts.

    .venv/bin/python galleries/demo/make_layouts.py   # rewrites galleries/demo/layouts/ and trusted_root.json

Each layout holds one small image whose run.sh echoes its arguments (the image bytes are the same
every run), plus a cosign-format signature referrer made with a throwaway demo Sigstore instance
(tests/sigstore_instance.py). Only the instance's public trust material is kept, in
galleries/demo/trusted_root.json; its private keys die with this process, so nobody can sign
anything else for the demo policy. Tests use the same functions.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

MTIME = 1_700_000_000


def tar_of(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_layout(
    root: Path,
    layers: list[tuple[bytes, str]],
    *,
    platform: str = "linux/amd64",
    sign: Callable[[str], bytes] | None = None,
) -> str:
    """Write an OCI image layout with one image (and, with ``sign``, a signature referrer for its
    manifest digest, listed in index.json with the bundle artifactType); returns the digest."""
    if root.exists():
        shutil.rmtree(root)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    os_name, arch = platform.split("/")[:2]
    config = json.dumps(
        {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": media_type, **blob(data)} for data, media_type in layers],
    }
    manifest_blob = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_blob,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    if sign is not None:
        bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
        bundle = blob(sign(str(manifest_blob["digest"])))
        referrer = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": bundle_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", **blob(b"{}")},
            "layers": [{"mediaType": bundle_type, **bundle}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob},
        }
        referrer_blob = blob(json.dumps(referrer, sort_keys=True).encode())
        index["manifests"].append(  # type: ignore[attr-defined]
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": bundle_type,
                **referrer_blob,
            }
        )
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps(index, sort_keys=True))
    return str(manifest_blob["digest"])


def demo_layer(variant: str) -> bytes:
    run_sh = f'#!/bin/sh\necho "demo-echo ({variant} build): $*"\n'.encode()
    readme = f"The {variant} build of the demo-echo backend.\n".encode()
    return gzip.compress(tar_of({"run.sh": (run_sh, 0o755), "README": (readme, 0o644)}), mtime=0)


DEMO_IDENTITY = "https://github.com/example/gallery-demo/.github/workflows/release.yml@refs/tags/v1.0.0"
DEMO_ISSUER = "https://token.actions.githubusercontent.com"


def main() -> None:
    import datetime as dt

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent.parent / "tests"))
    from sigstore_instance import SigstoreInstance

    instance = SigstoreInstance(name="gallery-demo")
    signed_at = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)

    # The images are signed as the public-good instance now logs them: Rekor v2 (no log time; an
    # RFC 3161 timestamp from the demo TSA is the signing time). The index keeps a Rekor v1 entry,
    # so the demo verifies both kinds.
    def sign(digest: str) -> bytes:
        return instance.sign_image(
            digest, identity=DEMO_IDENTITY, issuer=DEMO_ISSUER, when=signed_at, rekor_v2=True
        )

    instance.write_trusted_root(here / "trusted_root.json")
    for variant in ("cpu", "cuda12"):
        digest = write_layout(
            here / "layouts" / f"demo-echo-{variant}",
            [(demo_layer(variant), "application/vnd.oci.image.layer.v1.tar+gzip")],
            sign=sign,
        )
        sys.stdout.write(f"demo-echo-{variant}: {digest} (signed by {DEMO_IDENTITY})\n")
    # The index is signed too (cosign sign-blob --bundle), over its exact bytes: edit index.yaml,
    # then run this again.
    index = (here / "index.yaml").read_bytes()
    bundle = instance.sign_blob(index, identity=DEMO_IDENTITY, issuer=DEMO_ISSUER, when=signed_at)
    (here / "index.yaml.sigstore.json").write_bytes(bundle)
    sys.stdout.write(f"index.yaml: signed by {DEMO_IDENTITY}\n")


if __name__ == "__main__":
    main()
