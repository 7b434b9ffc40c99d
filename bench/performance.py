"""The performance report: gallery against its peers, measured in one run, written to docs/.

    .venv/bin/python bench/performance.py [--rounds 3] [--scale small|full|issue] [--no-write]

On a fresh machine (``bash bench/run``): installs skopeo and docker-registry (Debian) when they
are missing and we are root, starts docker-registry on 127.0.0.1 and builds two images from real files:

- ``many-files``: a Python site-packages tree and shared libraries, two gzip layers;
- ``big-files``: a few large binaries (shared libraries concatenated), one gzip layer.

Then, in rounds whose order is shuffled, it measures wall time and the peak RSS of the whole
process tree of: ``gallery install`` (cold cache, empty backends), the raw pipeline ``curl blob |
tee >(sha256sum) | tar -xz`` per layer, and ``skopeo copy`` to an OCI directory followed by
``tar -xzf`` per layer; warm: ``gallery install`` with the cache filled into an empty backends
directory against ``tar -xzf`` of the cached blobs; and a one-layer-changed ``gallery upgrade``
(bytes fetched, time). The other figures come from the sibling scripts, run in the same session:
no-op ``upgrade --all`` (upgrade_noop.py), verification (verify_speed.py), preload --jobs
(preload_jobs.py). Every raw figure goes to docs/performance.json; docs/performance.md gets the
table of medians and ratios (bench/report.py renders it; a test checks the two agree).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import GALLERY, ROOT, Trash, local_registry, replace_marked, write_gallery
from registry_server import LAYER_GZIP, Registry, digest_of
from report import render_markdown

DOCS = ROOT / "docs"


# -- measuring ------------------------------------------------------------------------------


def _session_rss(session: int) -> int:
    """Resident bytes of every process in ``session`` (the command and all it started)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == session:  # field 6 of stat: session id
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss pages
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(command: list[str], **kwargs: Any) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of the whole process tree, sampled every 10 ms.

    Every measurement starts after ``sync``: otherwise the gigabyte of dirty pages the previous
    command left (tar never flushes; gallery flushes before its swap) is written back during
    this one and charged to it, whichever tool it is."""
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, **kwargs)  # fmt: skip
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _session_rss(process.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(
            f"{command} exited with {process.returncode}: {stderr.decode(errors='replace')[-2000:]}"
        )
    return {"seconds": seconds, "rss_mb": peak / 1e6, "stdout": stdout.decode(errors="replace")}  # type: ignore[dict-item]


# -- images ---------------------------------------------------------------------------------


def _tar_gz(files: list[tuple[str, Path | bytes]]) -> bytes:
    """A gzip layer with headers as Docker and BuildKit write them: whole-second times, so no
    per-member PAX record (Python's default format adds one to every member for the fractional
    mtime, which doubles the headers every tar reader parses)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, source in files:
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(source), 0o755
                archive.addfile(info, io.BytesIO(source))
            else:
                archive.add(source, arcname=name, recursive=False)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def _tree(root: Path, prefix: str, budget: int, max_files: int = 10**9) -> list[tuple[str, Path | bytes]]:
    files: list[tuple[str, Path | bytes]] = []
    used = count = 0
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue
        size = path.stat().st_size if path.is_file() else 0
        if used + size > budget or count >= max_files:
            break
        used, count = used + size, count + path.is_file()
        files.append((f"{prefix}/{path.relative_to(root)}", path))
    return files


def _image_figures(layers: list[bytes]) -> dict[str, float]:
    """Layers, compressed and unpacked size, regular files: what the table says the image is."""
    files = unpacked = 0
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                files += member.isfile()
                unpacked += member.size if member.isfile() else 0
    compressed = sum(len(data) for data in layers)
    return {
        "layers": len(layers),
        "compressed_mb": compressed / 1e6,
        "unpacked_mb": unpacked / 1e6,
        "files": files,
    }


def _libraries() -> list[Path]:
    return sorted(
        p for p in Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*") if p.is_file() and not p.is_symlink()
    )


