"""When a verified bundle was signed: the earliest time a trusted source vouches for, and which.

Two sources exist. A Rekor v1 entry carries an integrated time, bound by the log's inclusion
promise (SET). A Rekor v2 entry has none: the time comes from RFC 3161 signed timestamps over
the bundle's signature, issued by a timestamp authority (TSA) the trusted root lists. sigstore-
python checks both while it verifies the bundle, but does not say which times it accepted; this
module re-verifies each timestamp against the trusted root's TSAs (with rfc3161-client, as
sigstore-python does) so that the time we compare ``not_before`` with is one a trusted source
signed, never one the bundle merely states. The earliest verified time wins: if any trusted
source saw the signature before ``not_before``, it existed before then.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography import x509
from rfc3161_client import VerificationError as TimestampVerificationError
from rfc3161_client import VerifierBuilder, decode_timestamp_response
from sigstore_models.trustroot import v1 as trustroot_v1

__all__ = ["SignedTime", "TimestampAuthority", "signing_time", "timestamp_authorities"]

TimeSource = Literal["transparency-log", "timestamp-authority"]


@dataclass(frozen=True)
class SignedTime:
    time: datetime
    source: TimeSource
    authority: str | None = None  # the TSA's name, for a timestamp-authority time


@dataclass(frozen=True)
class TimestampAuthority:
    name: str
    chain: tuple[x509.Certificate, ...]  # signing certificate first, root last
    start: datetime | None
    end: datetime | None

    def vouches_for(self, response: Any, message: bytes) -> bool:
        if len(self.chain) < 2:  # a signing certificate and a root at least
            return False
        builder = VerifierBuilder().tsa_certificate(self.chain[0]).add_root_certificate(self.chain[-1])
        for certificate in self.chain[1:-1]:
            builder = builder.add_intermediate_certificate(certificate)
        try:
            builder.build().verify_message(response, message)
        except (TimestampVerificationError, ValueError):
            return False
        generated: datetime = response.tst_info.gen_time
        return (self.start is None or self.start <= generated) and (self.end is None or generated <= self.end)


def timestamp_authorities(root: trustroot_v1.TrustedRoot) -> tuple[TimestampAuthority, ...]:
    """The TSAs a trusted root lists (its ``timestampAuthorities``)."""
    found = []
    for authority in root.timestamp_authorities or []:
        chain = tuple(
            x509.load_der_x509_certificate(certificate.raw_bytes)
            for certificate in authority.cert_chain.certificates
        )
        subject = authority.subject
        name = (subject.common_name or subject.organization) if subject is not None else None
        valid = authority.valid_for
        found.append(
            TimestampAuthority(
                name=name or authority.uri or "timestamp authority",
                chain=chain,
                start=_aware(valid.start) if valid is not None else None,
                end=_aware(valid.end) if valid is not None and valid.end is not None else None,
            )
        )
    return tuple(found)


def signing_time(
    bundle: dict[str, Any], signature: bytes, authorities: tuple[TimestampAuthority, ...]
) -> SignedTime | None:
    """The earliest verified signing time of a bundle sigstore-python has already verified, or
    None when no trusted source vouches for one. ``signature``: the bundle's signature bytes."""
    material = bundle.get("verificationMaterial") or {}
    times: list[SignedTime] = []
    for stamp in (material.get("timestampVerificationData") or {}).get("rfc3161Timestamps") or []:
        verified = _verified_timestamp(stamp, signature, authorities)
        if verified is not None:
            times.append(verified)
    for entry in material.get("tlogEntries") or []:
        # Only a time the log signed (the inclusion promise) counts; Rekor v2 entries have none.
        integrated = entry.get("integratedTime")
        if entry.get("inclusionPromise") and integrated not in (None, "", "0", 0):
            times.append(SignedTime(datetime.fromtimestamp(int(integrated), tz=UTC), "transparency-log"))
    return min(times, key=lambda signed: signed.time) if times else None


def _verified_timestamp(
    stamp: Any, signature: bytes, authorities: tuple[TimestampAuthority, ...]
) -> SignedTime | None:
    try:
        response = decode_timestamp_response(base64.b64decode(stamp["signedTimestamp"], validate=True))
    except (ValueError, KeyError, TypeError):
        return None
    for authority in authorities:
        if authority.vouches_for(response, signature):
            return SignedTime(_aware(response.tst_info.gen_time), "timestamp-authority", authority.name)
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
