"""Images as real producers make them: built with umoci, copied with skopeo, installed by us, and
compared with what ``umoci unpack`` itself extracts.

An image with two layers (files, an executable, a symlink, a hardlink, then a deletion, which
umoci writes as an OCI whiteout) reaches the installer five ways: the umoci layout directory, an
``oci-archive`` tar of it, and the local registry with an OCI manifest, a Docker v2s2 manifest,
and zstd layers. Each install must give exactly umoci's root filesystem. Skipped where umoci or
skopeo is missing (Debian packages; under CI=true they are required).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.oci.registry import RegistryClient, RetryPolicy
from gallery.operations.installer import Installer

from .fsfaults import as_installed, permissions_tree
from .registry_server import Registry


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is needed for the real-producer tests (Debian: {tool})")
        pytest.skip(f"{tool} not available")
    return found


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _umoci_image(work: Path, route: str) -> tuple[Path, Path]:
    """(layout, umoci's own unpacked rootfs) of a two-layer image tagged ``t``. Both layers name
    the route: skopeo's blob-info cache (system-wide for root) would otherwise hand one route the
    identical blobs another route pushed, in their other compression."""
    umoci = _need("umoci")
    layout, bundle = work / "layout", work / "bundle"
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    _run(umoci, "init", "--layout", str(layout))
    _run(umoci, "new", "--image", f"{layout}:t")
    _run(umoci, "unpack", *rootless, "--image", f"{layout}:t", str(bundle))
    app = bundle / "rootfs"
    (app / "lib").mkdir(parents=True)
    (app / "run.sh").write_text("#!/bin/sh\necho real producer\n")
    (app / "run.sh").chmod(0o755)
    (app / "lib" / "libx.so.1").write_bytes(b"\x7fELF library")
    (app / "lib" / "libx.so").symlink_to("libx.so.1")
    os.link(app / "lib" / "libx.so.1", app / "lib" / "libx-hard.so")
    (app / "gone.txt").write_text("deleted in the second layer")
    (app / "private").mkdir(mode=0o750)
    (app / "private" / "key").write_text("k")
    (app / "private" / "key").chmod(0o600)
    (app / "route").write_text(f"first layer of {route}")
    _run(umoci, "repack", "--refresh-bundle", "--image", f"{layout}:t", str(bundle))
    (app / "gone.txt").unlink()
    (app / "lib" / "libx-hard.so").unlink()
    (app / "route").write_text(f"second layer of {route}")
    _run(umoci, "repack", "--image", f"{layout}:t", str(bundle))
    check = work / "check"
    _run(umoci, "unpack", *rootless, "--image", f"{layout}:t", str(check))
    return layout, check / "rootfs"


def _install(tmp_path: Path, uri: str, registry: Registry) -> Path:
    (tmp_path / "index.yaml").write_text(yaml.safe_dump([{"name": "p", "uri": uri}]))
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "insecure_registries": [registry.host],
        "galleries": [{"name": "producers", "url": str(tmp_path / "index.yaml")}],
    }))  # fmt: skip
    config = load_config(tmp_path / "gallery.yaml")
    client = httpx.Client(trust_env=False, timeout=10)
    installer = Installer(
        config, client=client, verifier=None, detector=lambda: HostFacts("linux", "amd64"),
        registry=RegistryClient.from_config(config, client, retry=RetryPolicy(attempts=2, initial_wait=0)),
    )  # fmt: skip
    result = installer.install_one("p")
    assert result.error is None, result.error
    return tmp_path / "backends" / "p"


def _copy(source: str, destination: str, *options: str) -> None:
    skopeo = _need("skopeo")
    _run(skopeo, "copy", "--insecure-policy", "--dest-tls-verify=false", *options, source, destination)


@pytest.mark.parametrize(
    "route",
    ["layout", "oci-archive", "docker-archive", "registry oci", "registry docker v2s2", "registry zstd"],
)
def test_an_umoci_image_installs_exactly_as_umoci_unpacks_it(
    route: str, registry: Registry, tmp_path: Path
) -> None:
    layout, expected = _umoci_image(tmp_path / "umoci", route)
    repo = f"producers/{route.replace(' ', '-')}"
    if route == "layout":
        uri = f"ocifile://{layout}"
    elif route in ("oci-archive", "docker-archive"):
        # docker-archive: the docker-save format of Docker before 25 (manifest.json, layer tars,
        # no oci-layout), what LocalAI's ocifile:// reads.
        archive = tmp_path / "image.tar"
        _copy(f"oci:{layout}:t", f"{route}:{archive}:" + ("t" if route == "oci-archive" else "p:t"))
        uri = f"ocifile://{archive}"
    else:
        source = f"oci:{layout}:t"
        options = {"registry oci": [], "registry docker v2s2": ["--format", "v2s2"]}.get(route, [])
        if route == "registry zstd":
            # skopeo 1.9 keeps gzip blobs as they are: make a zstd layout first (from a
            # decompressed copy), then push that as it is
            _copy(source, f"dir:{tmp_path / 'plain'}", "--dest-decompress")
            _copy(f"dir:{tmp_path / 'plain'}", f"oci:{tmp_path / 'zstd'}:t", "--dest-compress",
                  "--dest-compress-format", "zstd")  # fmt: skip
            source = f"oci:{tmp_path / 'zstd'}:t"
        _copy(source, f"docker://{registry.host}/{repo}:t", *options)
        uri = f"{registry.host}/{repo}:t"
    installed = _install(tmp_path, uri, registry)
    ours = {path: entry for path, entry in permissions_tree(installed).items() if path != "metadata.json"}
    assert ours == as_installed(permissions_tree(expected))
    assert "gone.txt" not in ours and "lib/libx-hard.so" not in ours, "the second layer's whiteouts"
    assert ours["lib/libx.so"] == ("symlink", "libx.so.1") and ours["private/key"][1] == 0o400
    layers = json.loads((installed / "metadata.json").read_text())["layers"]
    assert len(layers) == 2
    if route == "registry zstd":
        assert all("zstd" in layer["media_type"] for layer in layers), layers
