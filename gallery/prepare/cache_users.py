"""Which backends directories use a blob cache (edge module).

Several configs may share one ``cache_path`` (workers on one node, a test and a production
config). ``cache prune`` and ``fsck`` must then keep the blobs *any* of them references, not only
the running config's: every command that places a backend records its ``backends_path`` under
``cache_path/users/`` (once; a small JSON file named by the path's hash), and the referenced set
is the union over the recorded directories that still exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

__all__ = ["cache_users", "register_user"]

_MAX_USER_FILE = 8192
_MAX_USERS = 1000


def register_user(cache_state: Path, backends_path: Path) -> None:
    """Record that ``backends_path`` uses the cache at ``cache_state`` (``cache_path``)."""
    backends = backends_path.resolve()
    users = cache_state / "users"
    path = users / f"{hashlib.sha256(str(backends).encode()).hexdigest()[:32]}.json"
    if path.is_file():
        return
    with contextlib.suppress(OSError):  # a read-only cache still installs; prune is then cautious
        users.mkdir(parents=True, exist_ok=True)
        temporary = users / f".{path.name}.{os.getpid()}"
        temporary.write_text(json.dumps({"backends_path": str(backends)}))
        temporary.replace(path)


def cache_users(cache_state: Path) -> list[Path]:
    """The recorded backends directories that still exist (unreadable records are skipped)."""
    users = cache_state / "users"
    if not users.is_dir():
        return []
    found: list[Path] = []
    for record in sorted(users.glob("*.json"))[:_MAX_USERS]:
        try:
            with record.open("rb") as handle:
                backends = Path(json.loads(handle.read(_MAX_USER_FILE))["backends_path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if backends.is_absolute() and backends.is_dir():
            found.append(backends)
    return found
