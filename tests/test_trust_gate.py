"""The trust gate's own checks, one by one, where the rest of the pipeline would hide them: a
refused plan yields no attempt, a relative layout needs a local index, the proofs a plan demands
are proven or refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gallery.catalog.candidates import Candidate
from gallery.catalog.capability import HostFacts
from gallery.catalog.fetch import LoadedIndex
from gallery.catalog.galleries import GalleryState
from gallery.catalog.index import IndexEntry, ParsedIndex
from gallery.catalog.resolve import Resolution
from gallery.catalog.sources import OciLayoutSource, parse_backend_uri
from gallery.config.models import Config, GalleryConfig
from gallery.errors import SourceUnavailable
from gallery.operations.gate import TrustGate
from gallery.operations.job import Job
from gallery.operations.modes import INSTALL
from gallery.operations.session import Session
from gallery.verify.plan import CandidatePlan, EntryPins, EntryPlan, TrustContext, plan_candidate
from gallery.verify.signatures import SigstoreVerifier

CONTEXT = TrustContext("g", None, False, "local")


@pytest.fixture
def gate(tmp_path: Path) -> TrustGate:
    config = Config.model_validate({"format_version": 1, "backends_path": str(tmp_path / "b"),
                                    "cache_path": str(tmp_path / "c"), "galleries": []})  # fmt: skip
    session = Session(config, client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                      detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
    return TrustGate(session)


def job(plan: CandidatePlan, *, loaded: LoadedIndex | None = None) -> Job:
    gallery = GalleryConfig(name="g", url="/srv/index.yaml")
    entry = IndexEntry(name="x", uri=str(plan.source))
    resolution = Resolution("x", GalleryState(gallery, loaded, None), entry, None, None, False, ())
    return Job(resolution, INSTALL, EntryPlan(CONTEXT, (plan,)), None)


def loaded_from(source: str) -> LoadedIndex:
    from datetime import UTC, datetime

    return LoadedIndex("g", source, False, datetime.now(UTC), ParsedIndex((), ()), ())


def test_a_refused_plan_yields_no_attempt_at_all(gate: TrustGate) -> None:
    refused = CandidatePlan(Candidate("uri", parse_backend_uri("quay.io/org/x:v1")), frozenset(), "no")
    assert list(gate.attempts(refused, job(refused))) == []
    admitted = plan_candidate(Candidate("uri", parse_backend_uri("quay.io/org/x:v1")), EntryPins(), CONTEXT)
    assert [a.label for a in gate.attempts(admitted, job(admitted))] == ["quay.io/org/x:v1"]


@pytest.mark.parametrize("loaded", [None, "https://example.org/index.yaml"], ids=["no index", "remote index"])
def test_a_relative_layout_needs_an_index_on_local_disk(gate: TrustGate, loaded: Any) -> None:
    plan = plan_candidate(Candidate("uri", OciLayoutSource("layout")), EntryPins(), CONTEXT)
    (attempt,) = gate.attempts(plan, job(plan, loaded=loaded_from(loaded) if loaded else None))
    with pytest.raises(SourceUnavailable, match="needs a gallery index on local disk"):
        attempt.run(attempt)


def test_a_relative_layout_is_found_next_to_a_local_index(gate: TrustGate, tmp_path: Path) -> None:
    plan = plan_candidate(Candidate("uri", OciLayoutSource("layout")), EntryPins(), CONTEXT)
    (attempt,) = gate.attempts(plan, job(plan, loaded=loaded_from(str(tmp_path / "index.yaml"))))
    with pytest.raises(SourceUnavailable, match=str(tmp_path / "layout")):
        attempt.run(attempt)  # it looks where the index is (and finds no layout there)


def test_an_installed_tarball_at_the_same_sha256_is_not_downloaded_again(tmp_path: Path) -> None:
    import hashlib

    import yaml

    from gallery.config.models import load_config
    from gallery.operations.installer import Installer

    from .file_server import serving
    from .tarbuild import file, gz, tar_bytes

    tarball = gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755)]))
    with serving() as server:
        url = server.publish("/x.tar.gz", tarball)
        index = tmp_path / "index.yaml"
        index.write_text(
            yaml.safe_dump([{"name": "x", "uri": url, "sha256": hashlib.sha256(tarball).hexdigest()}])
        )
        (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
            "galleries": [{"name": "g", "url": str(index)}]}))  # fmt: skip
        installer = Installer(load_config(tmp_path / "gallery.yaml"), client=httpx.Client(trust_env=False),
                              verifier=SigstoreVerifier(), detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
        assert installer.install_one("x").status == "installed"
        for blob in (tmp_path / "c" / "blobs" / "sha256").iterdir():  # not even the cache is needed
            blob.unlink()
        asked = len(server.requests)
        assert installer.upgrade_one("x").status == "unchanged"
        assert len(server.requests) == asked  # decided from the index's sha256 alone


class TarballSite:
    """A tarball entry served over HTTP, with a sign-blob bundle, and a config that can be
    rewritten (policy on or off) between commands."""

    def __init__(self, tmp_path: Path, server: Any) -> None:
        import hashlib

        import yaml

        from .sigstore_instance import SigstoreInstance
        from .tarbuild import file, gz, tar_bytes

        self.tmp = tmp_path
        instance = SigstoreInstance()
        self.root = instance.write_trusted_root(tmp_path / "trusted_root.json")
        tarball = gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755), file("lib.so", b"x" * 64)]))
        entry = {"name": "x", "uri": server.publish("/x.tar.gz", tarball), "sha256": hashlib.sha256(tarball).hexdigest(),
                 "signature": server.publish("/x.sig", instance.sign_blob(tarball))}  # fmt: skip
        (tmp_path / "index.yaml").write_text(yaml.safe_dump([entry]))
        self.config = tmp_path / "gallery.yaml"

    def configure(self, *, policy: bool, strict: bool = False) -> None:
        import yaml

        from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER

        gallery: dict[str, Any] = {"name": "g", "url": str(self.tmp / "index.yaml")}
        if policy:
            gallery["verification"] = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
        self.config.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
            "require_integrity": strict, "trusted_root": str(self.root), "galleries": [gallery]}))  # fmt: skip

    def gallery(self, *args: str) -> Any:
        from typer.testing import CliRunner

        from cli.main import app

        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def damage(self) -> None:
        (self.tmp / "b" / "x" / "lib.so").write_bytes(b"damaged")

    def evidence(self) -> Any:
        from gallery.place.metadata import read_metadata

        return read_metadata(self.tmp / "b" / "x").verification  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("installed_with", "repaired_with", "exit_code", "verified"),
    [(True, True, 0, True), (True, False, 0, True), (False, True, 3, False)],
    ids=["policy, then policy", "policy, then none", "none, then policy"],
)
def test_a_tarball_is_repaired_from_the_cache_under_todays_policy(
    tmp_path: Path, installed_with: bool, repaired_with: bool, exit_code: int, verified: bool
) -> None:
    """Offline (the server is gone): the recorded sign-blob bundle is verified again when the
    gallery has a policy, the cached bytes are hashed again; a backend installed without a
    signature is refused once its gallery has a policy."""
    from .file_server import serving

    with serving() as server:
        site = TarballSite(tmp_path, server)
        site.configure(policy=installed_with, strict=installed_with)
        assert site.gallery("install", "x").exit_code == 0
    site.damage()
    site.configure(policy=repaired_with)
    repaired = site.gallery("fsck", "--repair", "--json")
    assert repaired.exit_code == exit_code, repaired.output
    if exit_code:  # the plan refuses it: no signature was recorded, and a sha256 alone is not enough
        assert "a sha256 alone does not satisfy a policy" in repaired.stdout
    assert ((tmp_path / "b" / "x" / "lib.so").read_bytes() == b"x" * 64) == (exit_code == 0)
    assert site.evidence().verified == verified


@pytest.mark.parametrize("recorded", ["nothing", "no layers"])
def test_a_repair_from_the_cache_needs_recorded_layers(gate: TrustGate, recorded: str) -> None:
    from gallery.place.metadata import BackendMetadata

    plan = plan_candidate(Candidate("recorded", OciLayoutSource("/cache")), EntryPins(digest="sha256:" + "c" * 64),
                          CONTEXT)  # fmt: skip
    layerless = BackendMetadata(name="x", digest="sha256:" + "c" * 64, format_version=1)
    made = job(plan)
    with_record = Job(made.resolution, made.mode, made.plan, layerless if recorded == "no layers" else None)
    (attempt,) = gate.attempts(plan, with_record)
    with pytest.raises(SourceUnavailable, match="no layers are recorded"):
        attempt.run(attempt)


def test_an_installed_layout_is_unchanged_on_upgrade(tmp_path: Path) -> None:
    """A layout is pinned by reading it: the installed digest is found after pinning, not by a HEAD."""
    import sys

    import yaml

    from gallery.config.models import load_config
    from gallery.operations.installer import Installer

    from .conftest import REPO
    from .registry_server import LAYER_GZIP
    from .tarbuild import file, gz, tar_bytes

    sys.path.insert(0, str(REPO / "galleries" / "demo"))
    from make_layouts import write_layout

    write_layout(
        tmp_path / "layout", [(gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755)])), LAYER_GZIP)]
    )
    (tmp_path / "index.yaml").write_text(yaml.safe_dump([{"name": "x", "uri": "ocifile://layout"}]))
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
        "galleries": [{"name": "g", "url": str(tmp_path / "index.yaml")}]}))  # fmt: skip
    installer = Installer(load_config(tmp_path / "gallery.yaml"), client=httpx.Client(trust_env=False),
                          verifier=SigstoreVerifier(), detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
    assert installer.install_one("x").status == "installed"
    before = (tmp_path / "b" / "x" / "metadata.json").read_bytes()
    assert installer.upgrade_one("x").status == "unchanged"
    assert (tmp_path / "b" / "x" / "metadata.json").read_bytes() == before


def test_a_verified_value_cannot_be_changed(gate: TrustGate, tmp_path: Path) -> None:
    import hashlib

    from gallery.prepare.pin import PinnedImage  # noqa: F401  (the type of what is checked below)

    tarball = tmp_path / "x.tar"
    from .tarbuild import file, tar_bytes

    tarball.write_bytes(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755)]))
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    plan = plan_candidate(Candidate("uri", parse_backend_uri(f"file://{tarball}")), EntryPins(sha), CONTEXT)
    (attempt,) = gate.attempts(plan, job(plan))
    verified = attempt.run(attempt)
    with pytest.raises(AttributeError, match="cannot be changed"):
        verified.evidence = None  # type: ignore[misc,assignment,union-attr]


# -- the checks of _admit, one by one, on pinned images made here ---------------------------------


def pinned_image(digest: str) -> Any:
    from gallery.oci.models import EMPTY_CONFIG, ImageManifest
    from gallery.prepare.pin import PinnedImage

    manifest = ImageManifest.model_validate({"schemaVersion": 2, "config": EMPTY_CONFIG, "layers": []})
    return PinnedImage("x", digest, digest, manifest, "linux/amd64", None)  # type: ignore[arg-type]


def admit(gate: TrustGate, plan: CandidatePlan, made: Job, digest: str, **options: Any) -> Any:
    from gallery.operations.gate import Attempt, _Opened

    attempt = Attempt("x", lambda _a: None)  # type: ignore[arg-type,return-value]
    return gate._admit(plan, made, pinned_image(digest), attempt, _Opened(), **options)


D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_admit_refuses_an_image_that_is_not_the_pinned_digest(gate: TrustGate) -> None:
    from gallery.errors import DigestMismatch

    plan = plan_candidate(Candidate("uri", OciLayoutSource("/l")), EntryPins(digest=D1), CONTEXT)
    assert "digest" in plan.proofs
    with pytest.raises(DigestMismatch, match="not the pinned"):
        admit(gate, plan, job(plan), D2)
    assert admit(gate, plan, job(plan), D1).evidence.proven == ("digest",)


def test_admit_never_claims_a_sha256_it_did_not_check(gate: TrustGate) -> None:
    from gallery.errors import TrustRefusal

    plan = plan_candidate(
        Candidate("uri", parse_backend_uri("https://h/x.tar")), EntryPins("1" * 64), CONTEXT
    )
    with pytest.raises(TrustRefusal, match="demands a sha256 that was not proven"):
        admit(gate, plan, job(plan), D1)  # bytes of this digest, but nobody compared them
    assert admit(gate, plan, job(plan), D1, checked=D1).evidence.proven == ("sha256",)


def test_admit_never_claims_a_signature_without_verified_evidence(gate: TrustGate) -> None:
    from gallery.errors import TrustRefusal
    from gallery.verify.policy import VerificationPolicy

    context = TrustContext("g", VerificationPolicy(issuer="https://i", identity="https://id"), False, "local")
    plan = plan_candidate(Candidate("uri", parse_backend_uri("https://h/x.tar")),
                          EntryPins("1" * 64, signature="https://h/x.sig"), context)  # fmt: skip
    made = Job(job(plan).resolution, INSTALL, EntryPlan(context, (plan,)), None)
    with pytest.raises(TrustRefusal, match="demands a signature"):
        admit(gate, plan, made, D1, checked=D1)  # a tarball's evidence comes from its bundle: none here


def test_install_refuses_to_replace_another_installed_version(gate: TrustGate) -> None:
    from gallery.errors import OperationalError
    from gallery.place.metadata import BackendMetadata

    plan = plan_candidate(Candidate("uri", OciLayoutSource("/l")), EntryPins(), CONTEXT)
    installed = BackendMetadata(name="x", digest=D2, format_version=1)
    made = Job(job(plan).resolution, INSTALL, job(plan).plan, installed)
    with pytest.raises(OperationalError, match="already installed") as refused:
        admit(gate, plan, made, D1)
    assert refused.value.hint == "use 'gallery upgrade x'"
    from gallery.operations.gate import Unchanged

    assert isinstance(admit(gate, plan, made, D2), Unchanged)  # the same digest: nothing to do


def test_the_gate_takes_no_signature_without_a_policy_to_check_it_against(gate: TrustGate) -> None:
    from gallery.errors import TrustRefusal

    plan = plan_candidate(Candidate("uri", OciLayoutSource("/l")), EntryPins(), CONTEXT)  # CONTEXT: no policy
    with pytest.raises(TrustRefusal, match="signature"):
        gate._verify_image(job(plan), pinned_image(D1))
    with pytest.raises(TrustRefusal, match="signature"):
        gate._verify_blob(job(plan), "1" * 64, b"{}")


def test_evidence_a_verifier_returns_unverified_is_not_a_signature(tmp_path: Path) -> None:
    """Whatever verifier is plugged in, the gate trusts only evidence that says it verified."""
    from gallery.errors import TrustRefusal
    from gallery.verify.evidence import Evidence
    from gallery.verify.policy import VerificationPolicy

    class Lenient:
        def verify_image(self, **_: Any) -> Evidence:
            return Evidence.unverified("no idea")

        def verify_blob(self, **_: Any) -> Evidence:
            return Evidence.unverified("no idea")

    config = Config.model_validate({"format_version": 1, "backends_path": str(tmp_path / "b"),
                                    "cache_path": str(tmp_path / "c"), "galleries": []})  # fmt: skip
    lenient = TrustGate(Session(config, client=httpx.Client(trust_env=False), verifier=Lenient(),  # type: ignore[arg-type]
                                detector=lambda: HostFacts("linux", "amd64")))  # fmt: skip
    context = TrustContext("g", VerificationPolicy(issuer="https://i", identity="https://id"), False, "local")
    plan = plan_candidate(Candidate("uri", OciLayoutSource("/l")), EntryPins(), context)
    made = Job(job(plan).resolution, INSTALL, EntryPlan(context, (plan,)), None)
    with pytest.raises(TrustRefusal, match="demands a signature"):
        admit(lenient, plan, made, D1)


def test_a_pinned_image_must_be_the_locked_one_byte_for_byte() -> None:
    from gallery.errors import DigestMismatch
    from gallery.oci.models import EMPTY_CONFIG, ImageManifest
    from gallery.operations.gate import _check_matches_lock
    from gallery.operations.lockfile import LockEntry
    from gallery.place.metadata import LayerRecord
    from gallery.prepare.pin import PinnedImage
    from gallery.verify.evidence import Evidence

    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D1, "size": 1}
    manifest = ImageManifest.model_validate({"schemaVersion": 2, "config": EMPTY_CONFIG, "layers": [layer]})

    def locked(resolved: str = D1, manifest_digest: str = D2, layers: str = D1) -> LockEntry:
        return LockEntry(name="x", gallery="g", platform="linux/amd64", candidate="quay.io/o/x:1",
                         resolved_digest=resolved, manifest_digest=manifest_digest,
                         layers=(LayerRecord(digest=layers, size=1, media_type=layer["mediaType"]),),
                         verification=Evidence.unverified("t"))  # fmt: skip

    pinned = PinnedImage("x", D1, D2, manifest, "linux/amd64", None)  # type: ignore[arg-type]
    _check_matches_lock(pinned, locked())
    for other in (locked(resolved=D2), locked(manifest_digest=D1), locked(layers=D2)):
        with pytest.raises(DigestMismatch):
            _check_matches_lock(pinned, other)


def test_install_leaves_an_unverified_install_as_it_is_and_upgrade_verifies_it(gate: TrustGate) -> None:
    """Only the modes that converge (upgrade, preload, dry-run) re-verify a backend installed
    unverified once its gallery has a policy; install says it is there."""
    from gallery.operations.gate import _unchanged
    from gallery.operations.modes import PRELOAD, UPGRADE
    from gallery.place.metadata import BackendMetadata
    from gallery.verify.policy import VerificationPolicy

    context = TrustContext("g", VerificationPolicy(issuer="https://i", identity="https://id"), False, "local")
    plan = plan_candidate(Candidate("uri", OciLayoutSource("/l")), EntryPins(), context)
    installed = BackendMetadata(name="x", digest=D1, format_version=1)  # no evidence: unverified
    for mode, unchanged in ((INSTALL, True), (UPGRADE, False), (PRELOAD, False)):
        made = Job(job(plan).resolution, mode, EntryPlan(context, (plan,)), installed)
        assert (_unchanged(made, D1, plan) is not None) == unchanged, mode.name
