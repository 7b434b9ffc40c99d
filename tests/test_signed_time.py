"""Signing time and the signature checks around it: Rekor v2 bundles (no log time, an RFC 3161
timestamp instead), which time not_before compares with, and the checks a mutation once showed
unguarded (payload type, statement type, SANs, issuer extensions, cache keys).

The bundles come from the local test Sigstore (``sigstore_instance``) with its test timestamp
authority (``sigstore_tsa``); sigstore-python verifies them for real.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.errors import SignatureError
from gallery.oci.registry import RegistryClient, RetryPolicy
from gallery.operations.installer import Installer
from gallery.place.metadata import read_metadata
from gallery.verify.evidence import Evidence, RecordedSignature
from gallery.verify.policy import VerificationPolicy
from gallery.verify.signatures import SigstoreVerifier

from .registry_server import LAYER_GZIP, Registry, push_signature
from .sigstore_instance import (
    DEFAULT_IDENTITY,
    GITHUB_ISSUER,
    LeafShape,
    SigstoreInstance,
    cosign_statement,
)
from .tarbuild import file, gz, tar_bytes

POLICY = VerificationPolicy(issuer=GITHUB_ISSUER, identity=DEFAULT_IDENTITY)
DIGEST = "sha256:" + "ab" * 32
WHEN = dt.datetime(2026, 11, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sigstore() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="module")
def root(sigstore: SigstoreInstance, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(sigstore.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json"))


def verify_image(
    bundle: bytes, root: str, policy: VerificationPolicy = POLICY, digest: str = DIGEST
) -> Evidence:
    return SigstoreVerifier().verify_image(
        digest=digest, sources=[RecordedSignature(bundle, where="test")], policy=policy,
        trusted_root=root, gallery="g",
    )  # fmt: skip


def with_policy(**changes: Any) -> VerificationPolicy:
    return VerificationPolicy.model_validate({**POLICY.describe(), **changes})


# -- Rekor v2: the timestamp authority's time -------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "blob"])
def test_a_rekor_v2_bundle_is_timed_by_its_timestamp_authority(
    sigstore: SigstoreInstance, root: str, kind: str
) -> None:
    if kind == "image":
        evidence = verify_image(sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=True), root)
    else:
        data = b"tarball bytes"
        evidence = SigstoreVerifier().verify_blob(
            sha256_hex=hashlib.sha256(data).hexdigest(), bundle=sigstore.sign_blob(data, when=WHEN, rekor_v2=True),
            policy=POLICY, trusted_root=root, gallery="g",
        )  # fmt: skip
    assert evidence.verified
    assert evidence.time_source == "timestamp-authority"
    assert evidence.timestamp_authority == sigstore.tsa.name
    assert evidence.signed_time == WHEN and evidence.signing_time == WHEN
    assert evidence.integrated_time is None, "a Rekor v2 entry has no log time to record"
    assert evidence.bundle is not None
    assert evidence.bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"]["version"] == "0.0.2"


def test_a_rekor_v1_bundle_is_timed_by_the_log(sigstore: SigstoreInstance, root: str) -> None:
    evidence = verify_image(sigstore.sign_image(DIGEST, when=WHEN), root)
    assert evidence.time_source == "transparency-log" and evidence.timestamp_authority is None
    assert evidence.signed_time == evidence.integrated_time == WHEN


@pytest.mark.parametrize("rekor_v2", [False, True], ids=["log time", "timestamp"])
def test_not_before_is_inclusive_at_the_signing_time(
    sigstore: SigstoreInstance, root: str, rekor_v2: bool
) -> None:
    bundle = sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=rekor_v2)
    assert verify_image(bundle, root, with_policy(not_before=WHEN)).verified, "signed exactly at not_before"
    with pytest.raises(SignatureError, match="before not_before"):
        verify_image(bundle, root, with_policy(not_before=WHEN + dt.timedelta(seconds=1)))


def test_a_timestamp_from_a_tsa_the_root_does_not_list_is_not_a_signing_time(
    sigstore: SigstoreInstance, root: str
) -> None:
    """A Rekor v1 bundle also carrying a timestamp from a stranger's TSA claiming an earlier
    time: sigstore verifies the bundle by its log time; the stranger's time must not be used
    (it would be the "earliest" and move not_before's verdict either way)."""
    stranger = SigstoreInstance(name="stranger")
    honest_tsa, sigstore.tsa = sigstore.tsa, stranger.tsa
    try:
        bundle = json.loads(sigstore.sign_image(DIGEST, when=WHEN, timestamp=True))
    finally:
        sigstore.tsa = honest_tsa
    document = json.dumps(bundle).encode()
    evidence = verify_image(document, root, with_policy(not_before=WHEN))
    assert evidence.time_source == "transparency-log" and evidence.signed_time == WHEN
    # and a Rekor v2 bundle whose only timestamp is the stranger's has no trusted time at all
    sigstore.tsa = stranger.tsa
    try:
        orphan = sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=True)
    finally:
        sigstore.tsa = honest_tsa
    with pytest.raises(SignatureError):
        verify_image(orphan, root)


