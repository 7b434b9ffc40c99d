"""The verifier: signature bundles of a pinned digest found and checked, offline, with a cache of
successes only (the verification stage).

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

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gallery.errors import SignatureError
from gallery.oci.predicates import COSIGN_PREDICATE
from gallery.verify.bundles import check_bundle, verify_blob_bundle, verify_image_bundle
from gallery.verify.evidence import Evidence, SignatureSource
from gallery.verify.policy import VerificationPolicy
from gallery.verify.roots import LoadedRoot, TrustRoots, policy_fingerprint

__all__ = ["SigstoreVerifier", "VerificationCache"]


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

    def check_bundle(
        self,
        bundle: bytes,
        *,
        sha256_hex: str,
        policy: VerificationPolicy,
        trusted_root: str,
        predicate_type: str | None = COSIGN_PREDICATE,
    ) -> Evidence:
        """One bundle of either kind over an artifact, checked offline and not cached (for
        ``gallery verify-bundle``). Raises SignatureError, TrustRootError."""
        root = self._roots.get(trusted_root)
        return check_bundle(
            bundle, sha256_hex=sha256_hex, policy=policy, root=root, predicate_type=predicate_type
        )

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
