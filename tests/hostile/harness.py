"""One project per hostile case: roots, an installed backend that must survive, and the checks.

Every case installs through the real ``Installer`` (the same path as ``gallery install``) and must
end with its expected error type and exit code, and with:

- ``backends/`` as it was (the backend installed before the case is byte-identical, no leftovers
  in staging or trash; only a lock file may be new);
- nothing changed anywhere else under the project except the blob cache, and nothing at all
  outside it (an ``outside/victim`` file sits next to the roots as bait, ``/tmp`` is checked for
  the absolute-path escape).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gallery.catalog.capability import HostFacts
from gallery.config.models import Config, load_config
from gallery.errors import GalleryError, InstallFailed
from gallery.net.client import make_http_client
from gallery.oci.registry import RegistryClient, RetryPolicy
from gallery.operations.installer import Installer, InstallResult
from gallery.place.fsops import FsOps
from gallery.verify.signatures import SigstoreVerifier

from ..conftest import REPO
from ..registry_server import LAYER_GZIP
from ..tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

ABSOLUTE_ESCAPE = Path("/tmp/gallery-hostile-escaped")
FAST = RetryPolicy(attempts=2, initial_wait=0)

# Small enough that bombs and floods are refused in well under a second.
LIMITS = {"max_extract_bytes": 64 * 1024 * 1024, "max_files": 2000, "max_path_length": 1024}


@dataclass(frozen=True)
class Case:
    """A hostile input and what must come of it. ``expect`` None: it installs (``check`` says how)."""

    category: str
    name: str
    expect: type[GalleryError] | None
    exit_code: int
    reason: str = ""  # a fragment the error message must contain, where the type alone is vague
    policy: bool = False  # the gallery has a verification policy (signature cases)
    setup: Callable[..., Any] = field(repr=False, compare=False, default=lambda *a: None)
    check: Callable[..., None] | None = field(repr=False, compare=False, default=None)

    @property
    def id(self) -> str:
        return f"{self.category}:{self.name}"


def tree_state(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path under ``root`` with its type, mode and content hash (symlinks by target)."""
    state: dict[str, str] = {}
    if not root.exists():
        return state
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if any(relative == s or relative.startswith(s + "/") for s in skip):
            continue
        info = path.lstat()
        if path.is_symlink():
            state[relative] = f"link {path.readlink()}"
        elif path.is_file():
            state[relative] = f"{info.st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        else:
            state[relative] = f"{info.st_mode:o}"
    return state


class Project:
    """Roots under ``root``: backends/, cache/, layouts/, index.yaml, gallery.yaml, outside/."""

    def __init__(
        self, root: Path, *, config: dict[str, Any] | None = None, gallery: dict[str, Any] | None = None
    ) -> None:
        self.root = root
        self.outside = root / "outside"
        self.outside.mkdir(parents=True)
        (self.outside / "victim").write_text("untouched")
        self.entries: list[dict[str, Any]] = []
        self.extra_config = config or {}
        self.gallery_fields = gallery or {}
        self.raw_index: bytes | None = None  # written instead of the entries (hostile index cases)
        self._client: httpx.Client | None = None

    # -- content ---------------------------------------------------------------------------

    def layout(self, name: str, layers: list[tuple[bytes, str]]) -> str:
        """An OCI layout entry ``name`` with these layers; returns its uri."""
        write_layout(self.root / "layouts" / name, layers)
        uri = f"ocifile://layouts/{name}"
        self.entries.append({"name": name, "uri": uri})
        return uri

    def entry(self, **fields: Any) -> None:
        self.entries.append(fields)

    def config(self) -> Config:
        index = self.raw_index if self.raw_index is not None else json.dumps(self.entries).encode()
        (self.root / "index.yaml").write_bytes(index)
        gallery: dict[str, Any] = {"name": "hostile", "url": "index.yaml", **self.gallery_fields}
        document = {
            "format_version": 1,
            "backends_path": "backends",
            "cache_path": "cache",
            "capability": "default",
            "platform": "linux/amd64",
            "limits": LIMITS,
            "galleries": [gallery],
            **self.extra_config,
        }
        path = self.root / "gallery.yaml"
        path.write_text(json.dumps(document))
        return load_config(path)

    # -- running ---------------------------------------------------------------------------

    def install(self, name: str, *, fs: FsOps | None = None, upgrade: bool = False) -> InstallResult:
        config = self.config()
        client = make_http_client(config)
        installer = Installer(
            config,
            client=client,
            verifier=SigstoreVerifier(),
            detector=lambda: HostFacts("linux", "amd64"),
            registry=RegistryClient.from_config(config, client, retry=FAST),
            fs=fs,
        )
        try:
            return installer.upgrade_one(name) if upgrade else installer.install_one(name)
        finally:
            client.close()

    def install_keeper(self, sign: Callable[[str], bytes] | None = None) -> None:
        """A good backend installed before the case: the case must leave it byte-identical."""
        layer = gz(tar_bytes([file("run.sh", b"#!/bin/sh\necho keep\n", 0o755)]))
        write_layout(self.root / "layouts" / "keeper", [(layer, LAYER_GZIP)], sign=sign)
        self.entries.append({"name": "keeper", "uri": "ocifile://layouts/keeper"})
        result = self.install("keeper")
        assert result.error is None, result.error

    def outside_roots(self) -> dict[str, str]:
        return tree_state(self.root, skip=("cache", "backends"))

    def backends(self) -> dict[str, str]:
        return tree_state(self.root / "backends", skip=(".gallery/locks",))


def error_types(result: InstallResult) -> list[type[GalleryError]]:
    """The result's error and, for an install that tried several candidates, each one's own."""
    if result.error is None:
        return []
    found: list[type[GalleryError]] = [type(result.error)]
    if isinstance(result.error, InstallFailed):
        found += [type(cause) for cause in result.error.causes]
    return found


def assert_outcome(case: Case, result: InstallResult) -> None:
    message = result.error.message if result.error else "installed"
    if case.expect is None:
        assert result.error is None, f"{case.id}: expected to install, got {message}"
    else:
        types = error_types(result)
        assert any(issubclass(t, case.expect) for t in types), (
            f"{case.id}: expected {case.expect.__name__}, got {[t.__name__ for t in types]}: {message}"
        )
    assert case.reason in message, f"{case.id}: {case.reason!r} not in {message}"
    assert result.exit_code == case.exit_code, (
        f"{case.id}: exit {result.exit_code}, not {case.exit_code}: {message}"
    )