def test_the_earliest_trusted_time_is_the_signing_time(sigstore: SigstoreInstance, root: str) -> None:
    """A Rekor v1 bundle with a log time and our TSA's timestamp 30 s earlier (still inside the
    certificate's validity): not_before compares the earlier one (a trusted source saw it then)."""
    bundle = json.loads(sigstore.sign_image(DIGEST, when=WHEN, timestamp=True))
    stamp = sigstore.tsa.stamp(_signature(bundle), when=WHEN - dt.timedelta(seconds=30))
    import base64

    bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
        {"signedTimestamp": base64.b64encode(stamp).decode()}
    ]
    document = json.dumps(bundle).encode()
    evidence = verify_image(document, root)
    assert evidence.time_source == "timestamp-authority" and evidence.signed_time == WHEN - dt.timedelta(
        seconds=30
    )
    with pytest.raises(SignatureError, match="before not_before"):
        verify_image(document, root, with_policy(not_before=WHEN - dt.timedelta(seconds=10)))


def _signature(bundle: dict[str, Any]) -> bytes:
    import base64

    return base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])


def test_a_malformed_timestamp_is_one_refused_bundle_and_the_next_is_tried(
    sigstore: SigstoreInstance, root: str
) -> None:
    """sigstore raises its VerificationError while parsing a bad timestamp: that bundle is
    refused with its reason, the good bundle listed after it still verifies."""
    broken = json.loads(sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=True))
    broken["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
        {"signedTimestamp": "MAMCAQA="}  # a DER SEQUENCE that is no TimeStampResp
    ]
    bad = json.dumps(broken).encode()
    good = sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=True)

    class Two:
        def describe(self) -> str:
            return "test"

        def bundles(self, digest: str) -> list[bytes]:
            return [bad, good]

        def has_legacy_signature(self, digest: str) -> bool:
            return False

    evidence = SigstoreVerifier().verify_image(
        digest=DIGEST, sources=[Two()], policy=POLICY, trusted_root=root, gallery="g"
    )
    assert evidence.verified
    with pytest.raises(SignatureError, match="bundle 1: not a Sigstore bundle") as refused:
        verify_image(bad, root)
    assert "MAMCAQA" not in refused.value.message


# -- what is signed, by whom ------------------------------------------------------------------


def test_the_dsse_payload_type_must_be_in_toto(sigstore: SigstoreInstance, root: str) -> None:
    bundle = sigstore.sign_dsse(cosign_statement(DIGEST), payload_type="application/json")
    with pytest.raises(SignatureError, match="DSSE payload type"):
        verify_image(bundle, root)


def test_the_payload_must_be_an_in_toto_statement(sigstore: SigstoreInstance, root: str) -> None:
    statement = json.loads(cosign_statement(DIGEST))
    statement["_type"] = "https://example.com/NotAStatement/v1"
    with pytest.raises(SignatureError, match="not an in-toto Statement"):
        verify_image(sigstore.sign_dsse(json.dumps(statement).encode()), root)
    statement["_type"] = "https://in-toto.io/Statement/v0.1"  # the older type cosign still writes
    assert verify_image(sigstore.sign_dsse(json.dumps(statement).encode()), root).verified


def test_a_certificate_naming_several_identities_is_refused(sigstore: SigstoreInstance, root: str) -> None:
    shape = LeafShape(
        extra_identities=("https://github.com/mallory/repo/.github/workflows/x.yml@refs/heads/main",)
    )
    with pytest.raises(SignatureError, match="names 2 identities"):
        verify_image(sigstore.sign_image(DIGEST, shape=shape), root)


