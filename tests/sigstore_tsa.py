"""A test RFC 3161 timestamp authority for the local Sigstore instance (tests only, offline).

``TimestampAuthority.stamp(message)`` returns a DER ``TimeStampResp`` whose token is a CMS
SignedData over a ``TSTInfo`` with the sha256 of ``message``, signed by a TSA certificate
(critical EKU timeStamping) under a TSA root: what a Sigstore bundle carries in
``timestampVerificationData.rfc3161Timestamps`` and rfc3161-client verifies. The DER is
written by hand because no library here builds timestamp responses (RFC 3161 §2.4.2, RFC 5652).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
SIGNED_DATA = "1.2.840.113549.1.7.2"
TST_INFO = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
POLICY = "1.3.6.1.4.1.57264.2"


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _set(*items: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))  # DER: a SET OF is sorted by encoding


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(dotted: str) -> bytes:
    parts = [int(part) for part in dotted.split(".")]
    body = bytearray([parts[0] * 40 + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _octets(raw: bytes) -> bytes:
    return _tlv(0x04, raw)


def _time(moment: dt.datetime) -> bytes:
    return _tlv(0x18, moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ").encode())


def _algorithm(dotted: str) -> bytes:
    return _seq(_oid(dotted))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class TimestampAuthority:
    name: str = "gallery-test-tsa"
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    serial: int = 1
    root: x509.Certificate = field(init=False)
    certificate: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} root")])
        self.root = (
            x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + dt.timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )  # fmt: skip
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
            .issuer_name(root_name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + dt.timedelta(days=365 * 29))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )  # fmt: skip

    def trusted_root_entry(self) -> dict[str, Any]:
        """This TSA as a trusted root lists it (``timestampAuthorities``)."""
        return {
            "subject": {"organization": self.name, "commonName": self.name},
            "uri": f"https://{self.name}.test/api/v1/timestamp",
            "certChain": {"certificates": [{"rawBytes": base64.b64encode(_der(cert)).decode()}
                                           for cert in (self.certificate, self.root)]},
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        }  # fmt: skip

    def stamp(self, message: bytes, *, when: dt.datetime, embed_certificate: bool = True) -> bytes:
        """A DER TimeStampResp (status granted) over sha256(message) at ``when``."""
        self.serial += 1
        tst_info = _seq(
            _int(1),
            _oid(POLICY),
            _seq(_algorithm(SHA256), _octets(hashlib.sha256(message).digest())),
            _int(self.serial),
            _time(when),
        )
        signing_certificate = _seq(_seq(_seq(_octets(hashlib.sha256(_der(self.certificate)).digest()))))
        attributes = [
            _seq(_oid(CONTENT_TYPE), _set(_oid(TST_INFO))),
            _seq(_oid(MESSAGE_DIGEST), _set(_octets(hashlib.sha256(tst_info).digest()))),
            _seq(_oid(SIGNING_CERTIFICATE_V2), _set(signing_certificate)),
        ]
        signed_attributes = _set(*attributes)  # signed as a SET, carried as [0] IMPLICIT
        signature = self.key.sign(signed_attributes, ec.ECDSA(hashes.SHA256()))
        issuer_and_serial = _seq(self.certificate.issuer.public_bytes(), _int(self.certificate.serial_number))
        signer_info = _seq(
            _int(1),
            issuer_and_serial,
            _algorithm(SHA256),
            _tlv(0xA0, _strip(signed_attributes)),
            _algorithm(ECDSA_SHA256),
            _octets(signature),
        )
        certificates = [_tlv(0xA0, _der(self.certificate))] if embed_certificate else []
        signed_data = _seq(
            _int(3),
            _set(_algorithm(SHA256)),
            _seq(_oid(TST_INFO), _tlv(0xA0, _octets(tst_info))),
            *certificates,
            _set(signer_info),
        )
        token = _seq(_oid(SIGNED_DATA), _tlv(0xA0, signed_data))
        return _seq(_seq(_int(0)), token)


def _strip(encoded: bytes) -> bytes:
    """The content of a DER TLV (its tag and length removed)."""
    length = encoded[1]
    if length < 0x80:
        return encoded[2:]
    return encoded[2 + (length & 0x7F) :]
