"""The file store (issue 22), measured against gallery with the store off, in the same run.

    .venv/bin/python bench/filestore.py [--rounds 3] [--scale small|full|issue] [--no-write]

1. The issue's scenario, from OCI layouts: three single-layer images built as LocalAI builds its
   CUDA backends (FROM scratch + COPY), sharing 60 of their 62 files (60 x 1 MiB "libraries"):
   install A v1, upgrade to A v2 (``keep_generations: 1`` keeps v1), install B. Reported:
   ``du -sb backends_path`` (a hard-linked file counted once) against one copy, and the bytes the
   upgrade process wrote (``wchar`` of /proc/self/io: every write system call, metadata,
   journal and store included).
2. From Debian's docker-registry on 127.0.0.1, the many-files image of bench/performance.py, in
   rounds (the order of store and no store alternated): a warm reinstall (cache full, backend
   uninstalled) with the store — whose files, and the layer records, are then all there — and
   without, then a cold install (empty cache and backends) with the store and without. Each
   round starts by uninstalling and waiting out ext4's recently-freed window (bench/benchlib.py:
   six minutes), and removes nothing while it measures.

Medians and every round go to docs/performance.json (``file_store``), a table to
docs/performance.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml
from benchlib import GALLERY, ROOT, Trash, after_removal, local_registry, replace_marked, write_gallery
from performance import build_images, measure
from registry_server import LAYER_GZIP

sys.path.insert(0, str(ROOT / "galleries" / "demo"))
from make_layouts import write_layout

DOCS = ROOT / "docs"
MIB = 1024 * 1024
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _image(shared: list[bytes], own: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        members = [("run.sh", b"#!/bin/sh\nexec ./backend\n", 0o755)]
        members += [(f"lib/libcuda-{n}.so", data, 0o755) for n, data in enumerate(shared)]
        members += [(name, data, 0o644) for name, data in own.items()]
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1, mtime=0)


def _gallery_counting_writes(config: Path, *args: str) -> tuple[int, int]:
    """Run ``gallery ARGS`` in a child; the bytes the extractor wrote into files of the tree,
    and the bytes every write system call of the process wrote (the blob cache's copy of a
    layer, metadata, journal included)."""
    out = Path(tempfile.mkstemp()[1])
    script = (
        "import sys\n"
        "from gallery.place import filewriter\n"
        "counted = [0]\n"
        "real = filewriter.write_all\n"
        "def counting(fd, data):\n    counted[0] += len(data)\n    real(fd, data)\n"
        "filewriter.write_all = counting\n"
        f"sys.argv = ['gallery', '--config', {str(config)!r}, *{list(args)!r}]\n"
        "from cli.main import run\n"
        "try:\n    run()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
        "wchar = next(l for l in open('/proc/self/io') if l.startswith('wchar')).split()[1]\n"
        f"open({str(out)!r}, 'w').write(f'{{counted[0]}} {{wchar}}')\n"
        "sys.exit(code)\n"
    )
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", script], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    files, total = (int(n) for n in out.read_text().split())
    out.unlink()
    return files, total


def _du(path: Path) -> int:
    return int(
        subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    )


def three_trees(work: Path, store: str) -> dict[str, Any]:
    rng = random.Random(22)
    shared = [rng.randbytes(MIB) for _ in range(60)]
    images = {("a", "v1"): {"backend": rng.randbytes(MIB)}, ("a", "v2"): {"backend": rng.randbytes(MIB)},
              ("b", "v1"): {"backend": rng.randbytes(MIB)}}  # fmt: skip
    root = work / f"three-{store}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for (name, version), own in images.items():
        write_layout(root / "layouts" / f"{name}-{version}", [(_image(shared, own), LAYER)])
    config = root / "gallery.yaml"
    config.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "keep_generations": 1, "file_store": {"link": store}, "galleries": [{"name": "g", "url": "./index.yaml"}],
    }))  # fmt: skip

    def offer(**versions: str) -> None:
        entries = [{"name": n, "uri": f"ocifile://layouts/{n}-{v}"} for n, v in versions.items()]
        (root / "index.yaml").write_text(yaml.safe_dump(entries))

    offer(a="v1")
    _gallery_counting_writes(config, "install", "a")
    one = sum(p.stat().st_size for p in (root / "backends" / "a").rglob("*") if p.is_file())
    offer(a="v2")
    upgrade_files, upgrade_all = _gallery_counting_writes(config, "upgrade", "a")
    offer(a="v2", b="v1")
    _gallery_counting_writes(config, "install", "b")
    total = _du(root / "backends")
    shutil.rmtree(root)
    return {"one_copy_bytes": one, "backends_path_bytes": total, "ratio": total / one,
            "upgrade_file_bytes": upgrade_files, "upgrade_write_calls_bytes": upgrade_all,
            "changed_file_bytes": MIB}  # fmt: skip


def install_rounds(tmp: Path, layers: list[bytes], registry: Any, rounds: int) -> dict[str, list[float]]:
    registry.push_image("bench/many-files", "v1", [(data, LAYER_GZIP) for data in layers])
    configs = {}
    for store in ("auto", "off"):
        home = tmp / f"store-{store}"
        home.mkdir()
        config = write_gallery(
            home, registry, [{"name": "many-files", "uri": f"{registry.host}/bench/many-files:v1"}]
        )
        data = yaml.safe_load(config.read_text())
        data["file_store"] = {"link": store}
        config.write_text(yaml.safe_dump(data))
        configs[store] = (home, config)
    results: dict[str, list[float]] = {
        k: [] for k in ("cold, store", "cold, no store", "warm, store", "warm, no store")
    }

    def gallery(store: str, *args: str) -> float:
        return measure([str(GALLERY), "--config", str(configs[store][1]), *args])["seconds"]

    trash = Trash(tmp / "trash")
    for number in range(rounds):
        # Warm first: the trees go with `uninstall` (the store and the cache stay), then the bench
        # waits out ext4's recently-freed window (benchlib) before measuring anything.
        for store in ("auto", "off"):
            if not (configs[store][0] / "backends" / "many-files").exists():
                gallery(store, "install", "many-files")
            gallery(store, "uninstall", "many-files")
        after_removal()
        for kind in ("warm", "cold"):
            stores = ["auto", "off"] if (number + (kind == "cold")) % 2 == 0 else ["off", "auto"]
            for store in stores:
                home = configs[store][0]
                if kind == "cold":
                    trash.discard(home / "backends", home / "cache")
                label = f"{kind}, {'store' if store == 'auto' else 'no store'}"
                results[label].append(gallery(store, "install", "many-files"))
    return results


def table(summary: dict[str, Any]) -> str:
    three, store_off = summary["three_trees"]["store"], summary["three_trees"]["no store"]
    medians = summary["install_medians"]
    cold = medians["cold, store"] / medians["cold, no store"]
    warm = medians["warm, store"] / medians["warm, no store"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    rows = [
        "| measure | with the store | store off | goal | |",
        "|---|---:|---:|---:|---|",
        f"| three trees: `du` of backends_path / one copy | {three['ratio']:.2f}x | {store_off['ratio']:.2f}x "
        f"| ≤ 1.25x | {verdict(three['ratio'] <= 1.25)} |",
        f"| the upgrade's writes into the new tree's files | {three['upgrade_file_bytes'] / MIB:.1f} MiB "
        f"| {store_off['upgrade_file_bytes'] / MIB:.1f} MiB | the changed file (1 MiB) "
        f"| {verdict(three['upgrade_file_bytes'] <= MIB)} |",
        f"| ... every write call of the upgrade (the layer's copy into the blob cache included) "
        f"| {three['upgrade_write_calls_bytes'] / MIB:.1f} MiB | {store_off['upgrade_write_calls_bytes'] / MIB:.1f} MiB "
        f"| | |",
        f"| many-files warm reinstall (s) | {medians['warm, store']:.2f} | {medians['warm, no store']:.2f} "
        f"| ≤ 0.3x | {warm:.2f}x, {verdict(warm <= 0.3)} |",
        f"| many-files cold install (s) | {medians['cold, store']:.2f} | {medians['cold, no store']:.2f} "
        f"| ≤ 1.05x | {cold:.2f}x, {verdict(cold <= 1.05)} |",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="small")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        three = {"store": three_trees(work, "auto"), "no store": three_trees(work, "off")}
    layers = build_images(args.scale)["many-files"]
    with local_registry() as (tmp, registry):
        rounds = install_rounds(tmp, layers, registry, args.rounds)
    summary = {
        "scale": args.scale,
        "three_trees": three,
        "install_rounds": rounds,
        "install_medians": {k: statistics.median(v) for k, v in rounds.items()},
    }
    text = table(summary)
    print(text)
    if not args.no_write:
        performance = DOCS / "performance.json"
        data = json.loads(performance.read_text())
        data["file_store"] = summary
        performance.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        replace_marked(DOCS / "performance.md", "file-store", text, heading="## The file store")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
