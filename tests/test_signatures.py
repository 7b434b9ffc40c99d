"""Signature verification for real: the local Sigstore instance, the real registry, sigstore-python."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import Config, load_config
from gallery.errors import SignatureError
from gallery.oci.registry import RegistryClient, RetryPolicy
from gallery.operations.installer import Installer
from gallery.place.metadata import read_metadata
from gallery.verify.evidence import Evidence
from gallery.verify.policy import VerificationPolicy
from gallery.verify.roots import TrustRootError, TrustRoots
from gallery.verify.signatures import SigstoreVerifier, VerificationCache

from .registry_server import LAYER_GZIP, OCI_INDEX, Registry, push_signature
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes

RUN_SH = file("run.sh", b"#!/bin/sh\necho signed\n", mode=0o755)
EXACT = {"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}
REGEX = {
    "issuer": GITHUB_ISSUER,
    "identity_regex": r"https://github\.com/org/repo/\.github/workflows/[a-z]+\.yml@refs/heads/main",
}


@pytest.fixture(scope="session")
def sigstore() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="session")
def trusted_root(sigstore: SigstoreInstance, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sigstore.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


class Signed:
    def __init__(self, tmp: Path, registry: Registry, sigstore: SigstoreInstance, root: Path) -> None:
        self.tmp, self.registry, self.sigstore, self.root = tmp, registry, sigstore, root
        self.repo = f"signed/{secrets.token_hex(4)}"
        self.entries: list[dict[str, Any]] = []

    def ref(self, tag: str, repo: str | None = None) -> str:
        return f"{self.registry.host}/{repo or self.repo}:{tag}"

    def push(self, tag: str, content: bytes = b"payload", repo: str | None = None) -> str:
        digest, _ = self.registry.push_image(
            repo or self.repo, tag, [(gz(tar_bytes([RUN_SH, file("data", content)])), LAYER_GZIP)]
        )
        return digest

    def sign(self, digest: str, repo: str | None = None, **kwargs: Any) -> None:
        push_signature(self.registry, repo or self.repo, digest, self.sigstore.sign_image(digest, **kwargs))

    def config(self, policy: dict[str, Any], **fields: Any) -> Config:
        index = self.tmp / "index.yaml"
        index.write_text(yaml.safe_dump(self.entries))
        data = {
            "format_version": 1, "backends_path": "./backends", "cache_path": "./cache",
            "insecure_registries": [self.registry.host], "capability": "default", "trusted_root": str(self.root),
            "galleries": [{"name": "signed", "url": str(index), "verification": policy}], **fields,
        }  # fmt: skip
        (self.tmp / "gallery.yaml").write_text(yaml.safe_dump(data))
        return load_config(self.tmp / "gallery.yaml")

    def install(
        self, policy: dict[str, Any], name: str = "b", verifier: SigstoreVerifier | None = None, **fields: Any
    ) -> Any:
        config = self.config(policy, **fields)
        client = httpx.Client(trust_env=False, timeout=10)
        registry = RegistryClient.from_config(config, client, retry=RetryPolicy(attempts=2, initial_wait=0))
        installer = Installer(config, client=client, verifier=verifier or SigstoreVerifier(), registry=registry,
                              detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip
        return installer.install_one(name)

    def nothing_installed(self) -> bool:
        backends = self.tmp / "backends"
        return not backends.exists() or [p.name for p in backends.iterdir() if p.name != ".gallery"] == []


@pytest.fixture
def signed(tmp_path: Path, registry: Registry, sigstore: SigstoreInstance, trusted_root: Path) -> Signed:
    return Signed(tmp_path, registry, sigstore, trusted_root)


@pytest.mark.parametrize("policy", [EXACT, REGEX], ids=["exact", "regex"])
def test_valid_signature_installs_with_evidence(signed: Signed, policy: dict[str, Any]) -> None:
    digest = signed.push("v1")
    signed.sign(digest)
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    result = signed.install(policy)
    assert result.error is None, result.error
    assert result.verified and result.digest == digest
    evidence = read_metadata(signed.tmp / "backends" / "b").verification  # type: ignore[union-attr]
    assert evidence is not None and evidence.verified and evidence.digest == digest
    assert evidence.identity == DEFAULT_IDENTITY and evidence.issuer == GITHUB_ISSUER
    assert evidence.log_index is not None and evidence.policy_fingerprint and evidence.bundle_digest
    assert evidence.bundle is not None and evidence.bundle["mediaType"].startswith(
        "application/vnd.dev.sigstore"
    )


BAD_SIGNATURES = {
    "wrong identity": (
        {"identity": "https://github.com/org/other/.github/workflows/build.yml@refs/heads/main"},
        "policy expects",
    ),
    "wrong issuer": ({"issuer": "https://accounts.example.com"}, "is not the policy's"),
    "unanchored regex attack": (
        {"identity": "https://github.com/org/repo-evil/.github/workflows/build.yml@refs/heads/main"},
        "policy expects",
    ),
    "before not_before": ({"when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}, "before not_before"),
    "wrong predicateType": ({"predicate_type": "https://slsa.dev/provenance/v1"}, "predicateType"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGNATURES))
def test_bad_signatures_are_refused_with_a_reason(signed: Signed, case: str) -> None:
    kwargs, reason = BAD_SIGNATURES[case]
    digest = signed.push("v1")
    signed.sign(digest, **kwargs)
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    policy = {**REGEX, "not_before": "2026-06-01T00:00:00Z"}
    if case == "unanchored regex attack":
        policy = {"issuer": GITHUB_ISSUER, "identity_regex": r"https://github\.com/org/repo"}
    result = signed.install(policy)
    assert result.exit_code == 3, result
    assert reason in result.error.message and digest in result.error.message
    assert signed.nothing_installed()
    assert (
        not any((signed.tmp / "cache" / "blobs" / "sha256").glob("*"))
        if (signed.tmp / "cache" / "blobs" / "sha256").exists()
        else True
    )


def test_statement_over_another_digest(signed: Signed) -> None:
    digest = signed.push("v1")
    other = signed.push("other", content=b"other")
    push_signature(signed.registry, signed.repo, digest, signed.sigstore.sign_image(other))
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    result = signed.install(EXACT)
    assert result.exit_code == 3 and f"signature is over {other}, not {digest}" in result.error.message


def test_a_ca_outside_the_trusted_root_is_refused(signed: Signed) -> None:
    digest = signed.push("v1")
    push_signature(signed.registry, signed.repo, digest, SigstoreInstance(name="rogue").sign_image(digest))
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    result = signed.install(EXACT)
    assert result.exit_code == 3 and "certificate chain" in result.error.message


def test_several_referrers_only_the_last_valid_and_garbage_ones(signed: Signed) -> None:
    digest = signed.push("v1")
    push_signature(signed.registry, signed.repo, digest, b"{not json")
    push_signature(signed.registry, signed.repo, digest, b"x" * (3 * 1024 * 1024))  # over max_bundle_bytes
    signed.sign(digest, identity="https://github.com/someone/else/.github/workflows/x.yml@refs/heads/main")
    signed.sign(digest)
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    result = signed.install(EXACT)
    assert result.error is None and result.verified


def test_no_signature_and_legacy_sig_tag(signed: Signed) -> None:
    digest = signed.push("v1")
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    result = signed.install(EXACT)
    assert result.exit_code == 3 and "no signature found" in result.error.message
    signed.registry.push_image(
        signed.repo, digest.replace(":", "-") + ".sig", [(gz(tar_bytes([file("sig")])), LAYER_GZIP)]
    )
    legacy = signed.install(EXACT)
    assert legacy.exit_code == 3 and "--new-bundle-format" in (legacy.error.hint or "")


def test_index_level_signature_covers_the_platform_manifest(signed: Signed) -> None:
    amd, amd_doc = signed.registry.push_image(signed.repo, "amd", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    size = len(json.dumps(amd_doc).encode())
    index = signed.registry.push_index(signed.repo, "multi", [(amd, size, "linux/amd64")])
    push_signature(
        signed.registry, signed.repo, index, signed.sigstore.sign_image(index), subject_media_type=OCI_INDEX
    )
    signed.entries = [{"name": "b", "uri": signed.ref("multi")}]
    result = signed.install(EXACT)
    assert result.error is None and result.verified and result.digest == index
    metadata = read_metadata(signed.tmp / "backends" / "b")
    assert metadata is not None and metadata.manifest_digest == amd


def test_a_mirror_serving_other_content_under_the_same_tag_is_not_trusted(signed: Signed) -> None:
    genuine = signed.push("v1", content=b"genuine")
    signed.sign(genuine)
    # registry_mirrors sends pulls to a mirror first; it serves something else under the same tag.
    signed.push("v1", content=b"substituted", repo=f"mirror/{signed.repo}")
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    mirrors = {signed.registry.host: [f"{signed.registry.host}/mirror"]}
    result = signed.install(EXACT, registry_mirrors=mirrors)
    assert result.error is None and result.digest == genuine
    assert (signed.tmp / "backends" / "b" / "data").read_bytes() == b"genuine"


def test_signature_only_in_the_primary_repository_for_a_mirror_candidate(signed: Signed) -> None:
    digest = signed.push("v1")
    signed.sign(digest)
    mirror_repo = f"{signed.repo}-mirror"
    assert signed.push("v1", repo=mirror_repo) == digest  # the same image, no signatures beside it
    signed.entries = [
        {"name": "b", "uri": signed.ref("gone"), "mirrors": [signed.ref("v1", repo=mirror_repo)]}
    ]
    result = signed.install(EXACT)
    assert result.error is None and result.verified and result.candidate == signed.ref("v1", repo=mirror_repo)


# -- the cache ---------------------------------------------------------------------------------


class CountingSource:
    def __init__(self, bundles: list[bytes]) -> None:
        self._bundles = bundles
        self.calls = 0
        self.lock = threading.Lock()

    def describe(self) -> str:
        return "test source"

    def bundles(self, digest: str) -> list[bytes]:
        with self.lock:
            self.calls += 1
        return list(self._bundles)

    def has_legacy_signature(self, digest: str) -> bool:
        return False


def test_cache_hits_single_flight_failures_not_cached_and_keys(
    sigstore: SigstoreInstance, trusted_root: Path
) -> None:
    digest = "sha256:" + "c" * 64
    policy = VerificationPolicy.model_validate(EXACT)
    verifier = SigstoreVerifier()
    empty = CountingSource([])
    with pytest.raises(SignatureError):
        verifier.verify_image(
            digest=digest, sources=[empty], policy=policy, trusted_root=str(trusted_root), gallery="g"
        )
    good = CountingSource([sigstore.sign_image(digest)])
    results: list[Evidence] = []
    threads = [
        threading.Thread(target=lambda: results.append(verifier.verify_image(
            digest=digest, sources=[good], policy=policy, trusted_root=str(trusted_root), gallery="g")))
        for _ in range(8)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(r.verified for r in results)
    assert good.calls == 1, (
        "eight concurrent verifications of one key do the work once (failure was not cached)"
    )
    verifier.verify_image(
        digest=digest, sources=[good], policy=policy, trusted_root=str(trusted_root), gallery="g"
    )
    assert good.calls == 1
    moved = VerificationPolicy.model_validate({**EXACT, "not_before": "2020-01-01T00:00:00Z"})
    verifier.verify_image(
        digest=digest, sources=[good], policy=moved, trusted_root=str(trusted_root), gallery="g"
    )
    assert good.calls == 2, "changing not_before misses the cache"
    other_root = SigstoreInstance(name="other").write_trusted_root(trusted_root.parent / "other_root.json")
    with pytest.raises(SignatureError):
        verifier.verify_image(
            digest=digest, sources=[good], policy=policy, trusted_root=str(other_root), gallery="g"
        )
    assert good.calls == 3, "another trusted root misses the cache"


def test_cache_ttl_and_bound() -> None:
    now = [0.0]
    cache = VerificationCache(max_entries=2, ttl_seconds=10, clock=lambda: now[0])
    evidence = Evidence(verified=True)
    calls = []
    for key in ("a", "b", "c"):
        cache.get_or_verify((key, "p"), lambda: calls.append(1) or evidence)  # type: ignore[func-returns-value]
    cache.get_or_verify(("a", "p"), lambda: calls.append(1) or evidence)  # type: ignore[func-returns-value]
    assert len(calls) == 4, "the oldest entry was evicted by the bound"
    now[0] = 11
    cache.get_or_verify(("c", "p"), lambda: calls.append(1) or evidence)  # type: ignore[func-returns-value]
    assert len(calls) == 5, "expired after the TTL"


def test_trusted_roots_load_once_and_failures_are_not_cached(tmp_path: Path, trusted_root: Path) -> None:
    roots = TrustRoots()
    assert roots.get("production").digest.startswith("sha256:")
    assert roots.get(str(trusted_root)) is roots.get(str(trusted_root))
    missing = tmp_path / "late_root.json"
    with pytest.raises(TrustRootError):
        roots.get(str(missing))
    missing.write_bytes(trusted_root.read_bytes())
    assert roots.get(str(missing)).digest == roots.get(str(trusted_root)).digest


def test_signed_tarball_is_verified_under_the_gallery_policy(signed: Signed) -> None:
    blob = gz(tar_bytes([RUN_SH]))
    tarball = signed.tmp / "backend.tar.gz"
    tarball.write_bytes(blob)
    good = signed.tmp / "good.sigstore"
    good.write_bytes(signed.sigstore.sign_blob(blob))
    bad = signed.tmp / "bad.sigstore"
    bad.write_bytes(signed.sigstore.sign_blob(blob, identity="mallory@example.org"))
    sha = hashlib.sha256(blob).hexdigest()
    signed.entries = [
        {"name": "b", "uri": f"file://{tarball}", "sha256": sha, "signature": f"file://{good}"},
        {"name": "c", "uri": f"file://{tarball}", "sha256": sha, "signature": f"file://{bad}"},
    ]
    result = signed.install(EXACT)
    assert result.error is None and result.verified
    refused = signed.install(EXACT, name="c")
    assert refused.exit_code == 3 and "mallory@example.org" in refused.error.message


def test_verify_rechecks_installed_backends_against_the_current_policy(signed: Signed) -> None:
    from gallery.verify.recheck import verify_installed

    digest = signed.push("v1")
    signed.sign(digest, when=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    signed.entries = [{"name": "b", "uri": signed.ref("v1")}]
    assert signed.install(EXACT).verified
    installed = [m for m in [read_metadata(signed.tmp / "backends" / "b")] if m is not None]
    ok = verify_installed(signed.config(EXACT), installed, [], verifier=SigstoreVerifier())
    assert ok.exit_code == 0 and ok.results[0].status == "verified"
    revoked = verify_installed(signed.config({**EXACT, "not_before": "2026-07-01T00:00:00Z"}), installed, ["b"],
                               verifier=SigstoreVerifier())  # fmt: skip
    assert revoked.exit_code == 3 and "before not_before" in revoked.results[0].error.message  # type: ignore[union-attr]
    other_signer = verify_installed(
        signed.config({**EXACT, "identity": "ci@example.org"}), installed, [], verifier=SigstoreVerifier()
    )
    assert other_signer.exit_code == 3
    assert (
        verify_installed(signed.config(EXACT), installed, ["missing"], verifier=SigstoreVerifier()).exit_code
        == 2
    )
