"""Every hostile case through the real installer: the expected error and exit code, ``backends/``
unchanged, nothing written outside the roots (see harness.py for the checks)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from gallery.config.models import load_config
from gallery.errors import ConfigError

from ..conftest import REPO
from ..registry_server import LAYER_GZIP
from ..sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from ..tarbuild import file, gz, tar_bytes
from . import archives, disk, indexes, registry
from .harness import ABSOLUTE_ESCAPE, Case, Project, assert_outcome, write_layout
from .server import hostile_registry

ARCHIVES = archives.cases()
REGISTRY = registry.cases()
INDEXES = [c for c in indexes.cases() if c.category == "index"]
CONFIGS = [c for c in indexes.cases() if c.category == "config"]
DISK = disk.cases()


@pytest.fixture(scope="module")
def sigstore_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigstoreInstance, Path]:
    instance = SigstoreInstance()
    return instance, instance.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


@pytest.mark.parametrize("case", ARCHIVES, ids=[c.name for c in ARCHIVES])
def test_archive(tmp_path: Path, case: Case) -> None:
    project = Project(tmp_path)
    project.install_keeper()
    project.layout("evil", case.setup())
    project.config()
    backends, elsewhere = project.backends(), project.outside_roots()
    result = project.install("evil")
    assert_outcome(case, result)
    after = project.backends()
    if case.expect is None:
        assert case.check is not None
        case.check(project.root / "backends" / "evil")
        after = {k: v for k, v in after.items() if k in backends}  # the keeper is untouched
    assert after == backends
    assert project.outside_roots() == elsewhere
    assert not ABSOLUTE_ESCAPE.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", REGISTRY, ids=[c.name for c in REGISTRY])
def test_registry(tmp_path: Path, case: Case, sigstore_root: tuple[SigstoreInstance, Path]) -> None:
    instance, root = sigstore_root
    with hostile_registry() as server, hostile_registry(name="localhost") as other:
        world = registry.World(server, other, instance, root)
        entry = {"name": "evil", **case.setup(world)}
        credentials = tmp_path / "docker-config.json"
        credentials.write_text(json.dumps({"auths": {server.host: {"auth": registry.BASIC.split()[1]}}}))
        policy = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
        project = Project(
            tmp_path / "project",
            config={
                "insecure_registries": [server.host, other.host],
                "docker_config": str(credentials),
                "timeouts": {"connect": 2, "read": 1},
            },
            gallery={"verification": policy, "trusted_root": str(root)} if case.policy else {},
        )
        project.install_keeper(sign=instance.sign_image if case.policy else None)
        project.entry(**entry)
        project.config()
        backends, elsewhere = project.backends(), project.outside_roots()
        result = project.install("evil")
        assert_outcome(case, result)
        if case.check is not None:
            case.check(world)
    after = project.backends()
    if case.expect is None:
        assert (project.root / "backends" / "evil" / "run.sh").is_file()
        after = {k: v for k, v in after.items() if k in backends}
    assert after == backends
    assert project.outside_roots() == elsewhere


@pytest.mark.parametrize("case", INDEXES, ids=[c.name for c in INDEXES])
def test_index(tmp_path: Path, case: Case) -> None:
    project = Project(tmp_path)
    project.install_keeper()
    shutil.rmtree(tmp_path / "cache" / "indexes")  # no last good copy to fall back on
    project.raw_index, target = case.setup()
    project.config()
    backends, elsewhere = project.backends(), project.outside_roots()
    result = project.install(target)
    assert_outcome(case, result)
    after = project.backends()
    if case.expect is None:
        assert (project.root / "backends" / target / "run.sh").is_file()
        after = {k: v for k, v in after.items() if k in backends}
    assert after == backends
    assert project.outside_roots() == elsewhere


@pytest.mark.parametrize("case", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "gallery.yaml"
    path.write_bytes(case.setup())
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert case.reason in refused.value.message
    assert refused.value.code() == case.exit_code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.yaml"]


@pytest.mark.parametrize("case", DISK, ids=[c.name for c in DISK])
def test_disk(tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """During an upgrade: the worst time for a fault, with an old version to keep."""
    project = Project(tmp_path)
    project.install_keeper()

    def version(tag: bytes) -> None:
        members = [file("run.sh", b"#!/bin/sh\n", 0o755)] + [file(f"f{i}", tag * i) for i in range(20)]
        write_layout(tmp_path / "layouts" / "evil", [(gz(tar_bytes(members)), LAYER_GZIP)])

    version(b"v1")
    project.entry(name="evil", uri="ocifile://layouts/evil")
    assert project.install("evil").error is None
    version(b"v2")
    backends, elsewhere = project.backends(), project.outside_roots()
    with monkeypatch.context() as patched:
        fs = case.setup(patched, tmp_path)
        result = project.install("evil", fs=fs, upgrade=True)
    assert_outcome(case, result)
    assert project.backends() == backends
    assert project.outside_roots() == elsewhere
    # Nothing half-written is in the cache either (a partial download may wait in cache/partial/
    # to be resumed): every blob there hashes to its name.
    for blob in (tmp_path / "cache" / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert project.install("evil", upgrade=True).error is None  # the next run, without the fault, works


def test_docs_security_counts_the_corpus() -> None:
    """docs/security.md prints the number of cases by category; it must be this corpus's."""
    text = (REPO / "docs" / "security.md").read_text()
    table = text.split("<!-- corpus -->")[1].split("<!-- /corpus -->")[0]
    printed = {
        cells[0]: int(cells[1].strip("*"))
        for line in table.splitlines()
        if line.startswith("| ")
        and (cells := [c.strip() for c in line.strip("|").split("|")])[1].strip("*").isdigit()
    }
    corpus = ARCHIVES + REGISTRY + INDEXES + CONFIGS + DISK
    actual = {
        category: sum(1 for c in corpus if c.category == category)
        for category in {c.category for c in corpus}
    }
    assert printed == {**actual, "**total**": len(corpus)}
    assert len({c.id for c in corpus}) == len(corpus), "case names must be unique"
