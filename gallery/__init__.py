"""gallery: install backends from signed galleries, pinned by digest, verified, swapped atomically.

The public API is re-exported here (``__all__``); the CLI in ``cli/`` imports nothing else. The
stages live in subpackages: ``config``, ``catalog`` (indexes, resolution, candidates), ``oci``
(references, documents, layouts, the registry client), ``net`` (HTTP clients), ``verify`` (the
trust plan, policies, Sigstore checks), ``prepare`` (pin, fetch into the blob cache), ``place``
(extract, metadata, the journaled swap) and ``operations`` (the installer, the trust gate and
every command built on them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gallery.catalog.capability import HostFacts, detect_host_facts, host_detector
    from gallery.config.discovery import CONFIG_SEARCH, ConfigLocation, locate_config
    from gallery.config.models import Config, GalleryConfig, Limits, load_config
    from gallery.config.reference_doc import config_reference
    from gallery.config.starter import starter_config, write_starter
    from gallery.errors import (
        AmbiguousName,
        BackendNotFound,
        ConfigError,
        GalleryError,
        IndexFormatError,
        IndexUnavailable,
        IntegrityError,
        InternalError,
        Interrupted,
        OperationalError,
        UsageError,
    )
    from gallery.net.client import make_http_client
    from gallery.oci.predicates import COSIGN_PREDICATE
    from gallery.operations.bundle_check import verify_bundle_file
    from gallery.operations.checksum import ChecksumReport, checksum_index
    from gallery.operations.disk_usage import BackendUsage, DiskUsage, disk_usage
    from gallery.operations.fleet import LockOutcome, lock_fleet, preload
    from gallery.operations.fsck import FsckOutcome, FsckReport
    from gallery.operations.installer import Installer
    from gallery.operations.inventory import Inventory, installed_summary, inventory
    from gallery.operations.lint import LintReport, lint_files
    from gallery.operations.listing import ListResult, Notice, list_entries
    from gallery.operations.lockfile import LockFile, read_lock, write_lock
    from gallery.operations.maintenance import verify_backends
    from gallery.operations.prune import PruneResult, prune_cache
    from gallery.operations.queries import DoctorReport, ShowResult, describe_backend, run_doctor
    from gallery.place.interrupts import interrupts_latched, raise_if_interrupted
    from gallery.place.metadata import BackendMetadata
    from gallery.place.swap import RecoveryReport, recover_pending
    from gallery.progress import NoProgress, ProgressReporter
    from gallery.results import BatchResult, InstallResult, UpdateCheck
    from gallery.schemas import SchemaName, json_schema
    from gallery.suggest import closest
    from gallery.units import human_bytes, human_seconds
    from gallery.verify.evidence import Evidence
    from gallery.verify.policy import VerificationPolicy
    from gallery.verify.signatures import SigstoreVerifier

__all__ = [
    "CONFIG_SEARCH",
    "COSIGN_PREDICATE",
    "AmbiguousName",
    "BackendMetadata",
    "BackendNotFound",
    "BackendUsage",
    "BatchResult",
    "ChecksumReport",
    "Config",
    "ConfigError",
    "ConfigLocation",
    "DiskUsage",
    "DoctorReport",
    "Evidence",
    "FsckOutcome",
    "FsckReport",
    "GalleryConfig",
    "GalleryError",
    "HostFacts",
    "IndexFormatError",
    "IndexUnavailable",
    "InstallResult",
    "Installer",
    "IntegrityError",
    "InternalError",
    "Interrupted",
    "Inventory",
    "Limits",
    "LintReport",
    "ListResult",
    "LockFile",
    "LockOutcome",
    "NoProgress",
    "Notice",
    "OperationalError",
    "ProgressReporter",
    "PruneResult",
    "RecoveryReport",
    "SchemaName",
    "ShowResult",
    "SigstoreVerifier",
    "UpdateCheck",
    "UsageError",
    "VerificationPolicy",
    "__version__",
    "checksum_index",
    "closest",
    "config_reference",
    "describe_backend",
    "detect_host_facts",
    "disk_usage",
    "host_detector",
    "human_bytes",
    "human_seconds",
    "installed_summary",
    "interrupts_latched",
    "inventory",
    "json_schema",
    "lint_files",
    "list_entries",
    "load_config",
    "locate_config",
    "lock_fleet",
    "make_http_client",
    "preload",
    "prune_cache",
    "raise_if_interrupted",
    "read_lock",
    "recover_pending",
    "run_doctor",
    "starter_config",
    "verify_backends",
    "verify_bundle_file",
    "write_lock",
    "write_starter",
]

# Each public name and the module defining it: ``gallery --version`` or ``--help`` must not pay for
# pydantic, httpx and sigstore (about a second); a name's module loads on its first use.
_EXPORTS: dict[str, str] = {
    "HostFacts": "gallery.catalog.capability",
    "detect_host_facts": "gallery.catalog.capability",
    "host_detector": "gallery.catalog.capability",
    "CONFIG_SEARCH": "gallery.config.discovery",
    "ConfigLocation": "gallery.config.discovery",
    "locate_config": "gallery.config.discovery",
    "Config": "gallery.config.models",
    "GalleryConfig": "gallery.config.models",
    "Limits": "gallery.config.models",
    "load_config": "gallery.config.models",
    "config_reference": "gallery.config.reference_doc",
    "starter_config": "gallery.config.starter",
    "write_starter": "gallery.config.starter",
    "AmbiguousName": "gallery.errors",
    "BackendNotFound": "gallery.errors",
    "ConfigError": "gallery.errors",
    "GalleryError": "gallery.errors",
    "IndexFormatError": "gallery.errors",
    "IndexUnavailable": "gallery.errors",
    "IntegrityError": "gallery.errors",
    "InternalError": "gallery.errors",
    "Interrupted": "gallery.errors",
    "OperationalError": "gallery.errors",
    "UsageError": "gallery.errors",
    "make_http_client": "gallery.net.client",
    "COSIGN_PREDICATE": "gallery.oci.predicates",
    "verify_bundle_file": "gallery.operations.bundle_check",
    "ChecksumReport": "gallery.operations.checksum",
    "checksum_index": "gallery.operations.checksum",
    "LockOutcome": "gallery.operations.fleet",
    "lock_fleet": "gallery.operations.fleet",
    "preload": "gallery.operations.fleet",
    "FsckOutcome": "gallery.operations.fsck",
    "FsckReport": "gallery.operations.fsck",
    "PruneResult": "gallery.operations.prune",
    "prune_cache": "gallery.operations.prune",
    "Installer": "gallery.operations.installer",
    "Inventory": "gallery.operations.inventory",
    "BackendUsage": "gallery.operations.disk_usage",
    "DiskUsage": "gallery.operations.disk_usage",
    "disk_usage": "gallery.operations.disk_usage",
    "inventory": "gallery.operations.inventory",
    "LintReport": "gallery.operations.lint",
    "lint_files": "gallery.operations.lint",
    "LockFile": "gallery.operations.lockfile",
    "read_lock": "gallery.operations.lockfile",
    "write_lock": "gallery.operations.lockfile",
    "verify_backends": "gallery.operations.maintenance",
    "DoctorReport": "gallery.operations.queries",
    "ListResult": "gallery.operations.listing",
    "Notice": "gallery.operations.listing",
    "ShowResult": "gallery.operations.queries",
    "describe_backend": "gallery.operations.queries",
    "installed_summary": "gallery.operations.inventory",
    "list_entries": "gallery.operations.listing",
    "run_doctor": "gallery.operations.queries",
    "BackendMetadata": "gallery.place.metadata",
    "RecoveryReport": "gallery.place.swap",
    "recover_pending": "gallery.place.swap",
    "interrupts_latched": "gallery.place.interrupts",
    "raise_if_interrupted": "gallery.place.interrupts",
    "NoProgress": "gallery.progress",
    "ProgressReporter": "gallery.progress",
    "BatchResult": "gallery.results",
    "InstallResult": "gallery.results",
    "UpdateCheck": "gallery.results",
    "SchemaName": "gallery.schemas",
    "json_schema": "gallery.schemas",
    "closest": "gallery.suggest",
    "human_bytes": "gallery.units",
    "human_seconds": "gallery.units",
    "Evidence": "gallery.verify.evidence",
    "VerificationPolicy": "gallery.verify.policy",
    "SigstoreVerifier": "gallery.verify.signatures",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gallery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
