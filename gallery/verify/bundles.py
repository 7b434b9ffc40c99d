"""One Sigstore bundle checked offline against a trusted root, the gallery's policy and the
pinned digest: sigstore-python for the chain, the log and the signature; ours for the identity
(regexes matched in full), the cosign statement, the repository a subject names, not_before."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat import asn1
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, InvalidBundle
from sigstore_models.common.v1 import HashAlgorithm

from gallery.digests import sha256_digest
from gallery.errors import SignatureError
from gallery.oci.predicates import COSIGN_PREDICATE
from gallery.oci.references import ReferenceParseError, parse_reference
from gallery.verify.evidence import Evidence
from gallery.verify.policy import VerificationPolicy
from gallery.verify.roots import LoadedRoot, policy_fingerprint
from gallery.verify.timestamps import SignedTime, signing_time

# sigstore is imported at start-up (by this module and roots), although it is two fifths of the
# CLI's import time: its modules define pydantic models, and pydantic reads
# PYDANTIC_DISABLE_PLUGINS from the environment whenever a model class is created, so importing it
# lazily, during a command, would break the promise that the library reads no environment
# (tests/test_no_environment.py catches it).

__all__ = ["check_bundle", "signed_sha256", "verify_blob_bundle", "verify_image_bundle"]

_IN_TOTO = "application/vnd.in-toto+json"
_STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


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
    try:
        return str(asn1.decode_der(str, raw))
    except ValueError as exc:
        raise VerificationError("OIDC issuer extension is not a DER UTF8String") from exc


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
    except (InvalidBundle, SigstoreError, ValueError, KeyError, TypeError) as exc:
        # The parser's message may quote the bytes, and those may be anything: never echo them.
        # sigstore also verifies while it parses (a malformed timestamp raises VerificationError).
        raise SignatureError(f"not a Sigstore bundle ({len(data)} bytes; {type(exc).__name__})") from exc


def verify_image_bundle(
    data: bytes,
    *,
    digest: str,
    policy: VerificationPolicy,
    root: LoadedRoot,
    covers: Callable[[str], bool],
    repositories: frozenset[str] | None = None,
    predicate_type: str | None = COSIGN_PREDICATE,
) -> Evidence:
    """Verify one bundle for ``digest``; return the evidence or raise ``SignatureError``.

    ``covers(subject_digest)`` answers whether a signature over another digest still covers
    ``digest`` (a signed image index that lists the platform manifest). ``repositories``: where
    the signed subject names its repository, it must be one of these. ``predicate_type``: the
    in-toto predicate the statement must carry (cosign's signature); None accepts any (only
    ``verify-bundle`` asks for that, to check attestations).
    """
    bundle = _load_bundle(data)
    certificate_policy = _CertificatePolicy(policy)
    try:
        payload_type, payload = root.verifier.verify_dsse(bundle, certificate_policy)
    except (VerificationError, SigstoreError) as exc:
        raise SignatureError(str(exc)) from exc
    if payload_type != _IN_TOTO:
        raise SignatureError(f"DSSE payload type is {payload_type!r}, expected {_IN_TOTO}")
    subjects = _statement_subjects(payload, predicate_type)
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


def check_bundle(
    data: bytes,
    *,
    sha256_hex: str,
    policy: VerificationPolicy,
    root: LoadedRoot,
    predicate_type: str | None = COSIGN_PREDICATE,
) -> Evidence:
    """One bundle of either kind over the artifact whose sha256 is ``sha256_hex``: a DSSE
    statement (``cosign sign``, an attestation) must name it as a subject, a message signature
    (``cosign sign-blob``) must sign it. Raises SignatureError."""
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if isinstance(document, dict) and "dsseEnvelope" in document:
        return verify_image_bundle(
            data,
            digest=f"sha256:{sha256_hex}",
            policy=policy,
            root=root,
            covers=lambda _digest: False,
            predicate_type=predicate_type,
        )
    return verify_blob_bundle(data, sha256_hex=sha256_hex, policy=policy, root=root)


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
    # The bundle's own JSON (its format is public; sigstore's log-entry object keeps it private).
    document = json.loads(data)
    signed = signing_time(document, bundle.signature, root.timestamp_authorities)
    if signed is None:  # sigstore accepted a time we cannot confirm: never guess one
        raise SignatureError(
            "no trusted signing time: neither a log inclusion promise nor a verified timestamp"
        )
    if policy.not_before is not None and signed.time < policy.not_before:
        raise SignatureError(
            f"signed at {signed.time.isoformat()} ({_describe(signed)}), "
            f"before not_before {policy.not_before.isoformat()}"
        )
    entry = document["verificationMaterial"]["tlogEntries"][0]
    signed_by = certificate_policy.signed_by
    if signed_by is None:  # sigstore verified without asking our policy: never accept that
        raise SignatureError("the certificate was not checked against the gallery's policy")
    return Evidence(
        verified=True,
        digest=digest,
        identity=signed_by.identity,
        issuer=signed_by.issuer,
        integrated_time=signed.time if signed.source == "transparency-log" else None,
        signed_time=signed.time,
        time_source=signed.source,
        timestamp_authority=signed.authority,
        log_index=int(entry.get("logIndex", 0)),
        policy_fingerprint=policy_fingerprint(policy, root.digest),
        bundle=document,
        bundle_digest=sha256_digest(data),
    )


def _describe(signed: SignedTime) -> str:
    if signed.source == "timestamp-authority":
        return f"timestamp by {signed.authority}"
    return "transparency log time"


@dataclass(frozen=True)
class _Subject:
    digest: str
    name: str | None


def _statement_subjects(payload: bytes, predicate_type: str | None) -> list[_Subject]:
    # sigstore's own Statement model requires subject names, which cosign omits: parse it here.
    try:
        statement: Any = json.loads(payload)
    except ValueError as exc:
        raise SignatureError("signed payload is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") not in _STATEMENT_TYPES:
        raise SignatureError("signed payload is not an in-toto Statement")
    if predicate_type is not None and statement.get("predicateType") != predicate_type:
        found_type = statement.get("predicateType")
        raise SignatureError(f"predicateType is {found_type!r}, expected {predicate_type}")
    subjects = statement.get("subject")
    found = []
    for subject in subjects if isinstance(subjects, list) else []:
        value = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if isinstance(value, str):
            name = subject.get("name")
            found.append(_Subject(f"sha256:{value}", name if isinstance(name, str) and name else None))
    return found
