"""LocalAI's own rules, ported line by line from its Go source, to test ourselves against.

Source: https://github.com/mudler/LocalAI at 82c191afadf5f005281e798ccfa0ffd0d5805030 (the
commit tests/assets/localai/index.yaml was taken from). Each function names the file and lines it
ports; it keeps LocalAI's structure, not ours, so that a difference between the two shows.
Nothing here imports gallery: it is the independent side of the comparison.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
# BackendMetadata's JSON fields, core/gallery/backend_types.go 13-30.
LOCALAI_METADATA_FIELDS = (
    "alias",
    "meta_backend_for",
    "name",
    "gallery_url",
    "installed_at",
    "version",
    "uri",
    "digest",
)


@dataclass(frozen=True)
class LocalAIHost:
    """What LocalAI's detection sees on a host (its inputs to getSystemCapabilities).

    ``gpu_vendor``: DetectGPUVendor's answer (pkg/xsysinfo/gpu.go 237-297: ghw, sysfs vendor
    priority nvidia > amd > intel, then nvidia-smi/rocm-smi/xpu-smi, the NVIDIA SoC check,
    vulkaninfo); ``vram``: TotalAvailableVRAM (gpu.go 121-160); ``cuda13_dir``/``cuda12_dir``:
    capabilities.go 283-290 (``/usr/local/cuda-13`` / ``-12`` exist); ``run_file``: the content of
    ``/run/localai/capability``."""

    goos: str
    goarch: str
    gpu_vendor: str = ""
    vram: int = 0
    cuda13_dir: bool = False
    cuda12_dir: bool = False
    run_file: str | None = None


def system_capability(host: LocalAIHost) -> str:
    """getSystemCapabilities, pkg/system/capabilities.go 333-423 (without the environment
    variables, which have no equivalent on our side: our config key is the explicit override)."""
    if host.run_file is not None:  # 354-366
        return host.run_file.strip()
    if host.goos == "darwin" and host.goarch == "arm64":  # 368-373
        return "metal"
    if host.goos == "darwin" and host.goarch == "amd64":  # 375-380
        return "darwin-x86"
    if host.goos == "linux" and host.goarch == "arm64" and host.gpu_vendor == "nvidia":  # 382-397
        if host.cuda13_dir:
            return "nvidia-l4t-cuda-13"
        if host.cuda12_dir:
            return "nvidia-l4t-cuda-12"
        return "nvidia-l4t"
    if host.gpu_vendor == "":  # 399-404
        return "default"
    if host.vram <= 4 * GIB:  # 406-411
        return "default"
    if host.gpu_vendor == "nvidia":  # 413-421
        if host.cuda13_dir:
            return "nvidia-cuda-13"
        if host.cuda12_dir:
            return "nvidia-cuda-12"
    return host.gpu_vendor


def capability_for_map(reported: str, cap_map: dict[str, str]) -> str:
    """SystemState.Capability, capabilities.go 306-331."""
    if reported in cap_map:
        return reported
    if "default" in cap_map:
        return "default"
    if "cpu" in cap_map:
        return "cpu"
    return "default"


def best_backend_from_meta(reported: str, cap_map: dict[str, str]) -> str | None:
    """GalleryBackend.FindBestBackendFromMeta, core/gallery/backend_types.go 44-57 (the name it
    looks up; FindByName then finds the entry or nothing)."""
    return cap_map.get(capability_for_map(reported, cap_map)) or None


def is_backend_compatible(capability: str, name: str, uri: str) -> bool:
    """SystemState.IsBackendCompatible, capabilities.go 482-535."""
    if capability == "disable":
        return True
    combined = (name + " " + uri).lower()
    if "darwin" in combined or "mlx" in combined or "metal" in combined:
        return capability in ("metal", "darwin-x86")
    if "l4t" in combined:
        return capability.startswith("nvidia-l4t")
    if "cuda" in combined or "nvidia" in combined:
        return capability.startswith("nvidia")
    if "rocm" in combined or "hip" in combined or "amd" in combined:
        return capability == "amd"
    if "sycl" in combined or "intel" in combined:
        return capability == "intel"
    return True


# backendBuildTagPreferenceRules, capabilities.go 119-126, and defaultBackendBuildTagTokens (131).
_BUILD_TAG_RULES = (
    ("nvidia", ("cuda", "vulkan", "cpu")),
    ("amd", ("rocm", "hip", "vulkan", "cpu")),
    ("intel", ("sycl", "intel", "cpu")),
    ("metal", ("metal", "cpu")),
    ("darwin-x86", ("darwin-x86", "cpu")),
    ("vulkan", ("vulkan", "cpu")),
)


def build_tag_tokens(capability: str) -> tuple[str, ...]:
    """BackendPreferenceTokens / preferenceTokens, capabilities.go 432-461."""
    lowered = capability.lower()
    for prefix, tokens in _BUILD_TAG_RULES:
        if lowered.startswith(prefix):
            return tokens
    return ("cpu",)


@dataclass
class SystemBackend:
    name: str
    run_file: str
    is_meta: bool
    is_system: bool = False
    metadata: dict[str, object] = field(default_factory=dict)


def list_system_backends(
    backends_path: Path, capability: str, system_path: Path | None = None
) -> dict[str, SystemBackend]:
    """ListSystemBackends, core/gallery/backends.go 627-751, with its quirks: directory entries
    in os.ReadDir order (sorted by name), a metadata file that does not parse fails the whole
    listing, and an alias candidate's run file is never checked for existence (728, 737)."""
    backends: dict[str, SystemBackend] = {}
    if system_path is not None and system_path.is_dir():  # 631-651
        for entry in sorted(os.scandir(system_path), key=lambda e: e.name):
            if entry.is_dir():
                run = system_path / entry.name / "run.sh"
                if run.exists():
                    backends[entry.name] = SystemBackend(entry.name, str(run), False, True)
    alias_groups: dict[str, list[tuple[str, str]]] = {}
    meta_map: dict[str, dict[str, object]] = {}
    for entry in sorted(os.scandir(backends_path), key=lambda e: e.name):  # 654, 663-711
        if not entry.is_dir():  # e.IsDir(): a symlink to a directory is not one
            continue
        directory = entry.name
        run = backends_path / directory / "run.sh"
        metadata_path = backends_path / directory / "metadata.json"
        if not metadata_path.exists():
            metadata: dict[str, object] = {"name": directory}
        else:
            metadata = json.loads(metadata_path.read_text())  # a bad file fails the listing (675)
        meta_map[directory] = metadata
        if run.exists():
            backends[directory] = SystemBackend(directory, str(run), False, metadata=metadata)
        alias = metadata.get("alias") or ""
        if alias:
            alias_groups.setdefault(str(alias), []).append((directory, str(run)))
        concrete = metadata.get("meta_backend_for") or ""
        if concrete:
            name = str(metadata.get("name") or "")
            backends[name] = SystemBackend(
                name, str(backends_path / str(concrete) / "run.sh"), True, metadata=metadata
            )
    tokens = build_tag_tokens(capability)  # 713-749
    for alias, candidates in alias_groups.items():
        chosen: tuple[str, str] | None = None
        for token in tokens:
            chosen = next(((n, r) for n, r in candidates if token in n.lower() and r), None)
            if chosen is not None:
                break
        if chosen is None:
            chosen = next(((n, r) for n, r in candidates if r), None)
        if chosen is None:
            continue
        backends[alias] = SystemBackend(alias, chosen[1], False, metadata=meta_map[chosen[0]])
    return backends


def is_backend_runnable(backend: SystemBackend) -> bool:
    """isBackendRunnable, backends.go 570-578: what LocalAI can start."""
    path = Path(backend.run_file)
    return bool(backend.run_file) and path.exists() and not path.is_dir()


# LocalAI's directory names around a backend (backends.go 307-308, upgrade.go 289-290).
LEFTOVER_SUFFIXES = (".install-tmp", ".install-backup", ".upgrade-tmp", ".backup")
