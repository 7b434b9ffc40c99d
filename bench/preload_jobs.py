"""`gallery preload --lock` of 20 backends with --jobs 1, 2 and 4 from a local registry.

    .venv/bin/python bench/preload_jobs.py [--backends 20] [--mb 4] [--rounds 3]

Starts Debian's docker-registry on 127.0.0.1, pushes one image per backend (a shared layer plus
an own layer of incompressible data), locks them all, then times preload into an empty backends
directory and an empty cache (cold) for each --jobs value, and once more with the cache and the
backends in place (warm: must fetch zero bytes). Peer measured in the same run: `curl` fetching
the same blobs one after another (the network floor for --jobs 1). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

from benchlib import GALLERY, local_registry, write_gallery
from registry_server import LAYER_GZIP, digest_of


def tar_layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1)


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=20)
    parser.add_argument("--mb", type=int, default=4, help="size of each backend's own layer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    args = parser.parse_args()
    with local_registry() as (tmp, registry):
        shared = tar_layer({"run.sh": b"#!/bin/sh\necho bench\n", "lib/common.so": os.urandom(1024 * 1024)})
        entries, blobs = [], [shared]
        for number in range(args.backends):
            own = tar_layer({f"lib/b{number}.so": os.urandom(args.mb * 1024 * 1024)})
            blobs.append(own)
            registry.push_image(f"bench/b{number}", "latest", [(shared, LAYER_GZIP), (own, LAYER_GZIP)])
            entries.append({"name": f"b{number}", "uri": f"{registry.host}/bench/b{number}:latest"})
        config = write_gallery(tmp, registry, entries)
        lock = tmp / "gallery.lock"
        base = [str(GALLERY), "--config", str(config)]
        subprocess.run([*base, "lock", *[e["name"] for e in entries], "-o", str(lock)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

        cold: dict[int, list[float]] = {1: [], 2: [], 4: []}
        warm: list[float] = []
        floor: list[float] = []
        sequential: list[float] = []
        for _ in range(args.rounds):
            for jobs in cold:
                for directory in ("backends", "cache"):
                    shutil.rmtree(tmp / directory, ignore_errors=True)
                cold[jobs].append(run([*base, "preload", "--lock", str(lock), "--jobs", str(jobs)]))
            for directory in ("backends", "cache"):
                shutil.rmtree(tmp / directory, ignore_errors=True)
            sequential.append(run([*base, "install", *[e["name"] for e in entries]]))
            started = time.perf_counter()
            output = subprocess.run(
                [*base, "preload", "--lock", str(lock), "--jobs", "4", "--json"],
                check=True,
                capture_output=True,
                text=True,
            )  # fmt: skip  (stderr: warnings)
            warm.append(time.perf_counter() - started)
            summary = json.loads(output.stdout)
            assert summary["bytes_fetched"] == 0 and summary["failed"] == 0, summary
            repos = [("bench/b0", shared)] + [(f"bench/b{n}", blobs[n + 1]) for n in range(args.backends)]
            floor.append(run(["curl", "-sf", *(arg for repo, data in repos for arg in
                              ("-o", "/dev/null", f"{registry.url}/v2/{repo}/blobs/{digest_of(data)}"))]))  # fmt: skip

    total_mb = (len(blobs) - 1) * args.mb + 1
    out = sys.stdout
    out.write(
        f"preload --lock of {args.backends} backends ({total_mb} MB of layers), {args.rounds} rounds, medians\n"
    )
    base_time = statistics.median(cold[1])
    for jobs, samples in cold.items():
        median = statistics.median(samples)
        out.write(
            f"  cold --jobs {jobs}   {median:6.2f} s   speed-up vs --jobs 1: {base_time / median:4.2f}x\n"
        )
    out.write(
        f"  plain sequential `gallery install` of the same {args.backends}: {statistics.median(sequential):6.2f} s\n"
    )
    out.write(f"  warm --jobs 4   {statistics.median(warm):6.2f} s   (0 bytes fetched, checked)\n")
    out.write(f"  network floor: curl fetching the same blobs one by one (no extraction, no checks): "
              f"{statistics.median(floor):5.2f} s\n")  # fmt: skip
    if args.json:
        summary = {
            "backends": args.backends,
            "layer_mb": total_mb,
            "cold_seconds": {str(jobs): statistics.median(samples) for jobs, samples in cold.items()},
            "warm_seconds": statistics.median(warm),
            "warm_bytes_fetched": 0,  # asserted on every warm run above
            "curl_floor_seconds": statistics.median(floor),
            "sequential_install_seconds": statistics.median(sequential),
        }
        out.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
