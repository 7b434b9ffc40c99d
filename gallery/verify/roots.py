"""Sigstore trusted roots, loaded once per process and offline (``production`` from the sigstore
package, never through its TUF updater), and the policy fingerprint that keys verification."""

from __future__ import annotations

import importlib.resources
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from pydantic import ValidationError
from sigstore.errors import Error as SigstoreError
from sigstore.models import TrustedRoot
from sigstore.verify import Verifier as SigstoreLibraryVerifier
from sigstore_models.trustroot import v1 as trustroot_v1

from gallery.digests import sha256_digest
from gallery.errors import OperationalError
from gallery.files import read_at_most
from gallery.validation import describe_validation
from gallery.verify.policy import VerificationPolicy
from gallery.verify.timestamps import TimestampAuthority, timestamp_authorities

__all__ = ["LoadedRoot", "TrustRootError", "TrustRoots", "policy_fingerprint"]

_PRODUCTION_ROOT = ("_store", "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json")
_MAX_ROOT_BYTES = 4 * 1024 * 1024


class TrustRootError(OperationalError):
    """The configured trusted root cannot be loaded (not cached: the next call tries again)."""


@dataclass(frozen=True)
class LoadedRoot:
    spec: str
    digest: str
    verifier: SigstoreLibraryVerifier
    timestamp_authorities: tuple[TimestampAuthority, ...] = ()


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
                parsed = trustroot_v1.TrustedRoot.from_json(data)
                verifier = SigstoreLibraryVerifier(trusted_root=TrustedRoot(parsed))
                authorities = timestamp_authorities(parsed)
            except (SigstoreError, ValueError, KeyError, TypeError) as exc:
                detail = describe_validation(exc, limit=3) if isinstance(exc, ValidationError) else str(exc)
                raise TrustRootError(
                    f"trusted root {spec!r} is not a usable Sigstore trusted_root.json: {detail}",
                    hint="use the trusted_root.json your Sigstore instance publishes, unedited",
                ) from exc
            loaded = LoadedRoot(spec, sha256_digest(data), verifier, authorities)
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
