"""gallery: install backends from signed galleries, pinned by digest, verified, swapped atomically.

The public API is re-exported here (``__all__``); the CLI in ``cli/`` imports nothing else. The
stages live in subpackages: ``config``, ``catalog`` (indexes, resolution, candidates), ``oci``
(references, documents, layouts, the registry client), ``net`` (HTTP clients), ``verify`` (the
trust plan, policies, Sigstore checks), ``prepare`` (pin, fetch into the blob cache), ``place``
(extract, metadata, the journaled swap) and ``operations`` (the installer, the trust gate and
every command built on them).
"""

from __future__ import annotations

__version__ = "0.1.0"

from gallery.catalog.capability import HostFacts, detect_host_facts, host_detector
from gallery.config.models import Config, GalleryConfig, Limits, load_config
from gallery.config.reference_doc import config_reference
from gallery.errors import (
    AmbiguousName,
    BackendNotFound,
    ConfigError,
    GalleryError,
    IndexFormatError,
    IndexUnavailable,
    IntegrityError,
    InternalError,
    OperationalError,
    UsageError,
)
from gallery.net.client import make_http_client
from gallery.oci.models import COSIGN_PREDICATE
from gallery.operations.bundle_check import verify_bundle_file
from gallery.operations.checksum import ChecksumReport, checksum_index
from gallery.operations.fleet import LockOutcome, lock_fleet, preload
from gallery.operations.fsck import FsckOutcome, FsckReport, PruneResult, prune_cache
from gallery.operations.installer import Installer
from gallery.operations.lint import LintReport, lint_files
from gallery.operations.lockfile import LockFile, read_lock, write_lock
from gallery.operations.maintenance import verify_backends
from gallery.operations.queries import (
    DoctorReport,
    ListResult,
    Notice,
    ShowResult,
    describe_backend,
    installed_summary,
    list_entries,
    run_doctor,
)
from gallery.place.metadata import BackendMetadata
from gallery.place.swap import RecoveryReport, recover_pending
from gallery.progress import NoProgress, ProgressReporter
from gallery.results import BatchResult, InstallResult, UpdateCheck
from gallery.schemas import SchemaName, json_schema
from gallery.suggest import closest
from gallery.verify.evidence import Evidence
from gallery.verify.policy import VerificationPolicy
from gallery.verify.signatures import SigstoreVerifier

__all__ = [
    "COSIGN_PREDICATE",
    "AmbiguousName",
    "BackendMetadata",
    "BackendNotFound",
    "BatchResult",
    "ChecksumReport",
    "Config",
    "ConfigError",
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
    "host_detector",
    "installed_summary",
    "json_schema",
    "lint_files",
    "list_entries",
    "load_config",
    "lock_fleet",
    "make_http_client",
    "preload",
    "prune_cache",
    "read_lock",
    "recover_pending",
    "run_doctor",
    "verify_backends",
    "verify_bundle_file",
    "write_lock",
]
