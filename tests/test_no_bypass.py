"""The no-bypass matrix: no entry point, candidate kind or failure installs something untrusted.

entry points {install, meta-backend, upgrade, upgrade through a meta-backend, preload by name
(through a meta-backend), preload --lock (the lock written before the failure, from a gallery
without a policy, so only the worker's checks stand in the way)} x candidates {uri, entry mirror in another repository,
registry mirror, tag fallback, local layout, tarball + mirror} x failures {bad signature, strict
with no policy, strict with no sha256, tampered blob, primary fails integrity then a weaker
candidate}. Combinations that cannot occur (a tarball has no registry to tamper, an OCI image no
sha256 field) are not generated. Every case must exit 3 and leave backends/ (an upgrade's old
version included) and the blob cache byte-identical; strict-mode refusals write nothing at all,
not even a lock file. Later entry points (install --from) join the matrix as they land.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.capability import HostFacts
from gallery.config import load_config
from gallery.fleet import lock_backends, preload
from gallery.install import Installer
from gallery.registry import RegistryClient, RetryPolicy
from gallery.signatures import SigstoreVerifier

from .conftest import REPO
from .registry_server import LAYER_GZIP, Registry, digest_of, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

POLICY = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
MALLORY = "https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main"
CANDIDATES = ["uri", "entry-mirror", "registry-mirror", "tag-fallback", "layout", "tarball+mirror"]
FAILURES = ["bad-signature", "strict-no-policy", "strict-no-sha256", "tampered-blob", "integrity-then-weaker"]


def applicable(candidate: str, failure: str, entry_point: str = "install") -> bool:
    if (
        entry_point == "preload-lock"
        and candidate == "tarball+mirror"
        and failure in ("tampered-blob", "integrity-then-weaker")
    ):
        return False  # a tarball whose sha256 does not match cannot be locked in the first place
    if failure == "strict-no-sha256":
        return candidate == "tarball+mirror"
    if failure == "strict-no-policy":
        return candidate != "tarball+mirror"  # a tarball with a sha256 is protected without a policy
    if failure == "integrity-then-weaker":
        return candidate in ("entry-mirror", "registry-mirror", "tag-fallback", "tarball+mirror")
    return True


ENTRY_POINTS = ["install", "meta-backend", "upgrade", "upgrade-meta", "preload", "preload-lock"]
MATRIX = [(e, c, f) for e in ENTRY_POINTS for c in CANDIDATES for f in FAILURES if applicable(c, f, e)]


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    if root.exists():
        for path in sorted(root.rglob("*")):
            info = path.lstat()
            digest.update(f"{path.relative_to(root)}|{info.st_mode:o}\n".encode())
            if path.is_file() and not path.is_symlink():
                digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sigstore_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigstoreInstance, Path]:
    instance = SigstoreInstance()
    return instance, instance.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


@pytest.mark.parametrize(("entry_point", "candidate", "failure"), MATRIX, ids=["-".join(m) for m in MATRIX])
def test_no_bypass(
    tmp_path: Path, registry: Registry, sigstore_root: tuple[SigstoreInstance, Path],
    entry_point: str, candidate: str, failure: str,
) -> None:  # fmt: skip
    instance, root = sigstore_root
    repo = f"matrix/{secrets.token_hex(4)}"
    host = registry.host
    identity = MALLORY if failure == "bad-signature" else DEFAULT_IDENTITY
    layer = gz(
        tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755), file("payload", secrets.token_bytes(64))])
    )

    # For "integrity-then-weaker" the primary gets its own layer, which is tampered; the weaker
    # candidate's layer is good, so only the no-fallback rule can stop the install.
    bad_layer = gz(
        tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755), file("primary", secrets.token_bytes(64))])
    )

    def push(repository: str, tag: str, content: bytes = layer) -> str:
        digest, _ = registry.push_image(repository, tag, [(content, LAYER_GZIP)])
        push_signature(registry, repository, digest, instance.sign_image(digest, identity=identity))
        return digest

    def tamper(content: bytes = layer) -> None:
        path = registry.blob_data_path(digest_of(content))
        path.write_bytes(path.read_bytes()[:-16] + bytes(16))

    entry: dict[str, Any] = {"name": "target"}
    fields: dict[str, Any] = {}
    if candidate == "uri":
        push(repo, "v1")
        entry["uri"] = f"{host}/{repo}:v1"
    elif candidate == "entry-mirror":
        entry["uri"] = f"{host}/{repo}:v1"
        entry["mirrors"] = [f"{host}/{repo}-other:v1"]
        push(f"{repo}-other", "v1")
        if failure == "integrity-then-weaker":
            push(repo, "v1", bad_layer)  # the primary exists; its own blob will be tampered
    elif candidate == "registry-mirror":
        entry["uri"] = f"{host}/{repo}:v1"
        fields["registry_mirrors"] = {host: [f"{host}/mirror"]}
        if failure == "integrity-then-weaker":
            push(f"mirror/{repo}", "v1", bad_layer)  # tried first, and bad
            push(repo, "v1")
        else:
            push(f"mirror/{repo}", "v1")
            push(repo, "v1")
    elif candidate == "tag-fallback":
        entry["uri"] = f"{host}/{repo}:latest-cpu"
        push(repo, "master-cpu")
        if failure == "integrity-then-weaker":
            push(repo, "latest-cpu", bad_layer)
    elif candidate == "layout":
        layout = tmp_path / "index" / "layout"
        write_layout(layout, [(layer, LAYER_GZIP)], sign=lambda d: instance.sign_image(d, identity=identity))
        entry["uri"] = "ocifile://layout"
        if failure == "tampered-blob":
            blob = layout / "blobs" / "sha256" / digest_of(layer)[7:]
            blob.write_bytes(blob.read_bytes()[:-16] + bytes(16))
    else:  # tarball + mirror
        tarball = tmp_path / "backend.tar.gz"
        tarball.write_bytes(layer)
        entry["uri"] = f"file://{tmp_path / 'missing.tar.gz'}"
        entry["mirrors"] = [f"file://{tarball}"]
        if failure != "strict-no-sha256":
            entry["sha256"] = hashlib.sha256(layer).hexdigest()
        if failure == "tampered-blob":
            entry["sha256"] = "0" * 64
        if failure == "bad-signature":
            signature = tmp_path / "backend.sigstore"
            signature.write_bytes(instance.sign_blob(layer, identity=MALLORY))
            entry["signature"] = f"file://{signature}"
        if failure == "integrity-then-weaker":
            bad = tmp_path / "primary.tar.gz"
            bad.write_bytes(layer[:-16] + bytes(16))
            entry["uri"] = f"file://{bad}"
    if failure == "tampered-blob" and candidate not in ("layout", "tarball+mirror"):
        tamper()
    if failure == "integrity-then-weaker" and candidate != "tarball+mirror":
        tamper(bad_layer)  # without a policy an integrity failure ends the install: no fallback

    entries = [entry]
    if entry_point in ("meta-backend", "upgrade-meta", "preload"):
        entries.append({"name": "meta", "capabilities": {"default": "target"}})
    index = tmp_path / "index" / "index.yaml"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(yaml.safe_dump(entries))
    gallery: dict[str, Any] = {"name": "m", "url": str(index), "trusted_root": str(root)}
    if failure in ("bad-signature", "tampered-blob") and not candidate.startswith("tarball"):
        gallery["verification"] = POLICY
    if failure == "bad-signature" and candidate.startswith("tarball"):
        gallery["verification"] = POLICY
    strict = failure.startswith("strict")
    config_data = {"format_version": 1, "backends_path": "./backends", "cache_path": "./cache",
                   "insecure_registries": [host], "capability": "default", "require_integrity": strict,
                   "galleries": [gallery], **fields}  # fmt: skip
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump(config_data))
    config = load_config(tmp_path / "gallery.yaml")
    lock = None
    if entry_point == "preload-lock":  # locked where no policy or strict mode stood in the way
        permissive = config.model_copy(update={"require_integrity": False, "galleries": (
            config.galleries[0].model_copy(update={"verification": None}),)})  # fmt: skip
        client = httpx.Client(trust_env=False, timeout=10)
        outcome = lock_backends(permissive, ["target"], make_installer=lambda c: Installer(
            c, client=client, verifier=SigstoreVerifier(), detector=lambda: HostFacts("linux", "amd64"),
            registry=RegistryClient.from_config(c, client, retry=RetryPolicy(attempts=1, initial_wait=0))))  # fmt: skip
        assert outcome.exit_code == 0, outcome.batch.results[0].error
        lock = outcome.lock

    # Something already installed and cached, which must stay exactly as it is.
    existing = tmp_path / "backends" / "existing"
    existing.mkdir(parents=True)
    (existing / "run.sh").write_text("#!/bin/sh\n")
    (existing / "metadata.json").write_text('{"name": "existing", "format_version": 1}')
    if entry_point.startswith("upgrade"):  # an older version of the target is installed
        old = tmp_path / "backends" / "target"
        old.mkdir()
        (old / "run.sh").write_text("#!/bin/sh\necho old\n")
        (old / "metadata.json").write_text(
            '{"name": "target", "format_version": 1, "gallery": "m", "digest": "sha256:' + "ab" * 32 + '"}'
        )
    if entry_point == "upgrade-meta":
        (tmp_path / "backends" / "meta").mkdir()
        (tmp_path / "backends" / "meta" / "metadata.json").write_text(
            '{"name": "meta", "format_version": 1, "gallery": "m", "meta_backend_for": "target"}'
        )
    cached = tmp_path / "cache" / "blobs" / "sha256"
    cached.mkdir(parents=True, exist_ok=True)  # a locked tarball may be cached already
    (cached / hashlib.sha256(b"cached").hexdigest()).write_bytes(b"cached")
    before = (tree_hash(tmp_path / "backends"), tree_hash(tmp_path / "cache" / "blobs"))

    client = httpx.Client(trust_env=False, timeout=10)
    installer = Installer(config, client=client, verifier=SigstoreVerifier(),
                          registry=RegistryClient.from_config(config, client, retry=RetryPolicy(attempts=1, initial_wait=0)),
                          detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
    requested = "meta" if entry_point in ("meta-backend", "upgrade-meta", "preload") else "target"
    if entry_point.startswith("upgrade"):
        result = installer.upgrade_one(requested)
    elif entry_point.startswith("preload"):
        (result,) = preload(installer, names=() if lock else [requested], lock=lock).results
    else:
        result = installer.install_one(requested)

    assert result.exit_code == 3, (result.status, result.error)
    state = tmp_path / "backends" / ".gallery"
    if strict:
        assert not state.exists()
    if state.exists():  # empty bookkeeping dirs and lock files may appear; nothing else
        assert not [
            p
            for p in state.rglob("*")
            if (p.is_file() and p.parent.name != "locks")
            or (p.is_dir() and any(p.iterdir()) and p.name not in ("staging", "locks"))
        ]
        shutil.rmtree(state)
    assert (tree_hash(tmp_path / "backends"), tree_hash(tmp_path / "cache" / "blobs")) == before
