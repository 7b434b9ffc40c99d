"""A local test Sigstore instance: CA, CT log, transparency log and trusted root, all offline.

It produces cosign-format bundles (v0.3) that sigstore-python verifies for real:
- ``sign_image(digest)``: a DSSE envelope over an in-toto statement whose subject is the digest
  (``cosign sign --new-bundle-format``), logged as a ``dsse/0.0.1`` entry;
- ``sign_blob(data)``: a ``messageSignature`` (``cosign sign-blob --bundle``), ``hashedrekord/0.0.1``.
Each leaf certificate carries an SCT over its precertificate, each log entry an inclusion promise
(SET) and an inclusion proof in a one-leaf tree with a signed checkpoint.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sigstore_tsa import TimestampAuthority

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DEFAULT_IDENTITY = "https://github.com/org/repo/.github/workflows/build.yml@refs/heads/main"
EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: ec.EllipticCurvePrivateKey) -> bytes:
    return hashlib.sha256(spki(key)).digest()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _der_octet_string(raw: bytes) -> bytes:
    if len(raw) < 128:
        return bytes([0x04, len(raw)]) + raw
    length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + raw


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def cosign_statement(
    digest: str, *, predicate_type: str = COSIGN_PREDICATE, subject_name: str | None = None
) -> bytes:
    """cosign's statement (a subject without a name); ``subject_name`` gives the subject one, as
    other producers (GitHub's attest action) do."""
    algorithm, _, hex_ = digest.partition(":")
    subject: dict[str, Any] = {"digest": {algorithm: hex_}}
    if subject_name is not None:
        subject["name"] = subject_name
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [subject],
        "predicateType": predicate_type,
        "predicate": {},
    }
    return json.dumps(statement, separators=(",", ":")).encode()


@dataclass(frozen=True)
class LeafShape:
    """How a test leaf certificate departs from Fulcio's: more SANs, another v1 issuer
    extension ("" = the issuer, None = omitted), raw v2 issuer bytes (b"" = omitted)."""

    extra_identities: tuple[str, ...] = ()
    issuer_v1: str | None = ""
    issuer_v2_der: bytes | None = None


