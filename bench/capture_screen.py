"""Capture what `gallery install` shows on a real terminal, for docs/cli.md.

    .venv/bin/python bench/capture_screen.py

Runs `gallery install big small` on a pseudo-terminal (100 columns) against Debian's
docker-registry, through a proxy that slows blobs to ~0.8 MB/s, and prints two screens as a
terminal would show them: one while `big` downloads, and the last one. A small terminal model
applies the cursor movements rich's live display sends (carriage return, cursor up, erase line).
"""

from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import select
import struct
import subprocess
import termios
import time

import yaml
from benchlib import GALLERY, local_registry, write_gallery
from faulty_proxy import Faults, faulty_proxy
from registry_server import LAYER_GZIP
from tarbuild import file, gz, tar_bytes

_SEQUENCE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")


def screen(raw: bytes) -> str:
    """The lines a terminal shows after ``raw`` (only what rich's live display uses)."""
    lines, row, col = [""], 0, 0
    for match in _SEQUENCE.finditer(raw.decode("utf-8", "replace")):
        text = match.group(0)
        if text == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif text == "\r":
            col = 0
        elif match.group(2) == "A":
            row = max(0, row - int(match.group(1) or 1))
        elif match.group(2) == "K":
            lines[row] = lines[row][:col] if match.group(1) in ("", "0") else ""
        elif match.group(2) is None:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + text + line[col + len(text) :]
            col += len(text)
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def main() -> int:
    big = gz(tar_bytes([file(f"lib/part{i}.so", random.Random(i).randbytes(1_500_000)) for i in range(4)]))
    run_sh = gz(tar_bytes([file("run.sh", b"#!/bin/sh\necho hi\n", mode=0o755)]))
    small = gz(tar_bytes([file("run.sh", b"#!/bin/sh\necho small\n", mode=0o755)]))
    with local_registry() as (tmp, registry), faulty_proxy(registry.url, Faults(slow_blobs=0.02)) as proxy:
        registry.push_image("backends/big", "v1", [(run_sh, LAYER_GZIP), (big, LAYER_GZIP)])
        registry.push_image("backends/small", "v1", [(small, LAYER_GZIP)])
        host = proxy.removeprefix("http://")
        config = write_gallery(tmp, registry, [
            {"name": "big", "uri": f"{host}/backends/big:v1"},
            {"name": "small", "uri": f"{host}/backends/small:v1"},
        ])  # fmt: skip
        data = yaml.safe_load(config.read_text())
        data["insecure_registries"].append(host)
        config.write_text(yaml.safe_dump(data))
        master, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        argv = [str(GALLERY), "--config", "gallery.yaml", "install", "big", "small"]
        process = subprocess.Popen(
            argv, stdin=child, stdout=child, stderr=child, cwd=tmp, start_new_session=True
        )
        os.close(child)
        raw, during = b"", ""
        while process.poll() is None or select.select([master], [], [], 0.2)[0]:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    raw += os.read(master, 65536)
                except OSError:
                    break
            shown = screen(raw)
            if not during and re.search(r"big (downloading|extracting) .*[kM]B/s", shown) and "2.5" in shown:
                during = shown
            time.sleep(0.01)
        os.close(master)
    print("$ gallery install big small          # while big downloads\n" + during)
    print("\n$ gallery install big small          # at the end\n" + screen(raw))
    return process.returncode


if __name__ == "__main__":
    raise SystemExit(main())
