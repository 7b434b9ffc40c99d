"""Which config file a command uses (edge module: it only looks whether files exist).

``--config FILE`` when given (it must exist), else the first of ``./gallery.yaml`` and
``/etc/gallery/gallery.yaml`` that exists; ``doctor`` shows the order and the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gallery.errors import ConfigError

__all__ = ["CONFIG_SEARCH", "ConfigLocation", "locate_config"]

CONFIG_SEARCH: tuple[Path, ...] = (Path("gallery.yaml"), Path("/etc/gallery/gallery.yaml"))


@dataclass(frozen=True, slots=True)
class ConfigLocation:
    path: Path
    how: str  # "--config", or the search position that found it
    searched: tuple[Path, ...]  # the search order (empty with --config)

    def describe(self) -> str:
        """``/etc/gallery/gallery.yaml (found by search: ./gallery.yaml, /etc/gallery/gallery.yaml)``."""
        if not self.searched:
            return f"{self.path} (from --config)"
        order = ", ".join(_shown(p) for p in self.searched)
        return f"{_shown(self.path)} (search order: --config, {order})"


def locate_config(explicit: Path | None, *, search: tuple[Path, ...] = CONFIG_SEARCH) -> ConfigLocation:
    """The config to load.

    Raises:
        ConfigError: no ``--config`` and none of ``search`` exists (the hint says how to make one).
    """
    if explicit is not None:
        return ConfigLocation(explicit, "--config", ())
    for path in search:
        if path.is_file():
            return ConfigLocation(path, "search", search)
    raise ConfigError(
        "no config file: looked for " + ", then ".join(_shown(p) for p in search),
        hint="write one with 'gallery init' (or 'gallery init --localai'), or pass --config FILE",
    )


def _shown(path: Path) -> str:
    return str(path) if path.is_absolute() else f"./{path}"