@dataclass
class SigstoreInstance:
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    tsa: TimestampAuthority = field(default_factory=TimestampAuthority)
    name: str = "gallery-test"
    log_index: int = 1000
    ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} CA")])  # fmt: skip
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH)
            .not_valid_after(EPOCH + dt.timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())
        )

    # -- the trusted root -------------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": b64(key_id(key))},
            }  # fmt: skip

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, f"https://rekor.{self.name}.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": self.name, "commonName": f"{self.name} CA"},
                    "uri": f"https://fulcio.{self.name}.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(self.ca_cert.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                }
            ],
            "ctlogs": [log(self.ct_key, f"https://ctfe.{self.name}.test")],
            "timestampAuthorities": [self.tsa.trusted_root_entry()],
        }

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=1))
        return path

    # -- certificates -----------------------------------------------------------------------

    def leaf(
        self, *, identity: str, issuer: str, when: dt.datetime, shape: LeafShape | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A Fulcio-like leaf; ``shape`` bends it (more SANs, other issuer extensions)."""
        shape = shape or LeafShape()
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(name) if "://" in name else x509.RFC822Name(name)
            for name in (identity, *shape.extra_identities)
        ]
        issuer_v1 = issuer if shape.issuer_v1 == "" else shape.issuer_v1
        issuer_v2 = _der_utf8(issuer) if shape.issuer_v2_der is None else shape.issuer_v2_der
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(when - dt.timedelta(minutes=1))
            .not_valid_after(when + dt.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        )
        if issuer_v1 is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ISSUER_V1, issuer_v1.encode()), critical=False
            )
        if issuer_v2:
            builder = builder.add_extension(x509.UnrecognizedExtension(ISSUER_V2, issuer_v2), critical=False)
        # The SCT signs the precertificate TBS: the certificate without its SCT extension. Sign once
        # with a placeholder in the SCT's (last) position to obtain exactly those bytes.
        placeholder = x509.UnrecognizedExtension(SCT_LIST, _der_octet_string(struct.pack("!H", 0)))
        precert = builder.add_extension(placeholder, critical=False).sign(self.ca_key, hashes.SHA256())
        sct = self._sct(precert.tbs_precertificate_bytes, when)
        cert = builder.add_extension(
            x509.UnrecognizedExtension(SCT_LIST, _der_octet_string(sct)), critical=False
        )
        return key, cert.sign(self.ca_key, hashes.SHA256())

    def _sct(self, tbs: bytes, when: dt.datetime) -> bytes:
        timestamp = int(when.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(self.ca_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()  # fmt: skip
        signed_entry = issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        digitally_signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + signed_entry + struct.pack("!H", 0)
        signature = sign(self.ct_key, digitally_signed)
        sct = (
            bytes([0]) + key_id(self.ct_key) + struct.pack("!Q", timestamp) + struct.pack("!H", 0)
            + bytes([4, 3]) + struct.pack("!H", len(signature)) + signature
        )  # fmt: skip
        return struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct

    # -- transparency log -------------------------------------------------------------------

    def _tlog_entry(self, body: dict[str, Any], *, kind: str, when: dt.datetime) -> dict[str, Any]:
        canonical = rfc8785.dumps(body)
        integrated = int(when.timestamp())
        self.log_index += 1
        promise = {"body": b64(canonical), "integratedTime": integrated, "logID": key_id(self.rekor_key).hex(),
                   "logIndex": self.log_index}  # fmt: skip
        root = hashlib.sha256(b"\x00" + canonical).digest()  # a one-leaf tree: the root is the leaf hash
        note = f"{self.name} log\n1\n{b64(root)}\n"
        checkpoint = (
            note
            + "\n"
            + f"\u2014 {self.name} {b64(key_id(self.rekor_key)[:4] + sign(self.rekor_key, note.encode()))}\n"
        )
        return {
            "logIndex": str(self.log_index),
            "logId": {"keyId": b64(key_id(self.rekor_key))},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": b64(sign(self.rekor_key, rfc8785.dumps(promise)))},
            "inclusionProof": {"logIndex": "0", "rootHash": b64(root), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": b64(canonical),
        }  # fmt: skip

    def _tlog_entry_v2(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Rekor v2 entry: no integrated time, no inclusion promise; a checkpointed proof only."""
        canonical = rfc8785.dumps(body)
        self.log_index += 1
        root = hashlib.sha256(b"\x00" + canonical).digest()
        note = f"{self.name} log v2\n1\n{b64(root)}\n"
        signature = b64(key_id(self.rekor_key)[:4] + sign(self.rekor_key, note.encode()))
        return {
            "logIndex": str(self.log_index),
            "logId": {"keyId": b64(key_id(self.rekor_key))},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
            "inclusionProof": {"logIndex": "0", "rootHash": b64(root), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": note + "\n" + f"\u2014 {self.name} {signature}\n"}},
            "canonicalizedBody": b64(canonical),
        }  # fmt: skip

    @staticmethod
    def _hashedrekord_v2(digest: bytes, signature: bytes, cert: x509.Certificate) -> dict[str, Any]:
        """A hashedrekord 0.0.2 body (Rekor v2 logs DSSE this way too: the digest of the PAE)."""
        verifier = {"x509Certificate": {"rawBytes": b64(cert.public_bytes(serialization.Encoding.DER))},
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256"}  # fmt: skip
        return {
            "kind": "hashedrekord",
            "apiVersion": "0.0.2",
            "spec": {"hashedRekordV002": {"data": {"algorithm": "SHA2_256", "digest": b64(digest)},
                                          "signature": {"content": b64(signature), "verifier": verifier}}},
        }  # fmt: skip

    def _material(
        self,
        cert: x509.Certificate,
        entry: dict[str, Any],
        signature: bytes,
        *,
        when: dt.datetime,
        timestamp: bool,
    ) -> dict[str, Any]:
        material: dict[str, Any] = {
            "certificate": {"rawBytes": b64(cert.public_bytes(serialization.Encoding.DER))},
            "tlogEntries": [entry],
        }
        if timestamp:
            stamp = self.tsa.stamp(signature, when=when)
            material["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": b64(stamp)}]}
        return material

    # -- signing ----------------------------------------------------------------------------

    def sign_dsse(
        self,
        payload: bytes,
        *,
        payload_type: str = "application/vnd.in-toto+json",
        identity: str = DEFAULT_IDENTITY,
        issuer: str = GITHUB_ISSUER,
        when: dt.datetime | None = None,
        rekor_v2: bool = False,
        timestamp: bool | None = None,
        shape: LeafShape | None = None,
    ) -> bytes:
        """``rekor_v2``: logged as Rekor v2 does (hashedrekord 0.0.2 over the PAE, no log time);
        ``timestamp``: with an RFC 3161 timestamp of the signature (default: with Rekor v2)."""
        when = when or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        key, cert = self.leaf(identity=identity, issuer=issuer, when=when, shape=shape)
        signature = sign(key, pae(payload_type, payload))
        envelope = {
            "payload": b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64(signature)}],
        }
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256",
                                 "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": b64(signature), "verifier": b64(pem)}],
            },
        }  # fmt: skip
        if rekor_v2:
            digest = hashlib.sha256(pae(payload_type, payload)).digest()
            entry = self._tlog_entry_v2(self._hashedrekord_v2(digest, signature, cert))
        else:
            entry = self._tlog_entry(body, kind="dsse", when=when)
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": self._material(
                cert, entry, signature, when=when, timestamp=rekor_v2 if timestamp is None else timestamp
            ),
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle).encode()

    def sign_image(
        self,
        digest: str,
        *,
        predicate_type: str = COSIGN_PREDICATE,
        subject_name: str | None = None,
        **kwargs: Any,
    ) -> bytes:
        """A cosign new-bundle-format signature of an image digest."""
        statement = cosign_statement(digest, predicate_type=predicate_type, subject_name=subject_name)
        return self.sign_dsse(statement, **kwargs)

    def sign_blob(
        self,
        data: bytes,
        *,
        identity: str = DEFAULT_IDENTITY,
        issuer: str = GITHUB_ISSUER,
        when: dt.datetime | None = None,
        rekor_v2: bool = False,
        timestamp: bool | None = None,
        shape: LeafShape | None = None,
    ) -> bytes:
        when = when or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        key, cert = self.leaf(identity=identity, issuer=issuer, when=when, shape=shape)
        signature = sign(key, data)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}},
                "signature": {"content": b64(signature), "publicKey": {"content": b64(pem)}},
            },
        }
        if rekor_v2:
            entry = self._tlog_entry_v2(self._hashedrekord_v2(hashlib.sha256(data).digest(), signature, cert))
        else:
            entry = self._tlog_entry(body, kind="hashedrekord", when=when)
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": self._material(
                cert, entry, signature, when=when, timestamp=rekor_v2 if timestamp is None else timestamp
            ),
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(data).digest())},
                "signature": b64(signature),
            },
        }
        return json.dumps(bundle).encode()
