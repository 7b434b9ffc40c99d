"""Sizes as a person reads them (pure)."""

from __future__ import annotations

__all__ = ["human_bytes"]

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
