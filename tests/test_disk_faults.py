"""Disk full and read-only directories, on pyfakefs (the swap uses two renames there: pyfakefs
cannot see renameat2, which tests/test_swap.py covers on the real disk).

The install runs from an OCI layout inside the fake filesystem. The disk size is swept from too
small for the layer to large enough, so ENOSPC lands in the cache, in extraction, in metadata.json
and in the journal: every run either installs completely or leaves the installed state as it was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from pyfakefs.fake_filesystem_unittest import Patcher
from pyfakefs.helpers import set_uid

from gallery.catalog.capability import HostFacts
from gallery.config.models import Config, load_config
from gallery.operations.installer import Installer
from gallery.place.fsops import FsOps
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ROOT = Path("/project")


def _project(version: str, files: int) -> None:
    members = [file("run.sh", b"#!/bin/sh\n", mode=0o755)]
    members += [file(f"lib/{i}.txt", f"{version}{i}".encode() * 40) for i in range(files)]
    write_layout(ROOT / "layouts" / version, [(gz(tar_bytes(members)), LAYER)])
    (ROOT / "index.yaml").write_text(json.dumps([{"name": "b", "uri": f"ocifile://layouts/{version}"}]))


def _config(tmp_path: Path) -> Config:
    """Loaded from the real disk before pyfakefs starts (pydantic's path validation does not mix
    with pyfakefs); its roots point into the fake filesystem."""
    path = tmp_path / "gallery.yaml"
    path.write_text(json.dumps({
        "format_version": 1, "backends_path": f"{ROOT}/backends", "cache_path": f"{ROOT}/cache",
        "capability": "default", "galleries": [{"name": "g", "url": f"{ROOT}/index.yaml"}],
    }))  # fmt: skip
    return load_config(path)


def _install(config: Config, client: httpx.Client, upgrade: bool = False) -> tuple[int, str]:
    installer = Installer(config, client=client, verifier=SigstoreVerifier(),
                          detector=lambda: HostFacts("linux", "amd64"), fs=FsOps(exchange_supported=False))  # fmt: skip
    result = installer.upgrade_one("b") if upgrade else installer.install_one("b")
    return result.exit_code, result.error.message if result.error else ""


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def _leftovers() -> list[Path]:
    state = ROOT / "backends" / ".gallery"
    return [p for d in ("staging", "trash", "journal") if (state / d).is_dir() for p in (state / d).iterdir()]


def test_disk_full_at_every_stage_of_an_upgrade(tmp_path: Path) -> None:
    config = _config(tmp_path)
    client = httpx.Client(trust_env=False)  # before pyfakefs: it loads CA files from the real disk
    messages: list[str] = []
    with Patcher() as patcher:
        fake = patcher.fs
        assert fake is not None
        _project("v1", 120)
        assert _install(config, client)[0] == 0
        old = _snapshot(ROOT / "backends" / "b")
        _project("v2", 120)
        upgraded = False
        for extra in range(0, 400_000, 4_000):
            # ``extra`` bytes free; what a failed run kept (a finished cache blob, a partial to
            # resume, lock files) is not counted against the next run.
            fake.set_disk_usage(fake.get_disk_usage().used + extra)
            code, message = _install(config, client, upgrade=True)
            live = _snapshot(ROOT / "backends" / "b")
            if code == 0:
                upgraded = True
                assert live["lib/0.txt"].startswith(b"v20")
                break
            assert code == 1 and "No space left" in message, message
            assert live == old, f"with {extra} bytes free the live backend changed"
            assert _leftovers() == []
            messages.append(message)
        assert upgraded, "a large enough disk upgrades"
    # ENOSPC was hit in different places: blob cache, extraction, metadata.json.
    assert any("metadata.json" in m for m in messages), messages[-3:]
    assert any("staging" in m for m in messages)
    assert len(set(messages)) >= 3


def test_read_only_backends_directory_is_a_clear_error(tmp_path: Path) -> None:
    config = _config(tmp_path)
    client = httpx.Client(trust_env=False)
    with Patcher() as patcher:
        fake = patcher.fs
        assert fake is not None
        _project("v1", 3)
        (ROOT / "backends").mkdir()
        (ROOT / "backends").chmod(0o555)
        set_uid(1000)  # root ignores permission bits; an operator's service account does not
        try:
            code, message = _install(config, client)
        finally:
            set_uid(0)
    assert code == 1
    assert "backends" in message and "Permission denied" in message
