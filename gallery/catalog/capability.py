"""Hardware capability: what the host has (detection, injectable) and which key to use (pure).

Detection looks only at the filesystem under ``capability_root`` (``/proc``, ``/sys``, ``/dev``,
``/run``, ``/usr/local``, ``/etc``, ``/usr/share``), at the configured OS/architecture and, for an
NVIDIA card's memory, at ``nvidia-smi`` in fixed places under that root; it never reads
environment variables. An operator who wants another answer sets ``capability`` in the config
(or ``--capability``), which always wins; LocalAI's own ``/run/localai/capability`` file comes
next, then detection.

The rules follow LocalAI's ``pkg/system/capabilities.go`` (``getSystemCapabilities``,
``IsBackendCompatible``); where they differ on purpose, docs/localai.md says how and why.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_MIN_GPU_MEMORY",
    "CapabilityChoice",
    "CapabilityDetector",
    "HostFacts",
    "SkippedBuild",
    "choose_capability",
    "detect_host_facts",
    "host_detector",
    "incompatibility",
    "is_detectable",
    "preferred_capabilities",
    "skipped_builds",
    "stepped_down",
]

# LocalAI's PCI vendor ids (pkg/xsysinfo/sysfsgpu.go): graphics devices only, AMD by its ATI id.
_PCI_VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel"}
_NVIDIA_DRIVER_RE = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+)\.(\d+)")
# The oldest driver branch that supports each CUDA major version (NVIDIA's compatibility table).
_CUDA_BY_DRIVER = ((580, 13), (525, 12), (450, 11))
_CUDA_KEY_RE = re.compile(r"(nvidia(?:-l4t)?)-cuda-(\d{1,3})")
_TOOLKIT_RE = re.compile(r"cuda-(\d{1,3})")
# LocalAI's rule: a GPU with 4 GiB of memory or less counts as none (capabilities.go).
DEFAULT_MIN_GPU_MEMORY = 4 * 1024**3
# Where the NVIDIA container toolkit and distributions put nvidia-smi; PATH is never read.
_NVIDIA_SMI = ("usr/bin/nvidia-smi", "usr/local/nvidia/bin/nvidia-smi", "usr/local/bin/nvidia-smi")
_MAX_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What detection found. ``gpu_vendors`` holds ``nvidia``, ``amd`` and/or ``intel``;
    ``driver_cuda`` is the newest CUDA major the NVIDIA driver supports, ``cuda_toolkits`` the
    majors of ``/usr/local/cuda-N`` directories, ``vram_bytes`` the summed GPU memory (``None``:
    not measurable here), ``localai_capability`` the content of ``/run/localai/capability``."""

    os: str
    arch: str
    gpu_vendors: frozenset[str] = field(default_factory=frozenset)
    driver_cuda: int | None = None
    l4t: bool = False
    vulkan: bool = False
    cuda_toolkits: frozenset[int] = field(default_factory=frozenset)
    vram_bytes: int | None = None
    localai_capability: str | None = None

    @property
    def cuda_major(self) -> int | None:
        """The CUDA major to build for: the newest toolkit directory (LocalAI's source) but never
        above what the driver supports; without a toolkit directory, the driver's."""
        toolkit = max((major for major in self.cuda_toolkits if major >= 12), default=None)
        if toolkit is None:
            return self.driver_cuda
        if self.driver_cuda is not None and self.driver_cuda < toolkit:
            return self.driver_cuda
        return toolkit

    def describe(self) -> str:
        gpus = ", ".join(sorted(self.gpu_vendors)) or "no GPU"
        extra = []
        if self.cuda_major:
            extra.append(f"CUDA {self.cuda_major}")
        if self.l4t:
            extra.append("Jetson (L4T)")
        if self.vulkan:
            extra.append("Vulkan")
        if self.vram_bytes is not None:
            extra.append(f"{self.vram_bytes / 1024**3:.1f} GiB GPU memory")
        if self.localai_capability:
            extra.append(f"LocalAI capability file: {self.localai_capability}")
        return f"{self.os}/{self.arch}, {gpus}" + (f" ({', '.join(extra)})" if extra else "")


