"""gallery: install backends from signed galleries, pinned by digest, verified, swapped atomically.

The public API is re-exported here; the CLI in ``cli/`` uses nothing else.
"""

from __future__ import annotations

__version__ = "0.1.0"

from gallery.config.models import Config, GalleryConfig, load_config
from gallery.errors import (
    AmbiguousName,
    BackendNotFound,
    ConfigError,
    GalleryError,
    IndexFormatError,
    IndexUnavailable,
    IntegrityError,
    OperationalError,
    UsageError,
)

__all__ = [
    "AmbiguousName",
    "BackendNotFound",
    "Config",
    "ConfigError",
    "GalleryConfig",
    "GalleryError",
    "IndexFormatError",
    "IndexUnavailable",
    "IntegrityError",
    "OperationalError",
    "UsageError",
    "__version__",
    "load_config",
]
