"""Keyless Sigstore (cosign) signature checks of a pinned digest, offline (the verification stage).

For each bundle found for ``repo@digest`` (any number; the first that verifies wins):
  1. sigstore-python verifies the bundle against the trusted root: certificate chain at the
     transparency log's integrated time, SCT, log inclusion proof, checkpoint and promise, the
     DSSE signature;
  2. our policy object checks the certificate: issuer and identity, regexes matched in full;
  3. we check what was signed: DSSE payload type in-toto, Statement v1, predicateType
     ``https://sigstore.dev/cosign/sign/v1``, and a subject whose sha256 is the pinned digest;
  4. ``not_before``: the integrated time must not be earlier.
Failures are collected per bundle and reported together; nothing here is cached but successes
(``VerificationCache``).
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, InvalidBundle, TrustedRoot
from sigstore.verify import Verifier as SigstoreLibraryVerifier
from sigstore_models.common.v1 import HashAlgorithm
from sigstore_models.trustroot import v1 as trustroot_v1

from gallery.digests import sha256_digest
from gallery.errors import OperationalError, SignatureError
from gallery.files import read_at_most
from gallery.oci.references import ReferenceParseError, parse_reference
from gallery.verify.evidence import Evidence, SignatureSource
from gallery.verify.policy import VerificationPolicy

# sigstore is imported here, at start-up, although it is two fifths of the CLI's import time: its
# modules define pydantic models, and pydantic reads PYDANTIC_DISABLE_PLUGINS from the environment
# whenever a model class is created, so importing it lazily, during a command, would break the
# promise that the library reads no environment (tests/test_no_environment.py catches it).

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "COSIGN_PREDICATE",
    "LoadedRoot",
    "SignatureSource",
    "SigstoreVerifier",
    "TrustRootError",
    "TrustRoots",
    "VerificationCache",
    "policy_fingerprint",
    "signed_sha256",
    "verify_blob_bundle",
    "verify_image_bundle",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = frozenset({BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"})
COSIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
_IN_TOTO = "application/vnd.in-toto+json"
_STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_PRODUCTION_ROOT = ("_store", "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json")
_MAX_ROOT_BYTES = 4 * 1024 * 1024


class TrustRootError(OperationalError):
    """The configured trusted root cannot be loaded (not cached: the next call tries again)."""


@dataclass(frozen=True)
class LoadedRoot:
    spec: str
    digest: str
    verifier: SigstoreLibraryVerifier


class TrustRoots:
    """Trusted roots loaded once per process; ``production`` is read from the sigstore package,
    offline (never through its TUF updater, which reads HOME and writes caches)."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedRoot] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> LoadedRoot:
        """Raises TrustRootError (and caches nothing) when the root cannot be loaded."""
        with self._lock:
            if spec in self._loaded:
                return self._loaded[spec]
            data = self._read(spec)
            try:
                root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
                verifier = SigstoreLibraryVerifier(trusted_root=root)
            except (SigstoreError, ValueError, KeyError) as exc:
                raise TrustRootError(
                    f"trusted root {spec!r} is not a usable Sigstore trusted_root.json: {exc}"
                ) from exc
            loaded = LoadedRoot(spec, sha256_digest(data), verifier)
            self._loaded[spec] = loaded
            return loaded

    @staticmethod
    def _read(spec: str) -> bytes:
        if spec == "production":
            resource = importlib.resources.files("sigstore").joinpath(*_PRODUCTION_ROOT)
            try:
                return resource.read_bytes()
            except OSError as exc:
                raise TrustRootError(
                    "the Sigstore production root is missing from the installed sigstore package",
                    hint="reinstall gallery's dependencies, or set trusted_root to a trusted_root.json path",
                ) from exc
        try:
            with Path(spec).open("rb") as handle:
                data = read_at_most(handle, _MAX_ROOT_BYTES)
        except OSError as exc:
            raise TrustRootError(f"cannot read trusted root {spec}: {exc.strerror or exc}") from exc
        if len(data) > _MAX_ROOT_BYTES:
            raise TrustRootError(f"trusted root {spec} is larger than {_MAX_ROOT_BYTES} bytes")
        return data