def test_the_v2_issuer_extension_wins_over_the_v1(sigstore: SigstoreInstance, root: str) -> None:
    evil = "https://accounts.evil.example"
    # v2 says GitHub, v1 says evil: GitHub is the issuer
    assert (
        verify_image(sigstore.sign_image(DIGEST, shape=LeafShape(issuer_v1=evil)), root).issuer
        == GITHUB_ISSUER
    )
    # v2 says evil, v1 says GitHub: evil is the issuer, and the policy refuses it
    from .sigstore_instance import _der_utf8

    with pytest.raises(SignatureError, match="is not the policy's"):
        verify_image(
            sigstore.sign_image(
                DIGEST, shape=LeafShape(issuer_v1=GITHUB_ISSUER, issuer_v2_der=_der_utf8(evil))
            ),
            root,
        )
    # a certificate from before the v2 extension existed: v1 alone is read
    legacy = verify_image(sigstore.sign_image(DIGEST, shape=LeafShape(issuer_v2_der=b"")), root)
    assert legacy.issuer == GITHUB_ISSUER


@pytest.mark.parametrize(
    "raw",
    [
        bytes([0x0C, 60]) + GITHUB_ISSUER.encode(),  # the length says 60, the string is 45
        bytes([0x0C, 40]) + GITHUB_ISSUER.encode(),  # trailing bytes after the string
        bytes([0x04, len(GITHUB_ISSUER)]) + GITHUB_ISSUER.encode(),  # an OCTET STRING, not UTF8String
    ],
    ids=["long length", "short length", "wrong type"],
)
def test_a_malformed_v2_issuer_extension_is_refused(
    sigstore: SigstoreInstance, root: str, raw: bytes
) -> None:
    with pytest.raises(SignatureError, match="OIDC issuer extension is not a DER UTF8String"):
        verify_image(sigstore.sign_image(DIGEST, shape=LeafShape(issuer_v2_der=raw)), root)


# -- the verification cache: a success under one policy is not one under another ----------------


def test_a_blob_signature_cached_under_one_policy_is_checked_again_under_another(
    sigstore: SigstoreInstance, root: str
) -> None:
    data = b"index or tarball bytes"
    bundle = sigstore.sign_blob(data)
    verifier = SigstoreVerifier()
    sha = hashlib.sha256(data).hexdigest()
    assert verifier.verify_blob(
        sha256_hex=sha, bundle=bundle, policy=POLICY, trusted_root=root, gallery="g"
    ).verified
    other = VerificationPolicy(
        issuer=GITHUB_ISSUER, identity="https://github.com/other/repo/.github/workflows/x.yml@refs/heads/main"
    )
    with pytest.raises(SignatureError, match="policy expects"):
        verifier.verify_blob(sha256_hex=sha, bundle=bundle, policy=other, trusted_root=root, gallery="g")


# -- end to end: a Rekor v2 signed image installs in strict mode --------------------------------


def test_a_rekor_v2_signed_image_installs_in_strict_mode(
    tmp_path: Path, registry: Registry, sigstore: SigstoreInstance, root: str
) -> None:
    repo = "rekor2/backend"
    layer = gz(tar_bytes([file("run.sh", b"#!/bin/sh\necho ok\n", mode=0o755)]))
    digest, _ = registry.push_image(repo, "v1", [(layer, LAYER_GZIP)])
    push_signature(registry, repo, digest, sigstore.sign_image(digest, rekor_v2=True))
    (tmp_path / "index.yaml").write_text(yaml.safe_dump([{"name": "b", "uri": f"{registry.host}/{repo}:v1"}]))
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "require_integrity": True,
        "insecure_registries": [registry.host], "capability": "default", "trusted_root": root,
        "galleries": [{"name": "signed", "url": str(tmp_path / "index.yaml"),
                       "verification": {**POLICY.describe(), "not_before": "2026-01-01T00:00:00Z"}}],
    }))  # fmt: skip
    config = load_config(tmp_path / "gallery.yaml")
    client = httpx.Client(trust_env=False, timeout=10)
    installer = Installer(
        config, client=client, verifier=SigstoreVerifier(), detector=lambda: HostFacts("linux", "amd64"),
        registry=RegistryClient.from_config(config, client, retry=RetryPolicy(attempts=2, initial_wait=0)),
    )  # fmt: skip
    result = installer.install_one("b")
    assert result.error is None and result.verified, result.error
    evidence = read_metadata(tmp_path / "backends" / "b").verification
    assert evidence is not None and evidence.verified and evidence.digest == digest
    assert evidence.time_source == "timestamp-authority" and evidence.timestamp_authority == sigstore.tsa.name


