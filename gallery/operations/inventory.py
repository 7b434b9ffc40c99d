"""What is installed, read from disk alone (no network, no verifier): ``list --installed
--offline`` must answer at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gallery.config.models import Config
from gallery.operations.localai_dirs import system_backends
from gallery.operations.store import BackendStore
from gallery.place.metadata import BackendMetadata
from gallery.results import UpdateCheck

__all__ = ["Inventory", "installed_summary", "inventory"]


@dataclass(frozen=True, slots=True)
class Inventory:
    backends: list[BackendMetadata]  # readable metadata, LocalAI's included
    sideloaded: list[str]  # run.sh without metadata: put there by hand
    system: list[str]  # LocalAI's read-only system backends


def inventory(config: Config) -> Inventory:
    store = BackendStore(config.backends_path)
    return Inventory(store.installed(), store.sideloaded(), system_backends(config.system_backends_path))


def installed_summary(backend: BackendMetadata, update: UpdateCheck | None) -> dict[str, Any]:
    """What ``list --installed`` and ``show`` say about an installed backend: its digest, who
    signed it and when, and (when checked) whether a newer signed build is on offer."""
    evidence = backend.verification
    verified = evidence is not None and evidence.verified
    return {
        "name": backend.name,
        "gallery": backend.gallery,
        "digest": backend.digest,
        "verified": verified,
        "signer": evidence.identity if evidence is not None and verified else None,
        "issuer": evidence.issuer if evidence is not None and verified else None,
        "signed_at": evidence.signing_time.isoformat()
        if evidence is not None and verified and evidence.signing_time
        else None,
        "installed_at": backend.installed_at.isoformat() if backend.installed_at else None,
        "meta_backend_for": backend.meta_backend_for,
        "update": None if update is None else update.to_json(),
    }