def policy_fingerprint(policy: VerificationPolicy, root_digest: str) -> str:
    """sha256 of the RFC 8785 JSON of the policy plus the trusted root's digest (the contract)."""
    document: dict[str, Any] = {"policy": policy.describe(), "trusted_root": root_digest}
    return sha256_digest(rfc8785.dumps(document))


# -- the certificate policy -------------------------------------------------------------------


@dataclass(frozen=True)
class _SignedBy:
    identity: str
    issuer: str


def _certificate_identity(cert: x509.Certificate) -> _SignedBy:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise VerificationError("certificate has no subject alternative name") from exc
    names = [
        *san.get_values_for_type(x509.UniformResourceIdentifier),
        *san.get_values_for_type(x509.RFC822Name),
    ]
    if len(names) != 1:
        raise VerificationError(f"certificate names {len(names)} identities; expected exactly one")
    issuer = None
    for oid, decode in ((_ISSUER_V2, _der_utf8), (_ISSUER_V1, lambda raw: raw.decode("utf-8"))):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        issuer = decode(raw)
        break
    if not issuer:
        raise VerificationError("certificate has no OIDC issuer extension")
    return _SignedBy(names[0], issuer)


def _der_utf8(raw: bytes) -> str:
    if len(raw) < 2 or raw[0] != 0x0C:
        raise VerificationError("OIDC issuer extension is not a DER UTF8String")
    length, offset = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    if offset + length != len(raw):
        raise VerificationError("OIDC issuer extension has a bad length")
    return raw[offset:].decode("utf-8")


class _CertificatePolicy:
    """sigstore's ``VerificationPolicy`` protocol for our gallery policy (regexes in full)."""

    def __init__(self, policy: VerificationPolicy) -> None:
        self._policy = policy
        self.signed_by: _SignedBy | None = None

    def verify(self, cert: x509.Certificate) -> None:
        signed_by = _certificate_identity(cert)
        self.signed_by = signed_by
        policy = self._policy
        if not policy.matches_issuer(signed_by.issuer):
            expected = policy.issuer if policy.issuer is not None else f"/{policy.issuer_regex}/"
            raise VerificationError(f"issuer {signed_by.issuer!r} is not the policy's {expected}")
        if not policy.matches_identity(signed_by.identity):
            expected = policy.identity if policy.identity is not None else f"/{policy.identity_regex}/"
            raise VerificationError(
                f"signed by {signed_by.identity} (issuer {signed_by.issuer}), policy expects {expected}"
            )


def _load_bundle(data: bytes) -> Bundle:
    try:
        return Bundle.from_json(data)
    except (InvalidBundle, ValueError, KeyError, TypeError) as exc:
        # The parser's message may quote the bytes, and those may be anything: never echo them.
        raise SignatureError(f"not a Sigstore bundle ({len(data)} bytes; {type(exc).__name__})") from exc


def verify_image_bundle(
    data: bytes,
    *,
    digest: str,
    policy: VerificationPolicy,
    root: LoadedRoot,
    covers: Callable[[str], bool],
    repositories: frozenset[str] | None = None,
) -> Evidence:
    """Verify one bundle for ``digest``; return the evidence or raise ``SignatureError``.

    ``covers(subject_digest)`` answers whether a signature over another digest still covers
    ``digest`` (a signed image index that lists the platform manifest). ``repositories``: where
    the signed subject names its repository, it must be one of these.
    """
    bundle = _load_bundle(data)
    certificate_policy = _CertificatePolicy(policy)
    try:
        payload_type, payload = root.verifier.verify_dsse(bundle, certificate_policy)
    except (VerificationError, SigstoreError) as exc:
        raise SignatureError(str(exc)) from exc
    if payload_type != _IN_TOTO:
        raise SignatureError(f"DSSE payload type is {payload_type!r}, expected {_IN_TOTO}")
    subjects = _cosign_subjects(payload)
    matching = [s for s in subjects if s.digest == digest or covers(s.digest)]
    if not matching:
        signed = ", ".join(s.digest for s in subjects) or "nothing"
        raise SignatureError(f"signature is over {signed}, not {digest}")
    if repositories is not None:
        _check_repository(matching, repositories)
    return _evidence(bundle, data, digest, policy, root, certificate_policy)