def test_a_log_time_without_the_logs_promise_is_not_a_signing_time(
    sigstore: SigstoreInstance, root: str
) -> None:
    """A Rekor v1 entry stripped of its inclusion promise, with an integrated time the bundle
    merely states (earlier than the TSA's): sigstore verifies it by the timestamp alone; the
    unsigned log time must not become the signing time."""
    bundle = json.loads(sigstore.sign_image(DIGEST, when=WHEN, timestamp=True))
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    del entry["inclusionPromise"]
    entry["integratedTime"] = str(int((WHEN - dt.timedelta(seconds=30)).timestamp()))
    evidence = verify_image(json.dumps(bundle).encode(), root)
    assert evidence.time_source == "timestamp-authority" and evidence.signed_time == WHEN


def test_no_signing_time_of_our_own_means_refused(sigstore: SigstoreInstance, root: str) -> None:
    """If sigstore accepts a time we cannot confirm (here: a root whose TSAs we were not told
    about), the bundle is refused rather than given a guessed time."""
    from gallery.verify.bundles import verify_image_bundle
    from gallery.verify.roots import LoadedRoot, TrustRoots

    loaded = TrustRoots().get(root)
    blind = LoadedRoot(loaded.spec, loaded.digest, loaded.verifier, timestamp_authorities=())
    bundle = sigstore.sign_image(DIGEST, when=WHEN, rekor_v2=True)
    with pytest.raises(SignatureError, match="no trusted signing time"):
        verify_image_bundle(bundle, digest=DIGEST, policy=POLICY, root=blind, covers=lambda _d: False)
    assert verify_image_bundle(
        bundle, digest=DIGEST, policy=POLICY, root=loaded, covers=lambda _d: False
    ).verified


# -- whatever the bundle says, the verdict is Evidence or SignatureError -----------------------


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))] or [path]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, (*path, i))] or [path]
    return [path]


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replace(node[path[0]], path[1:], value)
    return copy


JUNK = [None, 0, -1, 2**70, "", "AAAA", "MAMCAQA=", "not base64!", [], {}, [1], {"a": 1}, True, 1.5, "0.0.2"]


@pytest.mark.parametrize("kind", ["v1 image", "v2 image", "v2 blob"])
def test_no_mangled_bundle_escapes_as_anything_but_a_signature_error(
    sigstore: SigstoreInstance, root: str, kind: str
) -> None:
    """Every leaf of a good bundle replaced in turn by each kind of junk (and every subtree
    dropped): the verifier answers with evidence or a SignatureError, never another exception."""
    data = b"blob"
    if kind == "v2 blob":
        good = json.loads(sigstore.sign_blob(data, rekor_v2=True))
    else:
        good = json.loads(sigstore.sign_image(DIGEST, rekor_v2=kind.startswith("v2")))
    verifier = SigstoreVerifier()
    verdicts = {"verified": 0, "refused": 0}

    def check(document: Any) -> None:
        raw = json.dumps(document).encode()
        try:
            if kind == "v2 blob":
                verifier.check_bundle(
                    raw, sha256_hex=hashlib.sha256(data).hexdigest(), policy=POLICY, trusted_root=root
                )
            else:
                verify_image(raw, root)
            verdicts["verified"] += 1
        except SignatureError:
            verdicts["refused"] += 1

    check(good)
    assert verdicts["verified"] == 1

    paths = _leaves(good)
    for path in paths:
        for junk in JUNK:
            check(_replace(good, path, junk))
    for path in {leaf[:depth] for leaf in paths for depth in range(1, len(leaf) + 1)}:
        container: Any = good
        for key in path[:-1]:
            container = container[key]
        trimmed = dict(container) if isinstance(container, dict) else list(container)
        del trimmed[path[-1]]
        check(_replace(good, path[:-1], trimmed))
    assert verdicts["refused"] > len(paths) * len(JUNK) // 2, verdicts
