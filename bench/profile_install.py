"""Where a cold `gallery install` of the many-files image spends its time, profiled by pyinstrument.

    .venv/bin/pip install pyinstrument
    .venv/bin/python bench/profile_install.py [--scale small|full|issue] [--output FILE]

Builds the same many-files image as bench/performance.py, pushes it to Debian's docker-registry
on 127.0.0.1, then runs the real CLI (`gallery install many-files`, cold cache, empty backends
dir) under pyinstrument (wall-clock sampling, so time spent in system calls such as open() is
charged to the Python line that made them). The text report goes to stdout or --output; the
summary in docs/performance.md quotes one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from benchlib import GALLERY, local_registry, write_gallery
from performance import build_images
from registry_server import LAYER_GZIP


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="issue")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    pyinstrument = Path(sys.executable).parent / "pyinstrument"
    if not pyinstrument.exists():
        sys.stderr.write("pyinstrument is not installed: .venv/bin/pip install pyinstrument\n")
        return 1
    layers = build_images(args.scale)["many-files"]
    with local_registry() as (tmp, registry):
        registry.push_image("bench/many-files", "v1", [(data, LAYER_GZIP) for data in layers])
        config = write_gallery(
            tmp, registry, [{"name": "many-files", "uri": f"{registry.host}/bench/many-files:v1"}]
        )
        for directory in ("backends", "cache"):
            shutil.rmtree(tmp / directory, ignore_errors=True)
        report = tmp / "profile.txt"
        subprocess.run(
            [str(pyinstrument), "--renderer", "text", "--outfile", str(report),
             str(GALLERY), "--config", str(config), "install", "many-files"],
            check=True,
        )  # fmt: skip
        text = report.read_text()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