def _check_repository(subjects: list[_Subject], repositories: frozenset[str]) -> None:
    """cosign's bundles name no repository, but a producer that does (an in-toto subject ``name``)
    binds the signature to it: an image signed for one repository is not accepted for another."""
    for subject in subjects:
        if subject.name is None:
            continue
        named = _repository_name(subject.name)
        if named not in repositories:
            expected = " or ".join(sorted(repositories)) or "this entry"
            raise SignatureError(f"the signature is for {subject.name}, not for {expected}")


def _repository_name(name: str) -> str:
    try:
        return parse_reference(name).name
    except ReferenceParseError:
        return name


def verify_blob_bundle(
    data: bytes, *, sha256_hex: str, policy: VerificationPolicy, root: LoadedRoot
) -> Evidence:
    """Verify a ``cosign sign-blob --bundle`` signature of a file whose sha256 is ``sha256_hex``.

    Raises:
        SignatureError: not a bundle, not over that file, or outside the policy.
    """
    bundle = _load_bundle(data)
    certificate_policy = _CertificatePolicy(policy)
    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256_hex))
    try:
        root.verifier.verify_artifact(hashed, bundle, certificate_policy)
    except (VerificationError, SigstoreError) as exc:
        raise SignatureError(str(exc)) from exc
    return _evidence(bundle, data, f"sha256:{sha256_hex}", policy, root, certificate_policy)


