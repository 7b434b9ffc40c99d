"""Does flushing each file while the extraction goes on help? An A/B/C on one image.

    .venv/bin/python bench/writeback_ab.py [--scale small|full|issue] [--rounds 4]
                                           [--modes off,start,fdatasync]

Fills the cache with bench/performance.py's many-files image from a local docker-registry, then
times `gallery install` into an empty backends directory (extraction, flush, swap: no network)
with each of `filewriter.WRITEBACK`'s modes (gallery.place.writeback: off; `start`, write-
initiation by sync_file_range; `fdatasync` on a pool), in an order rotated every round; the
switch is set in that process only (gallery reads no switch for it). Nothing is removed while
it measures (benchlib.Trash). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchlib import GALLERY, Trash, local_registry, write_gallery
from performance import build_images
from registry_server import LAYER_GZIP

_RUN = (
    "import sys, gallery.place.filewriter as filewriter\n"
    "filewriter.WRITEBACK = sys.argv[1]\n"
    "sys.argv = ['gallery', *sys.argv[2:]]\n"
    "from cli.main import run\n"
    "run()\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="small")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--modes", default="off,start,fdatasync")
    args = parser.parse_args()
    layers = build_images(args.scale)["many-files"]
    with local_registry() as (tmp, registry):
        registry.push_image("bench/m", "v1", [(data, LAYER_GZIP) for data in layers])
        config = write_gallery(tmp, registry, [{"name": "m", "uri": f"{registry.host}/bench/m:v1"}])
        subprocess.run([str(GALLERY), "--config", str(config), "-q", "install", "m"], check=True)
        modes = args.modes.split(",")
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        trash = Trash(tmp / "trash")
        for number in range(args.rounds):
            for mode in modes[number % len(modes) :] + modes[: number % len(modes)]:
                trash.discard(tmp / "backends")
                os.sync()
                started = time.perf_counter()
                command = [sys.executable, "-c", _RUN, mode, "--config", str(config), "-q", "install", "m"]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                times[mode].append(time.perf_counter() - started)
    for mode, values in times.items():
        print(
            f"writeback {mode:9s}: median {statistics.median(values):.2f} s  {[round(v, 2) for v in values]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
