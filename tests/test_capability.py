from __future__ import annotations

from pathlib import Path

import pytest

from gallery.catalog.capability import HostFacts, choose_capability, detect_host_facts, preferred_capabilities


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path


def test_detects_nvidia_and_cuda_from_driver(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {
            "sys/class/drm/card0/device/vendor": "0x10de\n",
            "proc/driver/nvidia/version": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 2025\n",
        },
    )
    facts = detect_host_facts(root)
    assert "nvidia" in facts.gpu_vendors and facts.cuda_major == 13


def test_detects_amd_intel_vulkan_and_nothing(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path / "gpu",
        {
            "sys/class/drm/card0/device/vendor": "0x1002\n",
            "sys/class/drm/card1/device/vendor": "0x8086\n",
            "usr/share/vulkan/icd.d/radeon_icd.json": "{}",
        },
    )
    facts = detect_host_facts(root)
    assert facts.gpu_vendors == {"amd", "intel"} and facts.vulkan and facts.cuda_major is None
    empty = detect_host_facts(tmp_path / "empty")
    assert empty.gpu_vendors == frozenset() and not empty.vulkan


@pytest.mark.parametrize(
    ("facts", "first"),
    [
        (HostFacts("linux", "amd64", frozenset({"nvidia"}), cuda_major=13), "nvidia-cuda-13"),
        (HostFacts("linux", "amd64", frozenset({"nvidia"})), "nvidia"),
        (HostFacts("linux", "arm64", frozenset({"nvidia"}), l4t=True, cuda_major=12), "nvidia-l4t-cuda-12"),
        (HostFacts("darwin", "arm64"), "metal-darwin-arm64"),
        (HostFacts("linux", "amd64", frozenset({"amd"})), "amd"),
        (HostFacts("linux", "amd64", vulkan=True), "vulkan"),
        (HostFacts("linux", "amd64"), "default"),
    ],
)
def test_preferences_end_with_default_then_cpu(facts: HostFacts, first: str) -> None:
    keys = preferred_capabilities(facts)
    assert keys[0] == first
    assert keys[-2:] == ["default", "cpu"]


def test_cuda_13_host_falls_back_to_cuda_12_then_nvidia() -> None:
    keys = preferred_capabilities(HostFacts("linux", "amd64", frozenset({"nvidia"}), cuda_major=13))
    assert keys[:3] == ["nvidia-cuda-13", "nvidia-cuda-12", "nvidia"]
    choice = choose_capability({"nvidia": "cuda12-x", "default": "cpu-x"}, keys, source="detected")
    assert choice is not None and choice.key == "nvidia" and choice.target == "cuda12-x"
    assert choose_capability({"metal": "m"}, keys, source="detected") is None