def signed_sha256(data: bytes) -> str:
    """The sha256 (hex) a ``sign-blob`` bundle claims to sign; checked by ``verify_blob_bundle``.

    Raises:
        SignatureError: the bundle is not a message-signature bundle over a sha256.
    """
    try:
        digest = json.loads(data)["messageSignature"]["messageDigest"]
        if digest.get("algorithm") != "SHA2_256":
            raise ValueError(digest.get("algorithm"))
        raw = base64.b64decode(digest["digest"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError("the signature is not a cosign sign-blob bundle over a sha256") from exc
    if len(raw) != 32:
        raise SignatureError("the signature's message digest is not a sha256")
    return raw.hex()


def _evidence(
    bundle: Bundle,
    data: bytes,
    digest: str,
    policy: VerificationPolicy,
    root: LoadedRoot,
    certificate_policy: _CertificatePolicy,
) -> Evidence:
    """The evidence of a verified bundle, after the not_before check."""
    entry = bundle.log_entry._inner
    if entry.integrated_time is None:
        raise SignatureError("the log entry has no integrated time to check not_before against")
    integrated = datetime.fromtimestamp(int(entry.integrated_time), tz=UTC)
    if policy.not_before is not None and integrated < policy.not_before:
        raise SignatureError(
            f"signed at {integrated.isoformat()}, before not_before {policy.not_before.isoformat()}"
        )
    signed_by = certificate_policy.signed_by
    if signed_by is None:  # sigstore verified without asking our policy: never accept that
        raise SignatureError("the certificate was not checked against the gallery's policy")
    return Evidence(
        verified=True,
        digest=digest,
        identity=signed_by.identity,
        issuer=signed_by.issuer,
        integrated_time=integrated,
        log_index=int(entry.log_index),
        policy_fingerprint=policy_fingerprint(policy, root.digest),
        bundle=json.loads(data),
        bundle_digest=sha256_digest(data),
    )


@dataclass(frozen=True)
class _Subject:
    digest: str
    name: str | None


def _cosign_subjects(payload: bytes) -> list[_Subject]:
    # sigstore's own Statement model requires subject names, which cosign omits: parse it here.
    try:
        statement: Any = json.loads(payload)
    except ValueError as exc:
        raise SignatureError("signed payload is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") not in _STATEMENT_TYPES:
        raise SignatureError("signed payload is not an in-toto Statement")
    if statement.get("predicateType") != COSIGN_PREDICATE:
        raise SignatureError(
            f"predicateType is {statement.get('predicateType')!r}, expected {COSIGN_PREDICATE}"
        )
    subjects = statement.get("subject")
    found = []
    for subject in subjects if isinstance(subjects, list) else []:
        value = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if isinstance(value, str):
            name = subject.get("name")
            found.append(_Subject(f"sha256:{value}", name if isinstance(name, str) and name else None))
    return found


# -- discovery and caching ---------------------------------------------------------------------


class VerificationCache:
    """Successful verifications only, keyed by (digest, policy fingerprint), bounded, with a TTL.
    Concurrent verifications of one key run once (single flight); a failure never poisons it."""

    def __init__(
        self,
        *,
        max_entries: int = 1024,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, Evidence]] = OrderedDict()
        self._inflight: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock

    def get_or_verify(self, key: tuple[str, str], verify: Callable[[], Evidence]) -> Evidence:
        with self._lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit
            flight = self._inflight.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                hit = self._fresh(key)
                if hit is not None:
                    return hit
            try:
                evidence = verify()
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
            with self._lock:
                self._entries[key] = (self._clock(), evidence)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            return evidence

    def _fresh(self, key: tuple[str, str]) -> Evidence | None:
        item = self._entries.get(key)
        if item is None:
            return None
        stored_at, evidence = item
        if self._clock() - stored_at > self._ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return evidence


class SigstoreVerifier:
    """The verification stage: finds bundles for a pinned digest and verifies them."""

    def __init__(self, *, roots: TrustRoots | None = None, cache: VerificationCache | None = None) -> None:
        self._roots = roots or TrustRoots()
        self._cache = cache or VerificationCache()

    def verify_image(
        self,
        *,
        digest: str,
        sources: Sequence[SignatureSource],
        policy: VerificationPolicy,
        trusted_root: str,
        gallery: str,
        covers: Callable[[str], bool] = lambda _digest: False,
        repositories: frozenset[str] | None = None,
    ) -> Evidence:
        """Raises SignatureError (nothing verified), TrustRootError, SourceUnavailable."""
        root = self._roots.get(trusted_root)
        # The repositories are part of what was checked: a success for one entry is not one for another.
        scope = ",".join(sorted(repositories)) if repositories is not None else "*"
        key = (digest, policy_fingerprint(policy, root.digest) + "|" + scope)
        return self._cache.get_or_verify(
            key, lambda: self._verify(digest, sources, policy, root, gallery, covers, repositories)
        )

    def verify_blob(
        self, *, sha256_hex: str, bundle: bytes, policy: VerificationPolicy, trusted_root: str, gallery: str
    ) -> Evidence:
        """A ``sign-blob`` bundle (a tarball's, an index's) under a policy (cached like images)."""
        root = self._roots.get(trusted_root)
        key = (f"sha256:{sha256_hex}", policy_fingerprint(policy, root.digest))

        def verify() -> Evidence:
            try:
                return verify_blob_bundle(bundle, sha256_hex=sha256_hex, policy=policy, root=root)
            except SignatureError as exc:
                raise SignatureError(f"signature for gallery {gallery!r}: {exc.message}") from exc

        return self._cache.get_or_verify(key, verify)

    def _verify(
        self,
        digest: str,
        sources: Sequence[SignatureSource],
        policy: VerificationPolicy,
        root: LoadedRoot,
        gallery: str,
        covers: Callable[[str], bool],
        repositories: frozenset[str] | None,
    ) -> Evidence:
        reasons: list[str] = []
        legacy = False
        for source in sources:
            bundles = source.bundles(digest)
            for number, data in enumerate(bundles, 1):
                try:
                    return verify_image_bundle(
                        data,
                        digest=digest,
                        policy=policy,
                        root=root,
                        covers=covers,
                        repositories=repositories,
                    )
                except SignatureError as exc:
                    reasons.append(f"{source.describe()} bundle {number}: {exc.message}")
            if not bundles and source.has_legacy_signature(digest):
                legacy = True
        where = " or ".join(source.describe() for source in sources)
        if not reasons:
            if legacy:
                raise SignatureError(
                    f"only a legacy cosign .sig signature exists for {where}@{digest}; gallery {gallery!r} "
                    "needs a Sigstore bundle",
                    hint="re-sign with `cosign sign --new-bundle-format`",
                )
            raise SignatureError(
                f"no signature found for {where}@{digest} (gallery {gallery!r} requires one)",
                hint="sign the image with `cosign sign --new-bundle-format`, or check the gallery's uri",
            )
        raise SignatureError(f"no signature of {digest} satisfies gallery {gallery!r}: " + "; ".join(reasons))
