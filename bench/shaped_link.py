"""Installs over a real link's speed: every tool inside a network namespace with a shaped loopback.

    .venv/bin/python bench/shaped_link.py [--link 12.5] [--link 50] [--rounds 3] [--scale small]
                                          [--no-write]

Over plain loopback a 400 MB download takes a second, so it hides what dominates a real install.
Here, per ``--link`` (MB/s), a private network namespace is made (``ip netns``), its loopback
shaped with ``tc qdisc ... tbf``, and this script runs itself inside it: Debian's docker-registry,
curl, skopeo and gallery all talk over the shaped link. Each round, in shuffled order, on the
many-files image (bench/performance.py's, two gzip layers):

- link alone: ``curl`` of every layer to /dev/null, in parallel (what the link allows);
- extraction alone: ``tar -xzf`` of the layers from local files (what the disk and CPU allow);
- ``curl | tee >(sha256sum) | tar -xz`` per layer, and ``skopeo copy`` + ``tar -xzf``;
- ``gallery install`` with a cold cache and empty backends.

The limit a streaming installer can reach is max(link alone, extraction alone) of the same round
(issue 21). Medians and every round go to docs/performance.json (``shaped_link``), a table per link
speed to docs/performance.md. Needs root, iproute2 and tc; without them it says so and exits 0.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from benchlib import GALLERY, ROOT, Trash, after_removal, local_registry, replace_marked, write_gallery
from performance import build_images, measure
from registry_server import LAYER_GZIP, digest_of

DOCS = ROOT / "docs"
TOOLS = ("link alone", "extraction alone", "curl | sha256sum | tar -xz", "skopeo copy + tar -xz",
         "gallery install (cold)")  # fmt: skip


def shaped_namespace_available() -> str | None:
    """Why this cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc", "docker-registry", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def link_rate(text: str) -> float:
    """A link speed in MB/s from ``12.5``, ``12MB`` or ``100MB/s`` (as bench/run is given it)."""
    number = text.strip().removesuffix("/s").removesuffix("/S").rstrip("MBmb")
    try:
        rate = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a link speed in MB/s (e.g. 12.5MB)") from None
    if not 0 < rate <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: a link speed is between 0 and 10000 MB/s")
    return rate


