"""Build the demo gallery's OCI image layouts (deterministic: same bytes every run).

    python galleries/demo/make_layouts.py        # rewrites galleries/demo/layouts/

Each layout holds one small image whose run.sh echoes its arguments. Only the standard library is
used, so the layouts can be rebuilt anywhere; tests use the same functions.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
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


def write_layout(root: Path, layers: list[tuple[bytes, str]], *, platform: str = "linux/amd64") -> str:
    """Write an OCI image layout with one image; returns its manifest digest."""
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
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps(index, sort_keys=True))
    return str(manifest_blob["digest"])


def demo_layer(variant: str) -> bytes:
    run_sh = f'#!/bin/sh\necho "demo-echo ({variant} build): $*"\n'.encode()
    readme = f"The {variant} build of the demo-echo backend.\n".encode()
    return gzip.compress(tar_of({"run.sh": (run_sh, 0o755), "README": (readme, 0o644)}), mtime=0)


def main() -> None:
    here = Path(__file__).resolve().parent
    for variant in ("cpu", "cuda12"):
        digest = write_layout(
            here / "layouts" / f"demo-echo-{variant}",
            [(demo_layer(variant), "application/vnd.oci.image.layer.v1.tar+gzip")],
        )
        sys.stdout.write(f"demo-echo-{variant}: {digest}\n")


if __name__ == "__main__":
    main()
