"""Sizes and durations as a person reads them (pure)."""

from __future__ import annotations

__all__ = ["human_bytes", "human_seconds"]

_UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(count: int | float) -> str:
    """``205417012`` -> ``205.4 MB`` (decimal units, as registries and download tools print)."""
    value = float(count)
    if abs(value) < 1000:
        return f"{int(value)} B"
    for unit in _UNITS[1:-1]:
        value /= 1000
        if abs(value) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} {_UNITS[-1]}"


def human_seconds(seconds: float) -> str:
    """``4.2`` -> ``4.2 s``; ``95`` -> ``1 min 35 s``; ``3725`` -> ``1 h 2 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
