"""docs/performance.md's table, rendered from docs/performance.json (pure: tests call it too)."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["render_markdown"]

GALLERY_COLD = "gallery install (cold)"
GALLERY_WARM = "gallery install (warm cache)"
RAW = "curl | sha256sum | tar -xz"
SKOPEO = "skopeo copy + tar -xz"
TAR_CACHED = "tar -xz of the cached blobs"


def _cell(text: str) -> str:
    """A markdown table cell: a literal pipe must be escaped."""
    return text.replace("|", "\\|")


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


# Cold install against (raw pipeline, skopeo + tar): issue 21 tightened them for many small files.
_COLD_GOAL = (1.0, 0.9)
_COLD_GOALS = {"many-files": (0.8, 0.75)}


def _verdict(value: float, goal: float, *, at_most: bool = True) -> str:
    met = value <= goal if at_most else value >= goal
    return "met" if met else f"missed by {abs(value - goal) / goal * 100:.0f}%"


def render_markdown(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"Measured {run['date']} on {run['machine']}, Python {run['python']}, {run['rounds']} rounds "
        f"(order shuffled per round), scale `{run['scale']}`. Reproduce: `{run['command']}`.",
        "",
        "### Install (medians)",
        "",
        "| image | command | seconds | peak RSS MB (process tree) |",
        "|---|---|---:|---:|",
    ]
    for image, tools in results["install"].items():
        meta = results["images"][image]
        described = f"{meta['layers']} layers, {meta['compressed_mb']:.0f} MB"
        if "files" in meta:
            described += f" → {meta['unpacked_mb']:.0f} MB, {meta['files']:,} files"
        for tool, samples in tools.items():
            lines.append(
                f"| {image} ({described}) | {_cell(tool)} | "
                f"{_median(samples, 'seconds'):.2f} | {max(s['rss_mb'] for s in samples):.0f} |"
            )
    lines += ["", "### Ratios and goals", "", "| measure | value | goal | |", "|---|---:|---:|---|"]
    for image, tools in results["install"].items():
        cold = _median(tools[GALLERY_COLD], "seconds")
        raw_goal, skopeo_goal = _COLD_GOALS.get(image, _COLD_GOAL)
        if RAW in tools:
            ratio = cold / _median(tools[RAW], "seconds")
            lines.append(
                f"| {image}: cold install / raw pipeline | {ratio:.2f}x | ≤ {raw_goal}x | {_verdict(ratio, raw_goal)} |"
            )
        if SKOPEO in tools:
            ratio = cold / _median(tools[SKOPEO], "seconds")
            lines.append(
                f"| {image}: cold install / skopeo+tar | {ratio:.2f}x | ≤ {skopeo_goal}x | "
                f"{_verdict(ratio, skopeo_goal)} |"
            )
        if GALLERY_WARM in tools and TAR_CACHED in tools:
            ratio = _median(tools[GALLERY_WARM], "seconds") / _median(tools[TAR_CACHED], "seconds")
            lines.append(
                f"| {image}: warm reinstall / tar -xz | {ratio:.2f}x | ≤ 1.1x | {_verdict(ratio, 1.1)} |"
            )
        rss = max(s["rss_mb"] for s in tools[GALLERY_COLD])
        lines.append(f"| {image}: install peak RSS | {rss:.0f} MB | ≤ 150 MB | {_verdict(rss, 150)} |")
    upgrade = results["upgrade_one_layer"]
    fetched_ok = "met" if upgrade["bytes_fetched"] == upgrade["changed_layer_bytes"] else "missed"
    lines.append(
        f"| one-layer-changed upgrade: bytes fetched | {upgrade['bytes_fetched']} "
        f"({upgrade['seconds']:.2f} s) | = changed layer ({upgrade['changed_layer_bytes']}) | {fetched_ok} |"
    )
    noop = results["noop_upgrade"]["library_ms_per_backend"]
    lines.append(
        f"| no-op upgrade --all, per backend (library) | {noop:.1f} ms | ≤ 50 ms | {_verdict(noop, 50)} |"
    )
    cli = results["noop_upgrade"]["cli_ms_per_backend"]
    lines.append(f"| no-op upgrade --all, per backend (CLI, start-up included) | {cli:.1f} ms | | |")
    verification = results["verification"]
    lines.append(f"| verification, cold | {verification['cold_ms']:.2f} ms | ≤ 100 ms | "
                 f"{_verdict(verification['cold_ms'], 100)} |")  # fmt: skip
    lines.append(f"| verification, cached | {verification['cached_ms']:.3f} ms | ≤ 1 ms | "
                 f"{_verdict(verification['cached_ms'], 1)} |")  # fmt: skip
    preload = results["preload"]
    speedup = preload["cold_seconds"]["1"] / preload["cold_seconds"]["2"]
    lines.append(f"| preload of {preload['backends']} backends: --jobs 2 speed-up | {speedup:.2f}x | ≥ 1.5x | "
                 f"{_verdict(speedup, 1.5, at_most=False)} |")  # fmt: skip
    if "sequential_install_seconds" in preload:
        ratio = preload["cold_seconds"]["1"] / preload["sequential_install_seconds"]
        lines.append(
            f"| preload --jobs 1 / plain sequential install of the same backends | {ratio:.2f}x | | |"
        )
    lines.append(f"| preload warm run: bytes fetched | {preload['warm_bytes_fetched']} "
                 f"({preload['warm_seconds']:.2f} s) | 0 | {'met' if preload['warm_bytes_fetched'] == 0 else 'missed'} |")  # fmt: skip
    return "\n".join(lines)
