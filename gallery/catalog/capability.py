"""Hardware capability: what the host has (detection, injectable) and which key to use (pure).

Detection looks only at the filesystem under an injectable root (``/proc``, ``/sys``, ``/etc``,
``/usr/share``) and at ``platform`` (OS and machine); it never reads environment variables, so an
operator who wants another answer sets ``capability`` in the config (or ``--capability``), which
always wins. Selection then walks a preference list and falls back to ``default``, then ``cpu``.
"""

from __future__ import annotations

import platform as _platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gallery.config.models import oci_architecture

__all__ = [
    "CapabilityChoice",
    "CapabilityDetector",
    "HostFacts",
    "choose_capability",
    "detect_host_facts",
    "preferred_capabilities",
]

_PCI_VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x1022": "amd", "0x8086": "intel"}
_NVIDIA_DRIVER_RE = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+)\.(\d+)")
# The oldest driver branch that supports each CUDA major version (NVIDIA's compatibility table).
_CUDA_BY_DRIVER = ((580, 13), (525, 12), (450, 11))


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What detection found. ``gpu_vendors`` holds ``nvidia``, ``amd`` and/or ``intel``."""

    os: str
    arch: str
    gpu_vendors: frozenset[str] = field(default_factory=frozenset)
    cuda_major: int | None = None
    l4t: bool = False
    vulkan: bool = False

    def describe(self) -> str:
        gpus = ", ".join(sorted(self.gpu_vendors)) or "no GPU"
        extra = []
        if self.cuda_major:
            extra.append(f"CUDA {self.cuda_major}")
        if self.l4t:
            extra.append("Jetson (L4T)")
        if self.vulkan:
            extra.append("Vulkan")
        return f"{self.os}/{self.arch}, {gpus}" + (f" ({', '.join(extra)})" if extra else "")


CapabilityDetector = Callable[[], HostFacts]


def detect_host_facts(root: Path = Path("/")) -> HostFacts:
    """Probe the host. Never raises: anything unreadable counts as absent."""
    system = _platform.system().lower()
    arch = oci_architecture(_platform.machine())
    vendors = set(_pci_display_vendors(root))
    driver = _nvidia_driver_major(root)
    if driver is not None:
        vendors.add("nvidia")
    cuda = next((cuda for minimum, cuda in _CUDA_BY_DRIVER if driver is not None and driver >= minimum), None)
    l4t = _exists(root / "etc/nv_tegra_release")
    if l4t:
        vendors.add("nvidia")
    vulkan = any(_has_files(root / d) for d in ("usr/share/vulkan/icd.d", "etc/vulkan/icd.d"))
    return HostFacts(
        os=system, arch=arch, gpu_vendors=frozenset(vendors), cuda_major=cuda, l4t=l4t, vulkan=vulkan
    )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _has_files(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except OSError:
        return False


def _pci_display_vendors(root: Path) -> list[str]:
    found = []
    try:
        cards = sorted((root / "sys/class/drm").glob("card*/device"))
    except OSError:
        return []
    for device in cards:
        try:
            vendor = (device / "vendor").read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if vendor in _PCI_VENDORS:
            found.append(_PCI_VENDORS[vendor])
    return found


def _nvidia_driver_major(root: Path) -> int | None:
    try:
        text = (root / "proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = _NVIDIA_DRIVER_RE.search(text)
    return int(match.group(1)) if match else 0


def preferred_capabilities(facts: HostFacts) -> list[str]:
    """Capability keys for this host, best first, always ending with ``default`` and ``cpu``."""
    keys: list[str] = []
    if facts.os == "darwin":
        keys += ["metal-darwin-arm64", "metal"] if facts.arch == "arm64" else ["darwin-x86"]
    if "nvidia" in facts.gpu_vendors:
        if facts.l4t or (facts.os == "linux" and facts.arch == "arm64"):
            cuda = facts.cuda_major or 12
            keys += [f"nvidia-l4t-cuda-{cuda}", "nvidia-l4t"]
        else:
            if facts.cuda_major is not None:
                keys += [f"nvidia-cuda-{major}" for major in range(facts.cuda_major, 11, -1)]
            keys.append("nvidia")
    if "amd" in facts.gpu_vendors:
        keys.append("amd")
    if "intel" in facts.gpu_vendors:
        keys.append("intel")
    if facts.vulkan:
        keys.append("vulkan")
    keys += ["default", "cpu"]
    return list(dict.fromkeys(keys))


@dataclass(frozen=True, slots=True)
class CapabilityChoice:
    key: str
    target: str
    source: str  # "config" or "detected"
    tried: tuple[str, ...]


def choose_capability(
    capabilities: Mapping[str, str], preferences: Sequence[str], *, source: str
) -> CapabilityChoice | None:
    """The first preferred key the map has, or ``None`` when it has none of them."""
    for key in preferences:
        if key in capabilities:
            return CapabilityChoice(
                key=key, target=capabilities[key], source=source, tried=tuple(preferences)
            )
    return None
