"""What one run builds once and every operation of it shares: clients, caches, the verifier, the
catalog, the capability choice, the backend store and the swapper."""

from __future__ import annotations

import threading

import httpx

from gallery.catalog.capability import CapabilityDetector
from gallery.catalog.galleries import Catalog, load_catalog
from gallery.catalog.resolve import CapabilitySelector
from gallery.config.models import Config, GalleryConfig
from gallery.oci.registry import RegistryClient
from gallery.operations.store import BackendStore, file_store_of
from gallery.place.extract import ExtractLimits
from gallery.place.fsops import FsOps
from gallery.place.swap import Step, Swapper
from gallery.prepare.blobcache import BlobCache
from gallery.progress import NoProgress, ProgressReporter
from gallery.verify.evidence import Verifier

__all__ = ["Session"]


class Session:
    """One run's shared parts. ``fs`` and ``step`` are test seams of the swap (fault injection,
    crash points); ``registry`` and ``catalog`` may be given ready-made.

    Safe to share between threads (``preload --jobs``): the catalog and the capability choice are
    made once under a lock, the registry client's tokens and unreachable hosts are locked, the
    verifier's cache is single-flight, and blobs and backends have their own file locks."""

    def __init__(
        self,
        config: Config,
        *,
        client: httpx.Client,
        verifier: Verifier,
        detector: CapabilityDetector,
        progress: ProgressReporter | None = None,
        registry: RegistryClient | None = None,
        catalog: Catalog | None = None,
        fs: FsOps | None = None,
        step: Step | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.verifier = verifier
        self.detector = detector
        self.selector = CapabilitySelector(config.capability, detector, min_gpu_memory=config.min_gpu_memory)
        self.progress: ProgressReporter = progress or NoProgress()
        self.registry = registry or RegistryClient.from_config(config, client)
        self.cache = BlobCache(config.cache_path / "blobs", lock_timeout=config.timeouts.lock)
        self.store = BackendStore(config.backends_path)
        self.file_store = file_store_of(config)
        self.swapper = Swapper(
            config.backends_path, keep_generations=config.keep_generations, fs=fs, step=step
        )
        self.limits = ExtractLimits(
            max_bytes=config.limits.max_extract_bytes,
            max_files=config.limits.max_files,
            max_path_length=config.limits.max_path_length,
            refuse_escaping_symlinks=config.refuse_escaping_symlinks,
            max_depth=config.limits.max_depth,
            link_fallback=config.link_fallback,
        )
        self._catalog = catalog
        self._lock = threading.Lock()

    @property
    def catalog(self) -> Catalog:
        """Every gallery's index, loaded (and verified) once, on first use."""
        with self._lock:
            if self._catalog is None:
                self._catalog = load_catalog(self.config, client=self.client, verifier=self.verifier)
            return self._catalog

    def trusted_root(self, gallery: GalleryConfig) -> str:
        return gallery.trusted_root or self.config.trusted_root
