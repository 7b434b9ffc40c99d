"""Peak memory of `gallery install` for a 3-layer image of about 200 MB from a local registry.

    .venv/bin/python bench/install_memory.py [--mb-per-layer 67] [--rounds 3]

Starts Debian's docker-registry on 127.0.0.1, pushes an image of three gzip layers of
incompressible data (so the compressed size is the real size), then runs `gallery install` in a
child process per round (cold cache, empty backends dir) and reports the child's peak RSS next to
two peers measured in the same run: the CLI doing nothing (`gallery --version`, the floor every
command pays) and `curl | tar -xz` over the same blobs. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import LAYER_GZIP, running_registry  # noqa: E402

GALLERY = ROOT / ".venv" / "bin" / "gallery"


def layer(megabytes: int, number: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if number == 0:
            run = b"#!/bin/sh\necho bench\n"
            info = tarfile.TarInfo("run.sh")
            info.size, info.mode = len(run), 0o755
            archive.addfile(info, io.BytesIO(run))
        for part in range(4):
            data = os.urandom(megabytes * 1024 * 1024 // 4)
            info = tarfile.TarInfo(f"layer{number}/blob{part}.bin")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1)


def measure(command: list[str], **kwargs: object) -> tuple[float, float]:
    """Run ``command`` in a fresh intermediate process so its peak RSS is its own."""
    probe = (
        "import resource,subprocess,sys,time;"
        "t=time.monotonic();subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL);"
        "print(time.monotonic()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True, **kwargs
    )  # type: ignore[call-overload]
    seconds, megabytes = output.stdout.split()
    return float(seconds), float(megabytes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb-per-layer", type=int, default=67)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    try:
        with running_registry(work / "registry") as registry:
            layers = [layer(args.mb_per_layer, n) for n in range(3)]
            total = sum(len(data) for data in layers)
            digest, manifest = registry.push_image("bench/big", "v1", [(data, LAYER_GZIP) for data in layers])
            blob_urls = [f"{registry.url}/v2/bench/big/blobs/{d['digest']}" for d in manifest["layers"]]  # type: ignore[index]
            (work / "index.yaml").write_text(f'- {{name: big, uri: "{registry.host}/bench/big:v1"}}\n')
            results: dict[str, list[tuple[float, float]]] = {
                "gallery install": [],
                "gallery --version": [],
                "curl | tar -xz": [],
            }
            for round_ in range(args.rounds):
                root = work / f"round{round_}"
                root.mkdir()
                (root / "gallery.yaml").write_text(
                    "format_version: 1\nbackends_path: ./backends\ncache_path: ./cache\n"
                    f"insecure_registries: ['{registry.host}']\n"
                    f"galleries: [{{name: bench, url: {work / 'index.yaml'}}}]\n"
                )
                results["gallery --version"].append(measure([str(GALLERY), "--version"]))
                results["gallery install"].append(
                    measure([str(GALLERY), "--config", str(root / "gallery.yaml"), "install", "big"])
                )
                peer = root / "peer"
                peer.mkdir()
                script = " && ".join(f"curl -sf {url} | tar -xzf - -C {peer}" for url in blob_urls)
                results["curl | tar -xz"].append(measure(["bash", "-c", script]))
                shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sys.stdout.write(f"image: 3 gzip layers, {total / 1e6:.0f} MB compressed, digest {digest}\n")
    sys.stdout.write(f"{'command':<20} {'median s':>9} {'peak RSS MB':>12}\n")
    for name, samples in results.items():
        seconds = statistics.median(s for s, _ in samples)
        rss = max(m for _, m in samples)
        sys.stdout.write(f"{name:<20} {seconds:>9.2f} {rss:>12.1f}\n")
    floor = max(m for _, m in results["gallery --version"])
    peak = max(m for _, m in results["gallery install"])
    sys.stdout.write(
        f"install peak RSS over the CLI's own floor: {peak - floor:.1f} MB (goal: peak under 150 MB)\n"
    )


if __name__ == "__main__":
    main()
