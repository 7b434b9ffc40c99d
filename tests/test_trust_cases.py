"""The nine holes of issue 15, each reproduced through the real CLI against real servers (the local
distribution registry, an HTTP server on 127.0.0.1, the test Sigstore instance), and each refused
with exit 3 (7: works) with ``backends/`` and the blob cache exactly as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.operations.lockfile import LockEntry, LockFile, write_lock
from gallery.place.metadata import LayerRecord, read_metadata
from gallery.verify.evidence import Evidence

from .file_server import FileServer, serving
from .hostile.harness import tree_state
from .registry_server import LAYER_GZIP, Registry, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes

MALLORY = "https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main"
NIGHTLY = "https://github.com/org/gallery/.github/workflows/nightly.yml@refs/heads/main"
POLICY = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}


@dataclass
class Sigstore:
    instance: SigstoreInstance
    root: Path


@pytest.fixture(scope="module")
def sig(tmp_path_factory: pytest.TempPathFactory) -> Sigstore:
    instance = SigstoreInstance()
    return Sigstore(
        instance, instance.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with serving() as running:
        yield running


def backend(label: str) -> bytes:
    """A gzip layer that is a valid backend, unique per call."""
    return gz(tar_bytes([file("run.sh", f"#!/bin/sh\necho {label}\n".encode(), mode=0o755),
                         file("payload", secrets.token_bytes(32))]))  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Project:
    root: Path
    config: Path
    server: FileServer
    index_path: str | None = None  # on the server, when the index is remote

    def gallery(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback is a bug, whatever the exit code
        return result

    def write_index(self, entries: list[dict[str, Any]]) -> None:
        data = yaml.safe_dump(entries).encode()
        if self.index_path is not None:
            self.server.publish(self.index_path, data)
        else:
            (self.root / "index" / "index.yaml").write_bytes(data)

    def state(self) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """backends/ (bookkeeping locks aside), the blob cache, and what is left in partial/."""
        partial = self.root / "cache" / "partial"
        backends = tree_state(self.root / "backends", skip=(".gallery/locks",))
        for bookkeeping in (".gallery", ".gallery/staging", ".gallery/journal", ".gallery/trash"):
            if backends.get(bookkeeping, "").startswith("4"):  # an empty directory (files inside still count)
                del backends[bookkeeping]
        return (
            backends,
            tree_state(self.root / "cache" / "blobs"),
            sorted(p.name for p in partial.iterdir()) if partial.is_dir() else [],
        )


def make_project(
    tmp_path: Path,
    server: FileServer,
    sig: Sigstore,
    entries: list[dict[str, Any]],
    *,
    policy: bool = True,
    strict: bool = True,
    remote: bool = False,
    registry: Registry | None = None,
    gallery: dict[str, Any] | None = None,
    **fields: Any,
) -> Project:
    (tmp_path / "index").mkdir(parents=True, exist_ok=True)
    index_path = f"/{secrets.token_hex(4)}/index.yaml" if remote else None
    project = Project(tmp_path, tmp_path / "gallery.yaml", server, index_path)
    project.write_index(entries)
    url = f"{server.url}{index_path}" if remote else str(tmp_path / "index" / "index.yaml")
    described: dict[str, Any] = {"name": "main", "url": url, "index_signature": "none", **(gallery or {})}
    if policy:
        described["verification"] = POLICY
    if described.get("index_signature") != "none" or described.get("require_signed_index"):
        described.pop("index_signature", None)
    data = {"format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
            "require_integrity": strict, "trusted_root": str(sig.root),
            "insecure_registries": [registry.host] if registry else [], "galleries": [described], **fields}  # fmt: skip
    project.config.write_text(yaml.safe_dump(data))
    return project


def push_signed(registry: Registry, sig: Sigstore, repo: str, tag: str, layer: bytes, *, identity: str = DEFAULT_IDENTITY,
                subject_name: str | None = None) -> str:  # fmt: skip
    digest, _ = registry.push_image(repo, tag, [(layer, LAYER_GZIP)])
    bundle = sig.instance.sign_image(digest, identity=identity, subject_name=subject_name)
    push_signature(registry, repo, digest, bundle)
    return digest


# -- 1. an unsigned tarball mirror of a signed OCI entry -------------------------------------------


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
@pytest.mark.parametrize("primary", ["unreachable", "bad-signature"])
@pytest.mark.parametrize("entry_point", ["install", "upgrade"])
def test_1_an_unsigned_tarball_mirror_of_a_signed_image_never_installs(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer, strict: bool, primary: str, entry_point: str
) -> None:  # fmt: skip
    repo = f"case1/{secrets.token_hex(4)}"
    mirror = server.publish(f"/{secrets.token_hex(4)}/x.tar.gz", backend("unsigned mirror"))
    good = push_signed(registry, sig, repo, "v1", backend("signed v1"))
    if primary == "bad-signature":
        push_signed(registry, sig, repo, "v2", backend("mis-signed v2"), identity=MALLORY)
        uri = f"{registry.host}/{repo}:v2"
    else:
        uri = f"{registry.host}/{repo}-gone:v2"
    project = make_project(tmp_path, server, sig, [], strict=strict, registry=registry)
    if entry_point == "upgrade":
        project.write_index([{"name": "x", "uri": f"{registry.host}/{repo}:v1"}])
        assert project.gallery("install", "x").exit_code == 0
    project.write_index([{"name": "x", "uri": uri, "mirrors": [mirror]}])
    before = project.state()
    requests = len(server.requests)

    result = project.gallery(entry_point, "x")

    assert result.exit_code == 3, result.stderr
    assert ("strict mode: the tarball has no sha256" if strict else "no 'signature'") in result.stderr
    assert project.state() == before
    assert mirror.removeprefix(server.url) not in server.requests[requests:]  # never even contacted
    if entry_point == "upgrade":
        metadata = read_metadata(tmp_path / "backends" / "x")
        assert metadata is not None and metadata.digest == good and metadata.verification.verified  # type: ignore[union-attr]
        assert project.gallery("verify", "x").exit_code == 0  # what is installed is what was verified


# -- 2. a #sha256= fragment on the primary binds the mirrors -----------------------------------------


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
def test_2_the_primarys_fragment_binds_every_mirror(
    tmp_path: Path, sig: Sigstore, server: FileServer, strict: bool
) -> None:
    wanted = backend("the index's bytes")
    other = server.publish(f"/{secrets.token_hex(4)}/other.tar.gz", backend("someone else's bytes"))
    entry = {"name": "x", "uri": f"http://127.0.0.1:9/x.tar.gz#sha256={sha(wanted)}", "mirrors": [other]}
    project = make_project(tmp_path, server, sig, [entry], policy=False, strict=strict)
    before = project.state()

    result = project.gallery("install", "x")

    assert result.exit_code == 3 and "is not the expected" in result.stderr, result.stderr
    assert project.state() == before
    assert not (tmp_path / "backends" / "x").exists()


# -- 3. a mirror's fragment cannot override the entry's sha256 --------------------------------------


def test_3_a_mirror_fragment_that_disagrees_refuses_the_entry_everywhere(
    tmp_path: Path, sig: Sigstore, server: FileServer
) -> None:
    good, evil = backend("A"), backend("B")
    mirror = server.publish(f"/{secrets.token_hex(4)}/b.tar.gz", evil)
    entry = {"name": "x", "uri": "http://127.0.0.1:9/a.tar.gz", "sha256": sha(good),
             "mirrors": [f"{mirror}#sha256={sha(evil)}"]}  # fmt: skip
    project = make_project(tmp_path, server, sig, [entry], policy=False, strict=True)
    before = project.state()

    installed = project.gallery("install", "x")
    assert installed.exit_code == 3 and "values disagree" in installed.stderr, installed.stderr
    locked = project.gallery("lock", "x", "-o", str(tmp_path / "x.lock"))
    assert locked.exit_code == 3 and not (tmp_path / "x.lock").exists()
    assert project.gallery("lint", str(tmp_path / "index" / "index.yaml")).exit_code == 2

    # A lock file written the old way (candidate #sha256=B next to sha256: A): refused, no traceback.
    lock = LockFile(backends=(LockEntry(
        name="x", gallery="main", platform="linux/amd64", candidate=f"{mirror}#sha256={sha(evil)}",
        resolved_digest=f"sha256:{sha(evil)}", manifest_digest=f"sha256:{sha(evil)}",
        layers=(LayerRecord(digest=f"sha256:{sha(evil)}", size=len(evil),
                            media_type="application/vnd.oci.image.layer.v1.tar+gzip"),),
        sha256=sha(good), verification=Evidence.unverified("test"),
    ),))  # fmt: skip
    write_lock(tmp_path / "old.lock", lock)
    preloaded = project.gallery("preload", "--lock", str(tmp_path / "old.lock"))
    assert preloaded.exit_code == 3 and "values disagree" in preloaded.stderr, preloaded.stderr
    assert project.state() == before


# -- 4. with a policy, a sha256 alone does not make a tarball trusted ------------------------------


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
@pytest.mark.parametrize("entry_point", ["install", "upgrade"])
def test_4_a_gallery_with_a_policy_refuses_an_unsigned_tarball_entry(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer, strict: bool, entry_point: str
) -> None:
    tarball = backend("sha256 only")
    url = server.publish(f"/{secrets.token_hex(4)}/x.tar.gz", tarball)
    project = make_project(tmp_path, server, sig, [], strict=strict, registry=registry)
    if entry_point == "upgrade":  # a signed image is installed first
        repo = f"case4/{secrets.token_hex(4)}"
        push_signed(registry, sig, repo, "v1", backend("signed"))
        project.write_index([{"name": "x", "uri": f"{registry.host}/{repo}:v1"}])
        assert project.gallery("install", "x").exit_code == 0
    project.write_index([{"name": "x", "uri": url, "sha256": sha(tarball)}])
    before = project.state()

    result = project.gallery(entry_point, "x")

    assert result.exit_code == 3 and "a sha256 alone does not satisfy a policy" in result.stderr, (
        result.stderr
    )
    assert project.state() == before
    assert url.removeprefix(server.url) not in server.requests


def test_4_a_signed_tarball_installs_under_the_policy(
    tmp_path: Path, sig: Sigstore, server: FileServer
) -> None:
    tarball = backend("signed tarball")
    url = server.publish(f"/{secrets.token_hex(4)}/x.tar.gz", tarball)
    bundle = server.publish(f"/{secrets.token_hex(4)}/x.sigstore.json", sig.instance.sign_blob(tarball))
    project = make_project(
        tmp_path, server, sig, [{"name": "x", "uri": url, "sha256": sha(tarball), "signature": bundle}]
    )
    assert project.gallery("install", "x").exit_code == 0
    evidence = read_metadata(tmp_path / "backends" / "x").verification  # type: ignore[union-attr]
    assert evidence is not None and evidence.verified and evidence.proven == ("sha256", "signature")


# -- 5. a remote index never names local files -----------------------------------------------------


@pytest.mark.parametrize("named", ["file-uri", "signature-file", "dev-zero", "ocifile"])
def test_5_a_remote_index_cannot_make_the_installer_read_local_files(
    tmp_path: Path, sig: Sigstore, server: FileServer, named: str
) -> None:
    secret = tmp_path / "root-only"
    secret.write_bytes(b"SECRET-" + secrets.token_hex(8).encode())
    secret.chmod(0o600)
    tarball = backend("served")
    url = server.publish(f"/{secrets.token_hex(4)}/x.tar.gz", tarball)
    entry: dict[str, Any] = {
        "file-uri": {"name": "x", "uri": f"file://{secret}"},
        "signature-file": {"name": "x", "uri": url, "sha256": sha(tarball), "signature": f"file://{secret}"},
        "dev-zero": {"name": "x", "uri": "file:///dev/zero"},
        "ocifile": {"name": "x", "uri": f"ocifile://{tmp_path}"},
    }[named]
    project = make_project(
        tmp_path, server, sig, [entry], policy=named == "signature-file", strict=False, remote=True
    )
    before = project.state()

    result = project.gallery("install", "x")

    assert result.exit_code == 3 and "only an index on this machine's disk" in result.stderr, result.stderr
    assert project.state() == before
    assert b"SECRET" not in (result.stdout + result.stderr).encode()
    assert not any(
        secret.read_bytes() in p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()
    )


def test_5_errors_never_quote_what_was_read(tmp_path: Path, sig: Sigstore, server: FileServer) -> None:
    """A local index may name local files, but a file that is not a bundle is not echoed."""
    secret = tmp_path / "not-a-bundle"
    secret.write_bytes(b'{"SECRET": "' + secrets.token_hex(8).encode() + b'"}')
    tarball = backend("local")
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tarball)
    entry = {"name": "x", "uri": f"file://{path}", "sha256": sha(tarball), "signature": f"file://{secret}"}
    project = make_project(tmp_path, server, sig, [entry], strict=False)
    before = project.state()
    result = project.gallery("install", "x")
    assert result.exit_code == 3 and "not a Sigstore bundle" in result.stderr, result.stderr
    assert "SECRET" not in result.stdout + result.stderr
    assert project.state() == before


def test_5_nothing_unverified_is_committed_to_the_blob_cache(
    tmp_path: Path, sig: Sigstore, server: FileServer
) -> None:
    url = server.publish(f"/{secrets.token_hex(4)}/x.tar.gz", backend("no sha256, no policy"))
    project = make_project(tmp_path, server, sig, [{"name": "x", "uri": url}], policy=False, strict=False)
    before = project.state()
    result = project.gallery("install", "x")
    assert result.exit_code == 0 and "nothing proves its content (unverified)" in result.stderr, result.stderr
    _, blobs, partial = project.state()
    assert (blobs, partial) == before[1:]  # installed from a scratch download, deleted after
    evidence = read_metadata(tmp_path / "backends" / "x").verification  # type: ignore[union-attr]
    assert evidence is not None and not evidence.verified and evidence.proven == ()


# -- 6. same-identity substitution ------------------------------------------------------------------


@pytest.fixture
def two_signed(registry: Registry, sig: Sigstore) -> dict[str, str]:
    """whisper and llama, signed by the same workflow; a registry mirror answers whisper:v1 with
    llama's manifest and llama's (valid) signature."""
    base = f"case6/{secrets.token_hex(4)}"
    llama_layer = backend("llama")
    llama = push_signed(registry, sig, f"{base}/llama", "v1", llama_layer)
    whisper = push_signed(registry, sig, f"{base}/whisper", "v1", backend("whisper"))
    substitute = push_signed(registry, sig, f"evil/{base}/whisper", "v1", llama_layer)
    assert substitute == llama
    return {"base": base, "llama": llama, "whisper": whisper}


def test_6_a_signature_binds_a_digest_not_a_repository(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer, two_signed: dict[str, str]
) -> None:
    """What the threat table says stays open without a pin: the substitute is validly signed."""
    entry = {"name": "whisper", "uri": f"{registry.host}/{two_signed['base']}/whisper:v1"}
    project = make_project(tmp_path, server, sig, [entry], registry=registry,
                           registry_mirrors={registry.host: [f"{registry.host}/evil"]})  # fmt: skip
    assert project.gallery("install", "whisper").exit_code == 0
    assert read_metadata(tmp_path / "backends" / "whisper").digest == two_signed["llama"]  # type: ignore[union-attr]


def test_6_pinned_digests_install_only_the_pinned_image(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer, two_signed: dict[str, str]
) -> None:
    pinned = {
        "name": "whisper",
        "uri": f"{registry.host}/{two_signed['base']}/whisper:v1@{two_signed['whisper']}",
    }
    project = make_project(tmp_path, server, sig, [pinned], registry=registry,
                           registry_mirrors={registry.host: [f"{registry.host}/evil"]},
                           gallery={"require_pinned_digests": True})  # fmt: skip
    assert project.gallery("install", "whisper").exit_code == 0
    metadata = read_metadata(tmp_path / "backends" / "whisper")
    assert metadata is not None and metadata.digest == two_signed["whisper"]
    assert metadata.verification is not None and metadata.verification.proven == ("digest", "signature")

    # The same gallery refuses an entry that is not pinned, before asking any registry.
    unpinned = make_project(tmp_path / "u", server, sig, [{"name": "whisper", "uri": f"{registry.host}/{two_signed['base']}/whisper:v1"}],
                            registry=registry, gallery={"require_pinned_digests": True})  # fmt: skip
    before = unpinned.state()
    result = unpinned.gallery("install", "whisper")
    assert result.exit_code == 3 and "requires pinned digests" in result.stderr
    assert unpinned.state() == before


def test_6_a_signed_subject_naming_another_repository_is_refused(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer
) -> None:
    base = f"case6n/{secrets.token_hex(4)}"
    digest, _ = registry.push_image(
        f"{base}/whisper", "v1", [(backend("llama in whisper's clothes"), LAYER_GZIP)]
    )
    named = sig.instance.sign_image(digest, subject_name=f"{registry.host}/{base}/llama")
    push_signature(registry, f"{base}/whisper", digest, named)
    project = make_project(tmp_path, server, sig, [{"name": "whisper", "uri": f"{registry.host}/{base}/whisper:v1"}],
                           registry=registry)  # fmt: skip
    before = project.state()
    result = project.gallery("install", "whisper")
    assert result.exit_code == 3 and f"the signature is for {registry.host}/{base}/llama" in result.stderr
    assert project.state() == before


def test_6_an_index_bound_to_its_channel_refuses_another_channels_signed_index(
    tmp_path: Path, sig: Sigstore, server: FileServer
) -> None:
    """nightly's index, signed by the same publisher's nightly workflow, served for stable."""
    nightly = yaml.safe_dump(
        [{"name": "x", "uri": "http://127.0.0.1:9/nightly.tar.gz", "sha256": "a" * 64}]
    ).encode()
    stable_path = f"/{secrets.token_hex(4)}/stable.yaml"
    mirror = server.publish(f"/{secrets.token_hex(4)}/mirror.yaml", nightly)
    server.publish(
        mirror.removeprefix(server.url) + ".sigstore.json", sig.instance.sign_blob(nightly, identity=NIGHTLY)
    )
    project = make_project(tmp_path, server, sig, [], remote=True, gallery={
        "url": f"{server.url}{stable_path}", "mirrors": [mirror], "require_signed_index": True,
        "index_verification": {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}})  # fmt: skip
    del server.files[project.index_path]  # type: ignore[arg-type]  (the stable source is down)
    result = project.gallery("install", "x")
    assert result.exit_code == 3 and "bad signature" in result.stderr, result.stderr

    # A regex index policy accepts both channels: doctor says how to bind it.
    loose = make_project(tmp_path / "loose", server, sig, [], remote=True, gallery={
        "url": mirror, "require_signed_index": True,
        "index_verification": {"issuer": GITHUB_ISSUER, "identity_regex": "https://github.com/org/gallery/.*"}})  # fmt: skip
    doctor = loose.gallery("doctor")
    assert "another channel's index" in doctor.output.replace("\n", " ")


# -- 7. lock and export of what is installed ---------------------------------------------------------


def test_7_lock_and_export_work_once_the_backend_is_installed(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer
) -> None:
    repo = f"case7/{secrets.token_hex(4)}"
    digest = push_signed(registry, sig, repo, "v1", backend("approved"))
    project = make_project(
        tmp_path, server, sig, [{"name": "x", "uri": f"{registry.host}/{repo}:v1"}], registry=registry
    )
    assert project.gallery("install", "x").exit_code == 0

    locked = project.gallery("lock", "x", "-o", str(tmp_path / "x.lock"))
    assert locked.exit_code == 0, locked.stderr
    entry = json.loads((tmp_path / "x.lock").read_text())["backends"][0]
    assert entry["resolved_digest"] == digest and entry["verification"]["verified"]
    exported = project.gallery("export", "x", "-o", str(tmp_path / "bundle"))
    assert exported.exit_code == 0, exported.stderr
    assert (tmp_path / "bundle" / "layouts" / "x" / "index.json").is_file()


# -- 8. strict install --from refuses before unpacking -----------------------------------------------


def test_8_strict_install_from_a_bundle_refuses_before_unpacking(
    tmp_path: Path, registry: Registry, sig: Sigstore, server: FileServer
) -> None:
    repo = f"case8/{secrets.token_hex(4)}"
    registry.push_image(repo, "v1", [(backend("unsigned image"), LAYER_GZIP)])
    exporter = make_project(tmp_path / "e", server, sig, [{"name": "x", "uri": f"{registry.host}/{repo}:v1"}],
                            policy=False, strict=False, registry=registry)  # fmt: skip
    assert exporter.gallery("export", "x", "-o", str(tmp_path / "bundle.tar")).exit_code == 0
    project = make_project(tmp_path / "s", server, sig, [], policy=False, strict=True)
    before = project.state()
    result = project.gallery("install", "--from", str(tmp_path / "bundle.tar"), "x")
    assert result.exit_code == 3 and "strict mode" in result.stderr, result.stderr
    assert project.state() == before
    assert not (tmp_path / "s" / "cache" / "bundles").exists()


# -- 9. a crafted bundle: a meta-backend pointing at another one ------------------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
def test_9_a_bundle_meta_backend_pointing_at_a_meta_backend_is_refused(
    tmp_path: Path, sig: Sigstore, server: FileServer, packed: bool
) -> None:
    listing = yaml.safe_dump([
        {"name": "m1", "capabilities": {"default": "m2"}, "gallery": "main"},
        {"name": "m2", "capabilities": {"default": "x"}, "gallery": "main"},
        {"name": "x", "uri": "ocifile://layouts/x", "gallery": "main"},
    ]).encode()  # fmt: skip
    bundle = tmp_path / "crafted"
    bundle.mkdir()
    (bundle / "index.yaml").write_bytes(listing)
    if packed:
        with tarfile.open(tmp_path / "crafted.tar", "w") as archive:
            info = tarfile.TarInfo("index.yaml")
            info.size = len(listing)
            archive.addfile(info, io.BytesIO(listing))
        bundle = tmp_path / "crafted.tar"
    project = make_project(tmp_path / "p", server, sig, [])
    before = project.state()
    result = project.gallery("install", "--from", str(bundle), "m1")
    assert result.exit_code == 3 and "another meta-backend" in result.stderr, result.stderr
    assert project.state() == before
