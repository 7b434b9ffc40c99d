"""Our test Sigstore instance, checked by an independent verifier: npm's @sigstore/verify.

Runs when node and the npm packages are present (.ci/run installs them into .ci/node when node
exists); otherwise it is skipped, except under CI=true with node present, where it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance

NODE_MODULES = REPO / ".ci" / "node" / "node_modules"
SCRIPT = REPO / "tests" / "node" / "verify_bundle.js"


def node_verify(
    root: Path, bundle: Path, identity: str, issuer: str, artifact: Path | None = None, *, tsa: int = 0
) -> tuple[int, str]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@sigstore" / "verify").is_dir():
        if os.environ.get("CI") and node is not None:
            pytest.fail("node is present but @sigstore/verify is not installed; .ci/run installs it")
        pytest.skip("node or @sigstore/verify not available")
    command = [node, str(SCRIPT), str(root), str(bundle), identity, issuer, str(artifact or "-"), str(tsa)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={"NODE_PATH": str(NODE_MODULES), "PATH": os.environ.get("PATH", "")})  # fmt: skip
    return done.returncode, done.stdout.strip() + done.stderr.strip()


def test_image_and_blob_bundles_verify_independently(tmp_path: Path) -> None:
    instance = SigstoreInstance()
    root = instance.write_trusted_root(tmp_path / "trusted_root.json")
    image = tmp_path / "image.sigstore"
    image.write_bytes(instance.sign_image("sha256:" + "ab" * 32))
    assert node_verify(root, image, DEFAULT_IDENTITY, GITHUB_ISSUER) == (0, "verified")
    artifact = tmp_path / "backend.tar.gz"
    artifact.write_bytes(b"tarball bytes")
    blob = tmp_path / "blob.sigstore"
    blob.write_bytes(instance.sign_blob(artifact.read_bytes()))
    assert node_verify(root, blob, DEFAULT_IDENTITY, GITHUB_ISSUER, artifact) == (0, "verified")


def test_the_independent_verifier_refuses_what_we_refuse(tmp_path: Path) -> None:
    instance = SigstoreInstance()
    root = instance.write_trusted_root(tmp_path / "trusted_root.json")
    rogue = tmp_path / "rogue.sigstore"
    rogue.write_bytes(SigstoreInstance(name="rogue").sign_image("sha256:" + "cd" * 32))
    code, output = node_verify(root, rogue, DEFAULT_IDENTITY, GITHUB_ISSUER)
    assert code == 1 and output != "verified"
    other = tmp_path / "other.sigstore"
    other.write_bytes(instance.sign_image("sha256:" + "cd" * 32))
    code, _ = node_verify(
        root, other, "https://github.com/org/other/.github/workflows/x.yml@refs/heads/main", GITHUB_ISSUER
    )
    assert code == 1


def test_the_committed_demo_signatures_verify_independently(tmp_path: Path) -> None:
    import json

    layout = REPO / "galleries" / "demo" / "layouts" / "demo-echo-cpu"
    index = json.loads((layout / "index.json").read_text())
    referrer = next(m for m in index["manifests"] if m.get("artifactType"))
    manifest = json.loads((layout / "blobs" / "sha256" / referrer["digest"][7:]).read_text())
    bundle = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    identity = "https://github.com/example/gallery-demo/.github/workflows/release.yml@refs/tags/v1.0.0"
    root = REPO / "galleries" / "demo" / "trusted_root.json"
    assert node_verify(root, bundle, identity, GITHUB_ISSUER) == (0, "verified")


def test_rekor_v2_bundles_with_signed_timestamps_verify_independently(tmp_path: Path) -> None:
    """Rekor v2 entries (hashedrekord 0.0.2, no log time) with our TSA's RFC 3161 timestamps: the
    independent verifier accepts them only with the timestamp (tsaThreshold 1) and refuses them
    when the timestamp comes from a TSA the root does not list."""
    instance = SigstoreInstance()
    root = instance.write_trusted_root(tmp_path / "trusted_root.json")
    image = tmp_path / "image.sigstore"
    image.write_bytes(instance.sign_image("sha256:" + "ab" * 32, rekor_v2=True))
    assert node_verify(root, image, DEFAULT_IDENTITY, GITHUB_ISSUER, tsa=1) == (0, "verified")
    artifact = tmp_path / "backend.tar.gz"
    artifact.write_bytes(b"tarball bytes")
    blob = tmp_path / "blob.sigstore"
    blob.write_bytes(instance.sign_blob(artifact.read_bytes(), rekor_v2=True))
    assert node_verify(root, blob, DEFAULT_IDENTITY, GITHUB_ISSUER, artifact, tsa=1) == (0, "verified")
    stranger = SigstoreInstance()
    foreign = tmp_path / "foreign-tsa.sigstore"
    instance.tsa, original = stranger.tsa, instance.tsa
    foreign.write_bytes(instance.sign_blob(artifact.read_bytes(), rekor_v2=True))
    instance.tsa = original
    code, output = node_verify(root, foreign, DEFAULT_IDENTITY, GITHUB_ISSUER, artifact, tsa=1)
    assert code == 1 and output != "verified"