CapabilityDetector = Callable[[], HostFacts]
NvidiaMemoryProbe = Callable[[Path], int | None]


def host_detector(root: Path, platform: str) -> CapabilityDetector:
    """The detector of the host under ``root`` (the config's ``capability_root``) for ``platform``."""
    return lambda: detect_host_facts(root, platform=platform)


def detect_host_facts(
    root: Path = Path("/"), *, platform: str = "linux/amd64", nvidia_memory: NvidiaMemoryProbe | None = None
) -> HostFacts:
    """Probe the host under ``root`` for ``platform`` (``os/arch``). Never raises: anything
    unreadable counts as absent."""
    system, _, rest = platform.partition("/")
    arch = rest.split("/", 1)[0]
    cards = _drm_cards(root)
    vendors = {vendor for _, vendor in cards}
    driver = _nvidia_driver_major(root)
    if driver is not None:
        vendors.add("nvidia")
    driver_cuda = next(
        (cuda for minimum, cuda in _CUDA_BY_DRIVER if driver is not None and driver >= minimum), None
    )
    l4t = _exists(root / "etc/nv_tegra_release") or _nvidia_soc(root)
    if l4t:
        vendors.add("nvidia")
    vulkan = any(_has_files(root / d) for d in ("usr/share/vulkan/icd.d", "etc/vulkan/icd.d"))
    probe = nvidia_memory or run_nvidia_smi
    return HostFacts(
        os=system,
        arch=arch,
        gpu_vendors=frozenset(vendors),
        driver_cuda=driver_cuda,
        l4t=l4t,
        vulkan=vulkan,
        cuda_toolkits=_cuda_toolkits(root),
        vram_bytes=_vram(root, cards, probe if "nvidia" in vendors and not l4t else None),
        localai_capability=_localai_capability(root),
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


def _read_small(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(_MAX_PROBE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None


def _drm_cards(root: Path) -> list[tuple[Path, str]]:
    """``(device dir, vendor)`` of each GPU in ``/sys/class/drm``; ``cardN-CONNECTOR`` entries are
    a card's outputs, not cards (LocalAI's scanSysfsGPUs skips them too)."""
    found = []
    try:
        names = sorted(p.name for p in (root / "sys/class/drm").iterdir())
    except OSError:
        return []
    for name in names:
        if not name.startswith("card") or "-" in name:
            continue
        device = root / "sys/class/drm" / name / "device"
        vendor = (_read_small(device / "vendor") or "").strip().lower()
        if vendor in _PCI_VENDORS:
            found.append((device, _PCI_VENDORS[vendor]))
    return found


def _nvidia_soc(root: Path) -> bool:
    """An NVIDIA SoC with an integrated GPU (Jetson, DGX Spark), as LocalAI's
    isNVIDIAIntegratedGPU tells it: soc0's family is ``Tegra`` or its JEDEC id is NVIDIA's."""
    family = (_read_small(root / "sys/devices/soc0/family") or "").strip()
    soc_id = (_read_small(root / "sys/devices/soc0/soc_id") or "").strip()
    return family == "Tegra" or soc_id.startswith("jep106:0426")


def _nvidia_driver_major(root: Path) -> int | None:
    text = _read_small(root / "proc/driver/nvidia/version")
    if text is None:
        return None
    match = _NVIDIA_DRIVER_RE.search(text)
    return int(match.group(1)) if match else 0


def _cuda_toolkits(root: Path) -> frozenset[int]:
    try:
        names = [p.name for p in (root / "usr/local").iterdir() if p.is_dir()]
    except OSError:
        return frozenset()
    return frozenset(int(m.group(1)) for name in names if (m := _TOOLKIT_RE.fullmatch(name)))


def _localai_capability(root: Path) -> str | None:
    text = _read_small(root / "run/localai/capability")
    value = (text or "").strip()
    return value if value and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value) else None


def _vram(root: Path, cards: list[tuple[Path, str]], nvidia: NvidiaMemoryProbe | None) -> int | None:
    """Summed GPU memory, like LocalAI's TotalAvailableVRAM: what the kernel reports per card
    (amdgpu's ``mem_info_vram_total``), plus what nvidia-smi reports for NVIDIA cards."""
    total: int | None = None
    for device, _vendor in cards:
        text = _read_small(device / "mem_info_vram_total")
        if text is not None and text.strip().isdigit():
            total = (total or 0) + int(text.strip())
    if nvidia is not None:
        memory = nvidia(root)
        if memory is not None:
            total = (total or 0) + memory
    return total


def run_nvidia_smi(root: Path) -> int | None:
    """Total memory of the NVIDIA cards in bytes, from ``nvidia-smi`` (MiB per card), or ``None``."""
    for relative in _NVIDIA_SMI:
        program = root / relative
        if not _exists(program):
            continue
        try:
            done = subprocess.run(  # noqa: S603 - fixed program path, fixed arguments, no shell
                [str(program), "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                timeout=10,
                check=False,
                env={},
            )
        except (OSError, subprocess.SubprocessError):
            return None
        lines = done.stdout[:_MAX_PROBE_BYTES].decode("ascii", errors="replace").split()
        if done.returncode != 0 or not lines or not all(line.isdigit() for line in lines):
            return None
        return sum(int(line) for line in lines) * 1024 * 1024
    return None


# Every key detection (ours and LocalAI's) can report, besides the CUDA ones (any major).
DETECTABLE = frozenset({"nvidia", "nvidia-l4t", "amd", "intel", "vulkan", "metal", "metal-darwin-arm64",
                        "darwin-x86", "default", "cpu"})  # fmt: skip


def is_detectable(key: str) -> bool:
    """A key this host, or another, could be detected as (``nvidia-cuda-13`` included)."""
    return key in DETECTABLE or _CUDA_KEY_RE.fullmatch(key) is not None


def stepped_down(key: str) -> list[str]:
    """A capability key and what a host with it can also run, best first: a CUDA key steps down
    its CUDA majors to 12, then to the plain vendor key; every list ends ``default``, ``cpu``."""
    keys = [key]
    match = _CUDA_KEY_RE.fullmatch(key)
    if match:
        base, major = match.group(1), int(match.group(2))
        keys += [f"{base}-cuda-{m}" for m in range(major - 1, 11, -1)] + [base]
    elif key == "metal":
        keys.append("metal-darwin-arm64")
    return list(dict.fromkeys([*keys, "default", "cpu"]))


def preferred_capabilities(facts: HostFacts, *, min_gpu_memory: int = DEFAULT_MIN_GPU_MEMORY) -> list[str]:
    """Capability keys for this host, best first, always ending with ``default`` and ``cpu``.

    The first key is what LocalAI's getSystemCapabilities reports on the same host (but for the
    driver fallback and the driver cap of the CUDA major, docs/localai.md); the rest are the
    step-downs LocalAI does not make."""
    if facts.localai_capability:
        return stepped_down(facts.localai_capability)
    if facts.os == "darwin":
        return stepped_down("metal" if facts.arch == "arm64" else "darwin-x86")
    if "nvidia" in facts.gpu_vendors and facts.os == "linux" and facts.arch == "arm64":
        cuda = facts.cuda_major
        return stepped_down(f"nvidia-l4t-cuda-{cuda}" if cuda and cuda >= 12 else "nvidia-l4t")
    if facts.vram_bytes is not None and facts.vram_bytes <= min_gpu_memory:
        return stepped_down("default")
    keys: list[str] = []
    if "nvidia" in facts.gpu_vendors:
        cuda = facts.cuda_major
        keys += stepped_down(f"nvidia-cuda-{cuda}" if cuda and cuda >= 12 else "nvidia")[:-2]
    if "amd" in facts.gpu_vendors:
        keys.append("amd")
    if "intel" in facts.gpu_vendors:
        keys.append("intel")
    if facts.vulkan:
        keys.append("vulkan")
    return list(dict.fromkeys([*keys, "default", "cpu"]))


def incompatibility(name: str, uri: str, capability: str) -> str | None:
    """Why a build cannot run on a host whose capability is ``capability`` (``None``: it can).

    LocalAI's IsBackendCompatible (pkg/system/capabilities.go): the build's name and URI carry
    tokens (l4t, cuda/nvidia, rocm/hip/amd, sycl/intel, darwin/mlx/metal); anything else is a CPU
    build and runs everywhere. Two refinements (docs/localai.md): "mlx" alone means macOS, but
    ``cuda12-mlx`` and ``cpu-mlx`` are Linux builds of MLX, so the accelerator, cpu and vulkan
    tokens are read first; and a build naming a CUDA major (``cuda13-…``) needs a host with at least that one.
    """
    combined = f"{name} {uri}".lower()
    if "darwin" in combined or "metal" in combined:
        return _darwin_only(capability)
    if "l4t" in combined:
        if not capability.startswith("nvidia-l4t"):
            return "an NVIDIA Jetson (L4T) build"
        return _cuda_too_new(combined, capability)
    if "cuda" in combined or "nvidia" in combined:
        if not capability.startswith("nvidia"):
            return "an NVIDIA CUDA build"
        return _cuda_too_new(combined, capability)
    if any(token in combined for token in ("rocm", "hip", "amd")):
        return None if capability == "amd" else "an AMD ROCm build"
    if "sycl" in combined or "intel" in combined:
        return None if capability == "intel" else "an Intel SYCL build"
    if "mlx" in combined and "cpu" not in combined and "vulkan" not in combined:
        return _darwin_only(capability)
    return None


def _darwin_only(capability: str) -> str | None:
    return None if capability.startswith("metal") or capability == "darwin-x86" else "a macOS (Metal) build"


def _cuda_too_new(combined: str, capability: str) -> str | None:
    host = _CUDA_KEY_RE.fullmatch(capability)
    needed = [int(m) for m in re.findall(r"cuda-?(\d{2})", combined)]
    if host is None or not needed or max(needed) <= int(host.group(2)):
        return None
    return f"a CUDA {max(needed)} build (this host has CUDA {host.group(2)})"


@dataclass(frozen=True, slots=True)
class SkippedBuild:
    """A build the map offers for a preferred key that cannot run on this host, and why."""

    key: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class CapabilityChoice:
    key: str
    target: str
    source: str  # "config", "localai" (its capability file) or "detected"
    tried: tuple[str, ...]
    skipped: tuple[SkippedBuild, ...] = ()


BuildCheck = Callable[[str, str], str | None]


def choose_capability(
    capabilities: Mapping[str, str],
    preferences: Sequence[str],
    *,
    source: str,
    incompatible: BuildCheck | None = None,
) -> CapabilityChoice | None:
    """The first preferred key the map has whose build can run here, or ``None``.

    ``incompatible(key, target)`` says why a target cannot run on this host (``None``: it can);
    the targets passed over are kept in the choice so the user sees why."""
    skipped: list[SkippedBuild] = []
    for key in preferences:
        if key not in capabilities:
            continue
        target = capabilities[key]
        reason = incompatible(key, target) if incompatible is not None else None
        if reason is None:
            return CapabilityChoice(key=key, target=target, source=source, tried=tuple(preferences),
                                    skipped=tuple(skipped))  # fmt: skip
        skipped.append(SkippedBuild(key, target, reason))
    return None


def skipped_builds(
    capabilities: Mapping[str, str], preferences: Sequence[str], incompatible: BuildCheck | None
) -> tuple[SkippedBuild, ...]:
    """The preferred keys whose build cannot run here, best first (what a refusal lists)."""
    if incompatible is None:
        return ()
    found = []
    for key in preferences:
        if key in capabilities and (reason := incompatible(key, capabilities[key])) is not None:
            found.append(SkippedBuild(key, capabilities[key], reason))
    return tuple(found)
