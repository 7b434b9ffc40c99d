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


def test_a_repair_from_the_cache_needs_a_recorded_install(gate: TrustGate) -> None:
    plan = plan_candidate(Candidate("recorded", OciLayoutSource("/cache")), EntryPins(digest="sha256:" + "c" * 64),
                          CONTEXT)  # fmt: skip
    (attempt,) = gate.attempts(plan, job(plan))
    with pytest.raises(SourceUnavailable, match="no layers are recorded"):
        attempt.run(attempt)


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


def test_a_signed_tarball_is_repaired_from_the_cache_under_the_policy(tmp_path: Path) -> None:
    """Offline: the recorded sign-blob bundle is verified again, the cached bytes hashed again."""
    import hashlib

    import yaml
    from typer.testing import CliRunner

    from cli.main import app
    from gallery.place.metadata import read_metadata

    from .file_server import serving
    from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
    from .tarbuild import file, gz, tar_bytes

    instance = SigstoreInstance()
    root = instance.write_trusted_root(tmp_path / "trusted_root.json")
    tarball = gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755), file("lib.so", b"x" * 64)]))
    config = tmp_path / "gallery.yaml"
    with serving() as server:
        entry = {"name": "x", "uri": server.publish("/x.tar.gz", tarball), "sha256": hashlib.sha256(tarball).hexdigest(),
                 "signature": server.publish("/x.sig", instance.sign_blob(tarball))}  # fmt: skip
        (tmp_path / "index.yaml").write_text(yaml.safe_dump([entry]))
        config.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
            "require_integrity": True, "trusted_root": str(root),
            "galleries": [{"name": "g", "url": str(tmp_path / "index.yaml"),
                           "verification": {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}}]}))  # fmt: skip
        assert CliRunner().invoke(app, ["--config", str(config), "install", "x"]).exit_code == 0
    (tmp_path / "b" / "x" / "lib.so").write_bytes(b"damaged")
    repaired = CliRunner().invoke(app, ["--config", str(config), "fsck", "--repair"])  # the server is gone
    assert repaired.exit_code == 0, repaired.output
    assert (tmp_path / "b" / "x" / "lib.so").read_bytes() == b"x" * 64
    evidence = read_metadata(tmp_path / "b" / "x").verification  # type: ignore[union-attr]
    assert evidence is not None and evidence.verified


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
