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
        (HostFacts("linux", "amd64", frozenset({"nvidia"}), driver_cuda=13), "nvidia-cuda-13"),
        (HostFacts("linux", "amd64", frozenset({"nvidia"})), "nvidia"),
        (HostFacts("linux", "arm64", frozenset({"nvidia"}), l4t=True, driver_cuda=12), "nvidia-l4t-cuda-12"),
        (HostFacts("darwin", "arm64"), "metal"),
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
    keys = preferred_capabilities(HostFacts("linux", "amd64", frozenset({"nvidia"}), driver_cuda=13))
    assert keys[:3] == ["nvidia-cuda-13", "nvidia-cuda-12", "nvidia"]
    choice = choose_capability({"nvidia": "cuda12-x", "default": "cpu-x"}, keys, source="detected")
    assert choice is not None and choice.key == "nvidia" and choice.target == "cuda12-x"
    assert choose_capability({"metal": "m"}, keys, source="detected") is None


def test_localais_capability_file_wins_over_detection_and_steps_down(tmp_path: Path) -> None:
    from gallery.catalog.resolve import CapabilitySelector

    root = fake_root(
        tmp_path,
        {"run/localai/capability": "nvidia-cuda-13\n", "sys/class/drm/card0/device/vendor": "0x1002\n"},
    )
    facts = detect_host_facts(root)
    assert facts.localai_capability == "nvidia-cuda-13"
    selector = CapabilitySelector("auto", lambda: facts)
    assert selector.preferences == ("nvidia-cuda-13", "nvidia-cuda-12", "nvidia", "default", "cpu")
    assert selector.source == "localai"
    # A configured key wins over the file.
    assert CapabilitySelector("amd", lambda: facts).preferences == ("amd", "default", "cpu")


def test_cuda_major_comes_from_the_toolkit_directory_capped_by_the_driver(tmp_path: Path) -> None:
    nvidia = {"sys/class/drm/card0/device/vendor": "0x10de\n"}
    root = fake_root(tmp_path / "a", nvidia)
    (root / "usr/local/cuda-12").mkdir(parents=True)
    assert detect_host_facts(root).cuda_major == 12  # no driver file: the toolkit decides (LocalAI)
    old_driver = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 2024\n"
    root = fake_root(tmp_path / "b", {**nvidia, "proc/driver/nvidia/version": old_driver})
    (root / "usr/local/cuda-13").mkdir(parents=True)
    facts = detect_host_facts(root)
    assert facts.cuda_toolkits == {13} and facts.driver_cuda == 12 and facts.cuda_major == 12
    assert preferred_capabilities(facts)[0] == "nvidia-cuda-12"


def test_a_gpu_with_4_gib_or_less_counts_as_none(tmp_path: Path) -> None:
    driver = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 2025\n"
    root = fake_root(tmp_path, {"sys/class/drm/card0/device/vendor": "0x10de\n", "proc/driver/nvidia/version": driver,
                                "usr/bin/nvidia-smi": "#!/bin/sh\necho 2048\necho 2048\n"})  # fmt: skip
    (root / "usr/bin/nvidia-smi").chmod(0o755)
    facts = detect_host_facts(root)
    assert facts.vram_bytes == 4 * 1024**3  # two cards, summed like LocalAI's TotalAvailableVRAM
    assert preferred_capabilities(facts) == ["default", "cpu"]
    assert preferred_capabilities(facts, min_gpu_memory=0)[0] == "nvidia-cuda-13"
    bigger = HostFacts("linux", "amd64", frozenset({"nvidia"}), driver_cuda=13, vram_bytes=4 * 1024**3 + 1)
    assert preferred_capabilities(bigger)[0] == "nvidia-cuda-13"
    unknown = HostFacts("linux", "amd64", frozenset({"amd"}))  # memory not measurable: the GPU counts
    assert preferred_capabilities(unknown)[0] == "amd"


def test_amd_memory_comes_from_sysfs_and_nvidia_smi_failures_count_as_unknown(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "amd", {"sys/class/drm/card1/device/vendor": "0x1002\n",
                                        "sys/class/drm/card1/device/mem_info_vram_total": "4294967296\n"})  # fmt: skip
    assert detect_host_facts(root).vram_bytes == 4 * 1024**3
    broken = fake_root(tmp_path / "nv", {"sys/class/drm/card0/device/vendor": "0x10de\n",
                                         "usr/bin/nvidia-smi": "#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n"})  # fmt: skip
    (broken / "usr/bin/nvidia-smi").chmod(0o755)
    assert detect_host_facts(broken).vram_bytes is None


def test_an_nvidia_soc_is_a_jetson_and_connectors_are_not_cards(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {"sys/devices/soc0/family": "Tegra\n", "sys/class/drm/card0-HDMI-A-1/device/vendor": "0x8086\n"},
    )
    facts = detect_host_facts(root, platform="linux/arm64")
    assert facts.l4t and facts.gpu_vendors == {"nvidia"}
    assert preferred_capabilities(facts) == ["nvidia-l4t", "default", "cpu"]


def test_builds_that_cannot_run_here_are_passed_over_with_the_reason() -> None:
    from gallery.catalog.capability import incompatibility

    assert incompatibility("cuda12-x", "", "default") == "an NVIDIA CUDA build"
    assert incompatibility("cuda13-x", "", "nvidia-cuda-12") == "a CUDA 13 build (this host has CUDA 12)"
    assert incompatibility("cuda13-x", "", "nvidia") is None  # the host's CUDA major is not known
    assert incompatibility("cuda12-mlx", "", "nvidia-cuda-12") is None  # a Linux build of MLX
    assert incompatibility("metal-mlx", "", "nvidia-cuda-12") == "a macOS (Metal) build"
    assert incompatibility("mlx", "", "default") == "a macOS (Metal) build"
    assert incompatibility("rocm-x", "", "intel") == "an AMD ROCm build"
    assert incompatibility("cpu-x", "quay.io/x:latest-cpu-x", "amd") is None
    choice = choose_capability({"default": "cuda12-x", "cpu": "cpu-x"}, ["default", "cpu"], source="detected",
                               incompatible=lambda _k, t: incompatibility(t, "", "default"))  # fmt: skip
    assert choice is not None and choice.target == "cpu-x"
    assert [s.key for s in choice.skipped] == ["default"]
