"""Does starting each file's writeback as it is extracted help? An A/B on one image.

    .venv/bin/python bench/writeback_ab.py [--scale small|full|issue] [--rounds 4]

Fills the cache with bench/performance.py's many-files image from a local docker-registry, then
times `gallery install` into an empty backends directory (extraction, flush, swap: no network),
with each file's writeback started as it is closed (`filewriter.START_WRITEBACK`) and without,
in alternating order; the switch is set in that process only (gallery reads no switch for it).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import GALLERY, local_registry, write_gallery
from performance import build_images
from registry_server import LAYER_GZIP

_RUN = (
    "import sys, gallery.place.filewriter as filewriter\n"
    "filewriter.START_WRITEBACK = sys.argv[1] == 'on'\n"
    "sys.argv = ['gallery', *sys.argv[2:]]\n"
    "from cli.main import run\n"
    "run()\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="small")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    layers = build_images(args.scale)["many-files"]
    with local_registry() as (tmp, registry):
        registry.push_image("bench/m", "v1", [(data, LAYER_GZIP) for data in layers])
        config = write_gallery(tmp, registry, [{"name": "m", "uri": f"{registry.host}/bench/m:v1"}])
        subprocess.run([str(GALLERY), "--config", str(config), "-q", "install", "m"], check=True)
        times: dict[str, list[float]] = {"on": [], "off": []}
        for number in range(args.rounds):
            for mode in ("on", "off") if number % 2 == 0 else ("off", "on"):
                shutil.rmtree(tmp / "backends")
                os.sync()
                started = time.perf_counter()
                command = [sys.executable, "-c", _RUN, mode, "--config", str(config), "-q", "install", "m"]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                times[mode].append(time.perf_counter() - started)
    for mode, values in times.items():
        print(
            f"writeback {mode:3s}: median {statistics.median(values):.2f} s  {[round(v, 2) for v in values]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
