"""The no-bypass matrix, generated: {entry kind} x {candidate used} x {protection} x {entry point} x
{variant}, against the real registry, an HTTP server and the test Sigstore instance.

Variants: ``honest`` (the candidate serves what its publisher intended), ``attack`` (its bytes are
replaced by an attacker's: another image signed by someone else, other tarball bytes, a tampered
blob where a digest is pinned) and ``weaker`` (an earlier candidate fails integrity and this one is
honest: with a policy it is used, without one the install ends; run at ``install``, the loop is
shared by every entry point).

``EXPECTED`` is the one table of outcomes; ``impossible`` says why a cell cannot exist. Every
refusal must leave ``backends/`` (an upgrade's old version and a repair's damaged tree included) and
the blob cache exactly as they were; an unprotected install must say so (``verified: false``, a
warning, nothing claimed as proven).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import Config, load_config
from gallery.oci.registry import RegistryClient, RetryPolicy
from gallery.operations.fleet import lock_backends, preload
from gallery.operations.installer import Installer
from gallery.place.metadata import read_metadata
from gallery.results import BatchResult, InstallResult
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .file_server import FileServer, serving
from .hostile.harness import tree_state
from .registry_server import LAYER_GZIP, Registry, digest_of, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

MALLORY = "https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main"
POLICY = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}

KINDS = ["oci", "tarball", "meta"]
CANDIDATES = ["primary", "registry-mirror", "oci-entry-mirror", "tarball-entry-mirror", "tag-fallback",
              "local-layout", "from-bundle", "lock-entry"]  # fmt: skip
PROTECTIONS = ["policy", "strict-no-policy", "strict-sha256", "sha256-field", "fragment", "none"]
ENTRY_POINTS = ["install", "upgrade", "preload", "preload-lock", "install-from", "repair", "lock", "export"]
VARIANTS = ["honest", "attack", "weaker"]

# (class of the candidate used, protection) -> outcome per variant (honest, attack, weaker).
#   verified: installs, signature proven; checked: installs, sha256 proven, verified: false;
#   unverified: installs with a warning, nothing proven; refused: exit 3, nothing changed.
EXPECTED: dict[tuple[str, str], tuple[str, str, str]] = {
    ("image", "policy"): ("verified", "refused", "verified"),
    ("image", "strict-no-policy"): ("refused", "refused", "refused"),
    ("image", "strict-sha256"): ("refused", "refused", "refused"),  # a sha256 binds tarballs, not images
    ("image", "sha256-field"): ("unverified", "unverified", "refused"),
    ("image", "fragment"): ("unverified", "unverified", "refused"),
    ("image", "none"): ("unverified", "unverified", "refused"),
    ("tarball", "policy"): ("verified", "refused", "verified"),
    ("tarball", "strict-no-policy"): ("refused", "refused", "refused"),
    ("tarball", "strict-sha256"): ("checked", "refused", "refused"),
    ("tarball", "sha256-field"): ("checked", "refused", "refused"),
    ("tarball", "fragment"): ("checked", "refused", "refused"),
    ("tarball", "none"): ("unverified", "unverified", "refused"),
}
# Entry points that install a digest asked for on purpose: it binds every candidate, so replaced
# bytes are refused whatever the protection.
PINNED = {"preload-lock", "repair"}
IMAGE_CANDIDATES = {"registry-mirror", "oci-entry-mirror", "tag-fallback", "local-layout", "from-bundle"}


def impossible(kind: str, candidate: str, protection: str, entry_point: str, variant: str) -> str | None:
    """Why a cell cannot exist (or adds nothing another cell does not test), else None."""
    if (candidate == "from-bundle") != (entry_point == "install-from"):
        return "install --from reads only a bundle's layouts, and only it reads them"
    if (candidate == "lock-entry") != (entry_point == "preload-lock"):
        return "preload --lock installs only lock entries, and only it reads them"
    if kind == "tarball" and candidate in ("registry-mirror", "tag-fallback", "local-layout", "from-bundle"):
        return "registry mirrors, tag fallbacks and layouts belong to an OCI uri; export writes only images"
    if kind == "meta" and candidate not in ("primary", "tarball-entry-mirror", "lock-entry", "from-bundle"):
        return "a meta-backend resolves to its concrete entry before candidates exist: kinds oci/tarball cover them"
    if kind == "meta" and entry_point == "repair":
        return "repair rebuilds the concrete backend by its name; a meta-backend directory holds nothing"
    if protection == "fragment" and kind != "tarball" and candidate != "tarball-entry-mirror":
        return "a #sha256= fragment can only be written on a tarball URL, and this entry has none"
    if variant == "weaker" and candidate not in ("registry-mirror", "oci-entry-mirror", "tarball-entry-mirror",
                                                 "tag-fallback"):  # fmt: skip
        return "nothing is tried before this candidate"
    if variant == "weaker" and entry_point != "install":
        return "the failure rules live in the one candidate loop; install exercises them for all"
    return None


def used_class(kind: str, candidate: str) -> str:
    if candidate in ("primary", "lock-entry"):  # the entry's own uri (a lock entry locks the primary)
        return "tarball" if kind == "tarball" else "image"
    return "image" if candidate in IMAGE_CANDIDATES else "tarball"


def expected(kind: str, candidate: str, protection: str, entry_point: str, variant: str) -> str:
    klass = used_class(kind, candidate)
    honest, attack, weaker = EXPECTED[(klass, protection)]
    outcome = {"honest": honest, "attack": attack, "weaker": weaker}[variant]
    if variant == "weaker" and protection.startswith("strict") and kind != "tarball":
        # The earlier candidate is an image, which strict mode without a policy refuses before
        # contacting it: it never fails, and this candidate is tried as if it came first.
        outcome = honest
    if entry_point in PINNED:
        if variant == "attack":
            outcome = "refused"  # the locked or recorded digest binds every candidate
        elif klass == "tarball" and outcome == "unverified":
            outcome = "checked"  # ... and a tarball's bytes are checked against it
    if entry_point == "export" and klass == "tarball" and outcome != "refused":
        outcome = "usage"  # export writes OCI images only: a tarball entry is exit 2
    return outcome


CELLS = [
    c for c in itertools.product(KINDS, CANDIDATES, PROTECTIONS, ENTRY_POINTS, VARIANTS) if not impossible(*c)
]


def test_the_matrix_is_what_the_issue_asks_for() -> None:
    """Every dimension value appears in some possible cell, and every table row is used."""
    for index, values in enumerate((KINDS, CANDIDATES, PROTECTIONS, ENTRY_POINTS, VARIANTS)):
        assert {c[index] for c in CELLS} == set(values)
    assert {(used_class(c[0], c[1]), c[2]) for c in CELLS} == set(EXPECTED)
    assert {expected(*c) for c in CELLS} == {"verified", "checked", "unverified", "refused", "usage"}


# -- the world each cell runs in --------------------------------------------------------------------


@dataclass
class World:
    registry: Registry
    sigstore: SigstoreInstance
    root: Path
    server: FileServer
    verifier: SigstoreVerifier
    client: httpx.Client  # shared: building one costs tens of milliseconds


@pytest.fixture(scope="module")
def world(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Any:
    instance = SigstoreInstance()
    root = instance.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")
    with serving() as server, httpx.Client(trust_env=False, timeout=10) as client:
        yield World(registry, instance, root, server, SigstoreVerifier(), client)


def layer(label: str) -> bytes:
    return gz(tar_bytes([file("run.sh", f"#!/bin/sh\necho {label}\n".encode(), mode=0o755),
                         file("payload", secrets.token_bytes(48))]))  # fmt: skip


@dataclass
class Scenario:
    """One cell set up: the index entries, config fields, and how to attack its candidate."""

    world: World
    cell: tuple[str, str, str, str, str]
    tmp: Path
    honest: bytes
    entries: list[dict[str, Any]]
    fields: dict[str, Any]
    requested: str
    attack_pinned: Any = None  # callable: replace bytes under a pinned digest
    attack_tag: Any = None  # callable: replace what the candidate's name serves

    @property
    def protection(self) -> str:
        return self.cell[2]

    def config(self, root: Path, *, strict: bool | None = None) -> Config:
        protection = self.protection
        gallery: dict[str, Any] = {"name": "m", "url": str(self.tmp / "index" / "index.yaml"),
                                   "trusted_root": str(self.world.root)}  # fmt: skip
        if protection == "policy":
            gallery["verification"] = POLICY
        if strict is None:
            strict = protection.startswith("strict")
        data = {"format_version": 1, "backends_path": str(root / "backends"), "cache_path": str(root / "cache"),
                "insecure_registries": [self.world.registry.host], "capability": "default",
                "require_integrity": strict, "galleries": [gallery], **self.fields}  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        (root / "gallery.yaml").write_text(yaml.safe_dump(data))
        return load_config(root / "gallery.yaml")

    def installer(self, config: Config) -> Installer:
        client = self.world.client
        registry = RegistryClient.from_config(config, client, retry=RetryPolicy(attempts=1, initial_wait=0))
        return Installer(config, client=client, verifier=self.world.verifier, registry=registry,
                         detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip


def build(world: World, cell: tuple[str, str, str, str, str], tmp: Path) -> Scenario:
    kind, candidate, protection, _, variant = cell
    registry, host, signing = world.registry, world.registry.host, protection == "policy"
    repo = f"matrix/{secrets.token_hex(4)}"
    honest = layer("honest")
    sha = hashlib.sha256(honest).hexdigest()

    def push(repository: str, tag: str, content: bytes, *, identity: str = DEFAULT_IDENTITY) -> str:
        digest, _ = registry.push_image(repository, tag, [(content, LAYER_GZIP)])
        push_signature(registry, repository, digest, world.sigstore.sign_image(digest, identity=identity))
        return digest

    def tamper(content: bytes) -> None:
        path = registry.blob_data_path(digest_of(content))
        path.write_bytes(path.read_bytes()[:-16] + bytes(16))

    def served(content: bytes) -> str:
        return world.server.publish(f"/{secrets.token_hex(6)}.tar.gz", content)

    down_tarball = f"http://127.0.0.1:9/{secrets.token_hex(4)}.tar.gz"
    entry: dict[str, Any] = {"name": "target"}
    fields: dict[str, Any] = {}
    scenario = Scenario(world, cell, tmp, honest, [entry], fields, "meta" if kind == "meta" else "target")
    used = candidate if candidate not in ("lock-entry", "from-bundle") else "primary"
    tarball_url: str | None = None

    if used == "primary" and kind == "tarball":
        tarball_url = served(honest)
        entry["uri"] = tarball_url
    elif used == "primary":
        push(repo, "v1", honest)
        entry["uri"] = f"{host}/{repo}:v1"
        scenario.attack_tag = lambda: push(repo, "v1", layer("attacker"), identity=MALLORY)
    elif used == "registry-mirror":
        entry["uri"] = f"{host}/{repo}:v1"
        fields["registry_mirrors"] = {host: [f"{host}/mirror"]}
        if variant == "weaker":
            bad = layer("tampered")
            push(f"mirror/{repo}", "v1", bad)
            tamper(bad)
            push(repo, "v1", honest)
        else:
            push(f"mirror/{repo}", "v1", honest)
        scenario.attack_tag = lambda: push(f"mirror/{repo}", "v1", layer("attacker"), identity=MALLORY)
    elif used in ("oci-entry-mirror", "tarball-entry-mirror"):
        if variant == "weaker":  # the primary answers, with bytes that fail their check
            if kind == "tarball":
                wrong = layer("wrong bytes") if protection != "none" else b"not a tar stream"
                entry["uri"] = served(wrong)
            else:
                bad = layer("tampered")
                push(f"{repo}-p", "v1", bad)
                tamper(bad)
                entry["uri"] = f"{host}/{repo}-p:v1"
        else:
            entry["uri"] = down_tarball if kind == "tarball" else f"{host}/{repo}-gone:v1"
        if used == "oci-entry-mirror":
            push(f"{repo}-m", "v1", honest)
            entry["mirrors"] = [f"{host}/{repo}-m:v1"]
            scenario.attack_tag = lambda: push(f"{repo}-m", "v1", layer("attacker"), identity=MALLORY)
        else:
            tarball_url = served(honest)
            entry["mirrors"] = [tarball_url]
    elif used == "tag-fallback":
        entry["uri"] = f"{host}/{repo}:latest-cpu"
        push(repo, "master-cpu", honest)
        if variant == "weaker":
            bad = layer("tampered")
            push(repo, "latest-cpu", bad)
            tamper(bad)
        scenario.attack_tag = lambda: push(repo, "master-cpu", layer("attacker"), identity=MALLORY)
    elif used == "local-layout":
        layout = tmp / "index" / "layout"
        write_layout(layout, [(honest, LAYER_GZIP)], sign=lambda d: world.sigstore.sign_image(d))
        entry["uri"] = "ocifile://layout"

        def relayout() -> None:
            write_layout(layout, [(layer("attacker"), LAYER_GZIP)],
                         sign=lambda d: world.sigstore.sign_image(d, identity=MALLORY))  # fmt: skip

        scenario.attack_tag = relayout
        scenario.attack_pinned = lambda: _tamper_file(layout / "blobs" / "sha256" / sha)

    if tarball_url is not None:
        url = tarball_url
        scenario.attack_tag = scenario.attack_pinned = lambda: world.server.publish(
            url.removeprefix(world.server.url), layer("attacker")
        )
        if signing:
            entry["signature"] = world.server.publish(f"/{secrets.token_hex(6)}.sigstore.json",
                                                      world.sigstore.sign_blob(honest))  # fmt: skip
    if scenario.attack_pinned is None:
        scenario.attack_pinned = lambda: tamper(honest)
    if protection in ("strict-sha256", "sha256-field"):
        entry["sha256"] = sha
    if protection == "fragment":  # on a tarball URL of the entry: the uri, else the tarball mirror
        if kind == "tarball":
            entry["uri"] += f"#sha256={sha}"
        else:
            entry["mirrors"] = [m + f"#sha256={sha}" if m == tarball_url else m for m in entry["mirrors"]]
    if kind == "meta":
        scenario.entries.append({"name": "meta", "capabilities": {"default": "target"}})
    index = tmp / "index" / "index.yaml"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(yaml.safe_dump(scenario.entries))
    return scenario


def _tamper_file(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-16] + bytes(16))


# -- running a cell ---------------------------------------------------------------------------------


def state(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    backends = tree_state(root / "backends", skip=(".gallery/locks",))
    for bookkeeping in (".gallery", ".gallery/staging", ".gallery/journal", ".gallery/trash"):
        if backends.get(bookkeeping, "").startswith("4"):
            del backends[bookkeeping]
    return backends, tree_state(root / "cache" / "blobs")


def seed(root: Path) -> None:
    """Something already installed and cached, which must stay exactly as it is."""
    keeper = root / "backends" / "keeper"
    keeper.mkdir(parents=True)
    (keeper / "run.sh").write_text("#!/bin/sh\n")
    (keeper / "metadata.json").write_text('{"name": "keeper", "format_version": 1}')
    cached = root / "cache" / "blobs" / "sha256"
    cached.mkdir(parents=True)
    (cached / hashlib.sha256(b"cached").hexdigest()).write_bytes(b"cached")


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c) for c in CELLS])
def test_no_bypass(world: World, tmp_path: Path, cell: tuple[str, str, str, str, str]) -> None:
    kind, candidate, protection, entry_point, variant = cell
    scenario = build(world, cell, tmp_path)
    want = expected(*cell)
    root = tmp_path / "p"
    seed(root)
    config = scenario.config(root)
    requested = scenario.requested

    lock = bundle = None
    if entry_point == "preload-lock":  # locked elsewhere (strict off, so even an unverified one is locked)
        locker = scenario.config(tmp_path / "locker", strict=False)
        outcome = lock_backends(locker, [requested], make_installer=scenario.installer)
        assert outcome.exit_code == 0, outcome.batch.results[0].error
        lock = outcome.lock
    if entry_point == "install-from":  # exported elsewhere, honestly
        exporter = scenario.config(tmp_path / "exporter", strict=False)
        bundle = tmp_path / "bundle"
        batch = scenario.installer(exporter).export([requested], bundle)
        assert batch.exit_code == 0, batch.results[0].error
    if entry_point == "repair":  # installed (strict off), then damaged; the cache is gone
        installed = scenario.installer(scenario.config(root, strict=False)).install_one(requested)
        assert installed.exit_code == 0, installed.error
        (root / "backends" / "target" / "payload").write_bytes(b"damaged")
        shutil.rmtree(root / "cache" / "blobs" / "sha256")
        (root / "cache" / "blobs" / "sha256").mkdir()
        config = scenario.config(root)
    if entry_point == "upgrade":  # an older version of the target is installed
        old = root / "backends" / "target"
        old.mkdir()
        (old / "run.sh").write_text("#!/bin/sh\necho old\n")
        (old / "metadata.json").write_text(
            '{"name": "target", "format_version": 1, "gallery": "m", "digest": "sha256:' + "ab" * 32 + '"}'
        )
        if kind == "meta":
            (root / "backends" / "meta").mkdir()
            (root / "backends" / "meta" / "metadata.json").write_text(
                '{"name": "meta", "format_version": 1, "gallery": "m", "meta_backend_for": "target"}'
            )
    if variant == "attack":
        if entry_point in PINNED:
            scenario.attack_pinned()
        elif candidate == "from-bundle":
            write_layout(bundle / "layouts" / "target", [(layer("attacker"), LAYER_GZIP)],  # type: ignore[operator]
                         sign=lambda d: world.sigstore.sign_image(d, identity=MALLORY))  # fmt: skip
        else:
            scenario.attack_tag()

    before = state(root)
    untouched = tree_state(root / "backends")  # lock files included
    installer = scenario.installer(config)
    result: InstallResult
    if entry_point == "install":
        result = installer.install_one(requested)
    elif entry_point == "upgrade":
        result = installer.upgrade_one(requested)
    elif entry_point in ("preload", "preload-lock"):
        (result,) = preload(installer, names=() if lock else [requested], lock=lock).results
    elif entry_point == "install-from":
        (result,) = installer.install_from(bundle, [requested]).results  # type: ignore[arg-type]
    elif entry_point == "repair":
        (result,) = installer.repair(["target"]).results
    elif entry_point == "lock":
        (result,) = lock_backends(config, [requested], make_installer=scenario.installer).batch.results
    else:
        output = tmp_path / "out-bundle"
        batch: BatchResult = installer.export([requested], output)
        (result,) = batch.results
        assert output.exists() == (batch.exit_code == 0)

    check(want, result, root, before, writes=entry_point not in ("lock", "export"))
    if protection == "strict-no-policy":  # every candidate refused by the plan: not even a lock file
        assert tree_state(root / "backends") == untouched


def check(
    want: str,
    result: InstallResult,
    root: Path,
    before: tuple[dict[str, str], dict[str, str]],
    *,
    writes: bool,
) -> None:
    if want == "refused":
        assert result.exit_code == 3, (result.status, result.error)
        assert state(root) == before
        return
    if want == "usage":
        assert result.exit_code == 2, (result.status, result.error)
        return
    assert result.exit_code == 0, (result.status, result.error)
    if not writes:
        assert result.verified == (want == "verified")
        assert state(root)[0] == before[0]
        return
    metadata = read_metadata(root / "backends" / "target")
    assert metadata is not None and metadata.verification is not None
    evidence = metadata.verification
    assert evidence.verified == (want == "verified") == result.verified
    if want == "verified":
        assert "signature" in evidence.proven
    elif want == "checked":
        assert evidence.proven == ("sha256",)
    else:  # unverified: nothing claimed, and the operator is told
        assert "signature" not in evidence.proven and "sha256" not in evidence.proven
        assert result.warnings, result