def build_images(scale: str) -> dict[str, list[bytes]]:
    mb = 1024 * 1024
    site = (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    run_sh: list[tuple[str, Path | bytes]] = [("run.sh", b"#!/bin/sh\necho bench\n")]
    libraries = Path("/usr/lib/x86_64-linux-gnu")
    if scale == "issue":
        # The image: about 43,000 files and 1.2 GB unpacked. A Python tree (site-packages,
        # the system's python3 modules, then many small data files from /usr/share) and the
        # shared libraries.
        python_tree = _tree(site, "venv/site-packages", 400 * mb)
        python_tree += _tree(Path("/usr/lib/python3"), "venv/python3", 100 * mb)
        room = 40_700 - sum(1 for _, path in python_tree if isinstance(path, Path) and path.is_file())
        python_tree += _tree(Path("/usr/share"), "venv/share", 450 * mb, max_files=max(0, room))
        many = [_tar_gz(run_sh + python_tree), _tar_gz(_tree(libraries, "lib", 700 * mb))]
    else:
        budget = {"small": 250 * mb, "full": 600 * mb}[scale]
        many = [
            _tar_gz(run_sh + _tree(site, "venv/site-packages", budget)),
            _tar_gz(_tree(libraries, "lib", budget)),
        ]
    blob = b"".join(p.read_bytes() for p in _libraries()[:400])
    sizes = {"small": (50, 100), "full": (50, 150, 300), "issue": (50, 150, 300)}[scale]
    big_files: list[tuple[str, Path | bytes]] = list(run_sh)
    for number, size in enumerate(sizes):
        data = (blob * (size * mb // max(1, len(blob)) + 1))[: size * mb]
        big_files.append((f"bin/model-runner-{number}", data))
    return {"many-files": many, "big-files": [_tar_gz(big_files)]}


# -- the rounds -----------------------------------------------------------------------------


def run_rounds(tmp: Path, registry: Registry, images: dict[str, list[bytes]], rounds: int) -> dict[str, Any]:
    skopeo = shutil.which("skopeo")
    entries = []
    for name, layers in images.items():
        registry.push_image(f"bench/{name}", "v1", [(data, LAYER_GZIP) for data in layers])
        entries.append({"name": name, "uri": f"{registry.host}/bench/{name}:v1"})
    config = write_gallery(tmp, registry, entries)
    gallery = [str(GALLERY), "--config", str(config)]
    raw: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in images}
    rng = random.Random(20261123)
    trash = Trash(tmp / "trash")

    def record(image: str, tool: str, figures: dict[str, Any]) -> None:
        raw[image].setdefault(tool, []).append({k: v for k, v in figures.items() if k != "stdout"})

    for _ in range(rounds):
        for image, layers in images.items():
            urls = [f"{registry.url}/v2/bench/{image}/blobs/{digest_of(data)}" for data in layers]

            def gallery_cold(image: str = image) -> None:
                trash.discard(tmp / "backends", tmp / "cache")
                record(image, "gallery install (cold)", measure([*gallery, "install", image]))

            def raw_pipeline(image: str = image, urls: list[str] = urls) -> None:
                target = trash.fresh(tmp / "peer")
                script = " && ".join(
                    f"curl -sf {url} | tee >(sha256sum >/dev/null) | tar -xzf - -C {target}" for url in urls
                )
                record(image, "curl | sha256sum | tar -xz", measure(["bash", "-c", script]))

            def skopeo_tar(image: str = image) -> None:
                target, oci = trash.fresh(tmp / "peer"), tmp / "oci"
                trash.discard(oci)
                script = (
                    f"skopeo copy -q --src-tls-verify=false docker://{registry.host}/bench/{image}:v1 oci:{oci}"
                    f" && for b in $(python3 -c \"import json;print(' '.join(l['digest'][7:] for l in "
                    f"json.load(open('{oci}/blobs/sha256/'+json.load(open('{oci}/index.json'))['manifests'][0]"
                    f"['digest'][7:]))['layers']))\"); do tar -xzf {oci}/blobs/sha256/$b -C {target}; done"
                )
                record(image, "skopeo copy + tar -xz", measure(["bash", "-c", script]))

            tasks = [gallery_cold, raw_pipeline] + ([skopeo_tar] if skopeo else [])
            rng.shuffle(tasks)
            for task in tasks:
                task()

            # Warm: the cache is full (the cold install above ran), the backends dir is empty.
            def gallery_warm(image: str = image) -> None:
                trash.discard(tmp / "backends")
                record(image, "gallery install (warm cache)", measure([*gallery, "install", image]))

            def tar_cached(image: str = image, layers: list[bytes] = layers) -> None:
                target = trash.fresh(tmp / "peer")
                blobs = [tmp / "cache" / "blobs" / "sha256" / digest_of(data)[7:] for data in layers]
                script = " && ".join(f"tar -xzf {blob} -C {target}" for blob in blobs)
                record(image, "tar -xz of the cached blobs", measure(["bash", "-c", script]))

            warm = [gallery_warm, tar_cached]
            rng.shuffle(warm)
            for task in warm:
                task()

    # One layer changed: only that layer is fetched (v1 installed first; the rounds cleared it).
    measure([*gallery, "install", "many-files"])
    many = images["many-files"]
    changed = _tar_gz([("run.sh", b"#!/bin/sh\necho bench v2\n"), ("CHANGED", os.urandom(1024))])
    registry.push_image("bench/many-files", "v1", [(many[0], LAYER_GZIP), (changed, LAYER_GZIP)])
    figures = measure([*gallery, "upgrade", "many-files", "--json"])
    upgrade = json.loads(str(figures["stdout"]))["results"][0]
    return {
        "install": raw,
        "upgrade_one_layer": {
            "seconds": figures["seconds"],
            "bytes_fetched": upgrade["bytes_fetched"],
            "changed_layer_bytes": len(changed),
            "status": upgrade["status"],
        },
        "images": {name: _image_figures(layers) for name, layers in images.items()},
    }


def sibling(script: str, *args: str) -> dict[str, Any]:
    """Run another bench script with --json and return its summary (its last stdout line)."""
    output = subprocess.run([sys.executable, str(Path(__file__).parent / script), *args, "--json"],
                            check=True, capture_output=True, text=True)  # fmt: skip
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def ensure_tools() -> None:
    """skopeo (a peer) and docker-registry (the registry), from Debian, when root and missing."""
    missing = [tool for tool in ("skopeo", "docker-registry") if not shutil.which(tool)]
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    quiet = {"check": False, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], **quiet)
    if any(not shutil.which(tool) for tool in missing):
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], **quiet)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="small")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    ensure_tools()
    images = build_images(args.scale)
    with local_registry() as (tmp, registry):
        results = run_rounds(tmp, registry, images, args.rounds)
    results["noop_upgrade"] = sibling("upgrade_noop.py", "--rounds", str(args.rounds))
    results["verification"] = sibling("verify_speed.py", "--rounds", "30")
    results["preload"] = sibling("preload_jobs.py", "--rounds", str(args.rounds))
    results["run"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "rounds": args.rounds,
        "scale": args.scale,
        "skopeo": bool(shutil.which("skopeo")),
        "command": f".venv/bin/python bench/performance.py --rounds {args.rounds} --scale {args.scale}",
    }
    results = json.loads(json.dumps(results, sort_keys=True))  # the table is rendered as the JSON reads back
    table = render_markdown(results)
    sys.stdout.write(table + "\n")
    if not args.no_write:
        path = DOCS / "performance.json"
        # The other benches' sections (shaped_link, file_store) stay: this run measured only its own.
        kept = (
            {k: v for k, v in json.loads(path.read_text()).items() if k not in results}
            if path.exists()
            else {}
        )
        path.write_text(json.dumps({**kept, **results}, indent=2, sort_keys=True) + "\n")
        replace_marked(DOCS / "performance.md", "table", table, heading="# Performance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
