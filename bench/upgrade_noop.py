"""No-op `gallery upgrade --all` over 50 installed backends against a local registry.

    .venv/bin/python bench/upgrade_noop.py [--backends 50] [--rounds 5]

Starts Debian's docker-registry on 127.0.0.1, pushes one small image per backend (each its own
repository and tag), installs them all, then times `upgrade --all` when nothing changed (goal:
under 50 ms per backend). Peers measured in the same run, so the ratios survive noisy machines:

- floor: one bare httpx HEAD per backend on a kept-alive connection (what the check must send);
- the `gallery` CLI doing nothing (`gallery --version`), the start-up every command pays;
- `skopeo inspect --raw` per backend (a separate client doing the same lookup), when installed.

The in-process number is the library's cost; the CLI number adds interpreter start-up, config and
index loading. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

import httpx
from benchlib import GALLERY, local_registry, write_gallery
from registry_server import LAYER_GZIP

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.verify.signatures import SigstoreVerifier


def image_layer(number: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("run.sh", b"#!/bin/sh\necho bench\n"), ("id", str(number).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def best(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:8.1f} ms  (min {min(samples) * 1000:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    args = parser.parse_args()
    with local_registry() as (tmp, registry):
        entries = []
        for number in range(args.backends):
            repo = f"bench/b{number}"
            registry.push_image(repo, "latest", [(image_layer(number), LAYER_GZIP)])
            entries.append({"name": f"b{number}", "uri": f"{registry.host}/{repo}:latest"})
        config_path = write_gallery(tmp, registry, entries)
        config = load_config(config_path)

        def installer(client: httpx.Client) -> Installer:
            return Installer(config, client=client, verifier=SigstoreVerifier(),
                             detector=lambda: HostFacts("linux", "amd64"))  # fmt: skip

        with httpx.Client(trust_env=False) as client:
            batch = installer(client).install([e["name"] for e in entries])
            assert batch.exit_code == 0, [r.error for r in batch.results if r.error]

        library, cli, floor, startup, skopeo = [], [], [], [], []
        for _ in range(args.rounds):
            with httpx.Client(trust_env=False) as client:
                started = time.perf_counter()
                batch = installer(client).upgrade([], all_installed=True)
                library.append(time.perf_counter() - started)
            assert {r.status for r in batch.results} == {"unchanged"}, batch.results[0]

            started = time.perf_counter()
            subprocess.run([str(GALLERY), "--config", str(config_path), "upgrade", "--all"], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            cli.append(time.perf_counter() - started)

            started = time.perf_counter()
            subprocess.run([str(GALLERY), "--version"], check=True, stdout=subprocess.DEVNULL)
            startup.append(time.perf_counter() - started)

            with httpx.Client(trust_env=False) as client:
                started = time.perf_counter()
                for number in range(args.backends):
                    client.head(f"{registry.url}/v2/bench/b{number}/manifests/latest",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})  # fmt: skip
                floor.append(time.perf_counter() - started)

            if shutil.which("skopeo"):
                started = time.perf_counter()
                for number in range(args.backends):
                    subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                    f"docker://{registry.host}/bench/b{number}:latest"],
                                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
                skopeo.append(time.perf_counter() - started)

    n = args.backends
    out = sys.stdout
    out.write(f"no-op upgrade --all over {n} backends, {args.rounds} rounds\n")
    out.write(
        f"  library (in process)   {best(library)}   {statistics.median(library) / n * 1000:6.2f} ms/backend\n"
    )
    out.write(f"  gallery CLI            {best(cli)}   {statistics.median(cli) / n * 1000:6.2f} ms/backend\n")
    out.write(
        f"  floor: bare HEADs      {best(floor)}   {statistics.median(floor) / n * 1000:6.2f} ms/backend\n"
    )
    out.write(f"  gallery --version      {best(startup)}\n")
    if skopeo:
        out.write(
            f"  skopeo inspect --raw   {best(skopeo)}   {statistics.median(skopeo) / n * 1000:6.2f} ms/backend\n"
        )
    out.write(f"  ratio library / floor: {statistics.median(library) / statistics.median(floor):.1f}x\n")
    if skopeo:
        out.write(f"  ratio skopeo / CLI:    {statistics.median(skopeo) / statistics.median(cli):.1f}x\n")
    goal = statistics.median(library) / n < 0.050
    out.write(f"  goal (< 50 ms per backend in the library): {'met' if goal else 'NOT met'}\n")
    if args.json:
        summary = {
            "backends": n,
            "library_ms_per_backend": statistics.median(library) / n * 1000,
            "cli_ms_per_backend": statistics.median(cli) / n * 1000,
            "floor_ms_per_backend": statistics.median(floor) / n * 1000,
            "startup_ms": statistics.median(startup) * 1000,
        }
        out.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
