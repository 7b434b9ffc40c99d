"""The commands, by family: backends (install, upgrade, rollback, uninstall, export, verify),
fleet (lock, preload), maintenance (fsck, cache prune), info (list, show, doctor, schema) and
authoring (lint, checksum). Importing this package registers them on ``cli.app.app``."""

from . import authoring, backends, fleet, info, maintenance

__all__ = ["authoring", "backends", "fleet", "info", "maintenance"]