def run_inside(rate_mb: float, rounds: int, scale: str) -> dict[str, Any]:
    """The rounds for one link speed, in a fresh namespace (this script again, with --inside)."""
    name = f"gallery-bench-{os.getpid()}"
    rate = f"{int(rate_mb * 8)}mbit"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        # burst above loopback's 64 KiB MTU, or no packet passes; latency bounds the queue.
        ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
         "burst", "1mb", "latency", "100ms"],
    ]  # fmt: skip
    try:
        for command in commands:
            subprocess.run(command, check=True)
        inner = [sys.executable, __file__, "--inside", "--rounds", str(rounds), "--scale", scale]
        output = subprocess.run(["ip", "netns", "exec", name, *inner], check=True, capture_output=True,
                                text=True)  # fmt: skip
        return dict(json.loads(output.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def rounds_here(rounds: int, scale: str) -> dict[str, Any]:
    """Inside the namespace: the registry, the image, the shuffled rounds."""
    layers = build_images(scale)["many-files"]
    raw: dict[str, list[float]] = {tool: [] for tool in (*TOOLS, "last byte to in place")}
    with local_registry() as (tmp, registry):
        registry.push_image("bench/many-files", "v1", [(data, LAYER_GZIP) for data in layers])
        config = write_gallery(
            tmp, registry, [{"name": "many-files", "uri": f"{registry.host}/bench/many-files:v1"}]
        )
        urls = [f"{registry.url}/v2/bench/many-files/blobs/{digest_of(data)}" for data in layers]
        local = []
        for number, data in enumerate(layers):
            path = tmp / f"layer{number}.tar.gz"
            path.write_bytes(data)
            local.append(path)
        skopeo = shutil.which("skopeo")
        trash = Trash(tmp / "trash")

        def link() -> float:
            script = " & ".join(f"curl -sf {url} -o /dev/null" for url in urls) + " & wait"
            return measure(["bash", "-c", script])["seconds"]

        def extraction() -> float:
            target = trash.fresh(tmp / "peer")
            return measure(["bash", "-c", " && ".join(f"tar -xzf {p} -C {target}" for p in local)])["seconds"]

        def pipeline() -> float:
            target = trash.fresh(tmp / "peer")
            script = " && ".join(
                f"curl -sf {url} | tee >(sha256sum >/dev/null) | tar -xzf - -C {target}" for url in urls
            )
            return measure(["bash", "-c", script])["seconds"]

        def skopeo_tar() -> float:
            target, oci = trash.fresh(tmp / "peer"), tmp / "oci"
            trash.discard(oci)
            blobs = " ".join(digest_of(data)[7:] for data in layers)
            script = (f"skopeo copy -q --src-tls-verify=false docker://{registry.host}/bench/many-files:v1 "
                      f"oci:{oci} && for b in {blobs}; do tar -xzf {oci}/blobs/sha256/$b -C {target}; done")  # fmt: skip
            return measure(["bash", "-c", script])["seconds"]

        def gallery() -> float:
            trash.discard(tmp / "backends", tmp / "cache")
            seconds, tail = timed_install(
                [str(GALLERY), "--config", str(config), "--json", "install", "many-files"]
            )
            raw["last byte to in place"].append(round(tail, 3))
            return seconds

        tasks = {"link alone": link, "extraction alone": extraction, "curl | sha256sum | tar -xz": pipeline,
                 "gallery install (cold)": gallery}  # fmt: skip
        if skopeo:
            tasks["skopeo copy + tar -xz"] = skopeo_tar
        rng = random.Random(21)
        for _ in range(rounds):
            order = list(tasks)
            rng.shuffle(order)
            for tool in order:
                raw[tool].append(round(tasks[tool](), 3))
    compressed = sum(len(data) for data in layers)
    return {"rounds": {k: v for k, v in raw.items() if v}, "compressed_mb": round(compressed / 1e6, 1)}


def timed_install(command: list[str]) -> tuple[float, float]:
    """Wall seconds of a ``gallery --json install``, and the seconds from its last downloaded
    byte (the progress event that reaches the total) to its exit: extraction not yet done, the
    flush and the swap."""
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last_byte = started
    for line in process.stderr or ():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "progress" and event["bytes"] >= event["total"] > 0:
                last_byte = time.perf_counter()
    if process.wait() != 0:
        raise RuntimeError(f"{command} exited with {process.returncode}")
    ended = time.perf_counter()
    return ended - started, ended - last_byte


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    rounds = results["rounds"]
    limits = [max(a, b) for a, b in zip(rounds["link alone"], rounds["extraction alone"], strict=True)]
    medians = {tool: statistics.median(values) for tool, values in rounds.items()}
    medians["limit: max(link, extraction)"] = statistics.median(limits)
    gallery = medians["gallery install (cold)"]
    ratios = {f"gallery / {tool}": round(gallery / value, 2) for tool, value in medians.items()
              if tool not in ("gallery install (cold)", "last byte to in place")}  # fmt: skip
    return {**results, "medians": {k: round(v, 2) for k, v in medians.items()}, "ratios": ratios}


def table(link: str, summary: dict[str, Any]) -> str:
    lines = [f"**{link} MB/s** ({summary['compressed_mb']} MB of gzip layers)", "",
             "| measure | median | gallery / it |", "|---|---|---|"]  # fmt: skip
    for tool, median in summary["medians"].items():
        ratio = summary["ratios"].get(f"gallery / {tool}")
        cell = tool.replace("|", "\\|")
        lines.append(f"| {cell} | {median:.2f} s | {'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--link",
        type=link_rate,
        action="append",
        help="MB/s: 12.5, 12.5MB or 12.5MB/s (repeatable); default 12.5 and 50",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", choices=["small", "full", "issue"], default="small")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(rounds_here(args.rounds, args.scale)))
        return 0
    why = shaped_namespace_available()
    if why is not None:
        print(f"skipped: {why}")
        return 0
    summaries = {}
    for number, rate in enumerate(args.link or [12.5, 50.0]):
        if number:
            after_removal()  # the previous speed's trees were removed with its temporary directory
        link = f"{rate:g}"
        summaries[link] = summarize(run_inside(rate, args.rounds, args.scale))
        print(table(link, summaries[link]) + "\n")
    if not args.no_write:
        performance = DOCS / "performance.json"
        data = json.loads(performance.read_text())
        data["shaped_link"] = {"scale": args.scale, "links": summaries}
        performance.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        block = "\n\n".join(table(link, summary) for link, summary in summaries.items())
        replace_marked(DOCS / "performance.md", "link-tables", block, heading="## Over a shaped link")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
