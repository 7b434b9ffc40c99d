"""Our capability choice against LocalAI's own rules, on LocalAI's real index, on modelled hosts.

Each host is a directory standing for the host's ``/`` (``capability_root``) plus the platform,
and the same host as LocalAI's detection sees it (tests/localai_rules.LocalAIHost). For every
meta-backend of LocalAI's index (tests/assets/localai, 140 of them) and every host, our choice is
either LocalAI's, or differs for one of the deliberate reasons docs/localai.md lists, with the
counts this test computes written there too.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gallery.catalog.capability import HostFacts, detect_host_facts, host_detector, stepped_down
from gallery.catalog.fetch import LoadedIndex
from gallery.catalog.galleries import Catalog, GalleryState
from gallery.catalog.index import IndexEntry, parse_index
from gallery.catalog.resolve import CapabilitySelector, resolve_meta
from gallery.config.models import GalleryConfig
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import GalleryError, IndexFormatError
from gallery.operations.installer import Installer

from .localai_rules import (
    GIB,
    LOCALAI_METADATA_FIELDS,
    LocalAIHost,
    best_backend_from_meta,
    is_backend_compatible,
    is_backend_runnable,
    list_system_backends,
    system_capability,
)

ASSETS = Path(__file__).parent / "assets" / "localai"
DOC = Path(__file__).parent.parent / "docs" / "localai.md"


def smi(mib: int) -> str:
    return f"#!/bin/sh\necho {mib}\n"


NVIDIA_CARD = {
    "sys/class/drm/card0/device/vendor": "0x10de\n",
    "sys/class/drm/card0-DP-1/status": "connected\n",
}


def driver(version: str) -> dict[str, str]:
    line = f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Sun Jul 27 2025\n"
    return {"proc/driver/nvidia/version": line}


@dataclass(frozen=True)
class Host:
    name: str
    platform: str
    localai: LocalAIHost
    files: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    programs: dict[str, str] = field(default_factory=dict)


HOSTS = [
    Host("cuda-12 toolkit", "linux/amd64", LocalAIHost("linux", "amd64", "nvidia", 24 * GIB, cuda12_dir=True),
         {**NVIDIA_CARD, **driver("550.54.14")}, ("usr/local/cuda-12",), {"usr/bin/nvidia-smi": smi(24576)}),
    Host("cuda-13 toolkit", "linux/amd64", LocalAIHost("linux", "amd64", "nvidia", 24 * GIB, cuda13_dir=True),
         {**NVIDIA_CARD, **driver("580.65.06")}, ("usr/local/cuda-13",), {"usr/bin/nvidia-smi": smi(24576)}),
    Host("580 driver, no toolkit", "linux/amd64", LocalAIHost("linux", "amd64", "nvidia", 24 * GIB),
         {**NVIDIA_CARD, **driver("580.65.06")}, (), {"usr/bin/nvidia-smi": smi(24576)}),
    Host("4 GiB card", "linux/amd64", LocalAIHost("linux", "amd64", "nvidia", 4 * GIB, cuda12_dir=True),
         {**NVIDIA_CARD, **driver("550.54.14")}, ("usr/local/cuda-12",), {"usr/bin/nvidia-smi": smi(4096)}),
    Host("AMD", "linux/amd64", LocalAIHost("linux", "amd64", "amd", 16 * GIB),
         {"sys/class/drm/card1/device/vendor": "0x1002\n",
          "sys/class/drm/card1/device/mem_info_vram_total": str(16 * GIB) + "\n"}),
    Host("Intel", "linux/amd64", LocalAIHost("linux", "amd64", "intel", 16 * GIB),
         {"sys/class/drm/card0/device/vendor": "0x8086\n"}),
    Host("Jetson (L4T), CUDA 13", "linux/arm64", LocalAIHost("linux", "arm64", "nvidia", 0, cuda13_dir=True),
         {"etc/nv_tegra_release": "# R38 (release)\n", "sys/devices/soc0/family": "Tegra\n"}, ("usr/local/cuda-13",)),
    Host("Vulkan only", "linux/amd64", LocalAIHost("linux", "amd64", "vulkan", 8 * GIB),
         {"usr/share/vulkan/icd.d/lvp_icd.x86_64.json": "{}\n"}),
    Host("CPU only", "linux/amd64", LocalAIHost("linux", "amd64")),
    Host("LocalAI's CUDA-12 image", "linux/amd64",
         LocalAIHost("linux", "amd64", "nvidia", 24 * GIB, cuda12_dir=True, run_file="nvidia-cuda-12\n"),
         {**NVIDIA_CARD, **driver("580.65.06"), "run/localai/capability": "nvidia-cuda-12\n"}, ("usr/local/cuda-12",),
         {"usr/bin/nvidia-smi": smi(24576)}),
    Host("Apple silicon", "darwin/arm64", LocalAIHost("darwin", "arm64")),
]  # fmt: skip


def build_root(host: Host, root: Path) -> Path:
    for relative, content in host.files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    for relative in host.dirs:
        (root / relative).mkdir(parents=True, exist_ok=True)
    for relative, content in host.programs.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
        (root / relative).chmod(0o755)
    return root


def localai_catalog() -> tuple[Catalog, list[IndexEntry]]:
    parsed = parse_index((ASSETS / "index.yaml").read_bytes(), limits=YamlLimits(), local=False)
    loaded = LoadedIndex(
        "localai", "https://example.invalid/index.yaml", False, datetime.now(UTC), parsed, ()
    )
    state = GalleryState(
        GalleryConfig(name="localai", url="https://example.invalid/index.yaml"), loaded, None
    )
    return Catalog((state,)), [e for e in parsed.entries if e.is_meta]


CATALOG, METAS = localai_catalog()
STATE = CATALOG.galleries[0]


def ours(meta: IndexEntry, selector: CapabilitySelector) -> str | None:
    try:
        _choice, entry = resolve_meta(meta, STATE.entry, capabilities=selector, gallery="localai")
    except GalleryError:
        return None
    return entry.name


def theirs(meta: IndexEntry, host: Host) -> str | None:
    name = best_backend_from_meta(system_capability(host.localai), meta.capabilities)
    return name if name is not None and STATE.entry(name) is not None else None


def linux_mlx(name: str) -> bool:
    """A Linux build of MLX (``cuda12-mlx``, ``cpu-mlx``): LocalAI's compatibility rule reads its
    "mlx" token as macOS, yet LocalAI installs it on Linux, where it runs. We read the
    accelerator tokens first (docs/localai.md), so the rule is not held against these."""
    lowered = name.lower()
    return "mlx" in lowered and any(t in lowered for t in ("cuda", "cpu", "l4t")) and "metal" not in lowered


def localai_rule_refuses(capability: str, entry: IndexEntry) -> bool:
    return not linux_mlx(entry.name) and not is_backend_compatible(capability, entry.name, entry.uri or "")


def why_different(meta: IndexEntry, host: Host, selector: CapabilitySelector, mine: str | None,
                  localai: str | None) -> str | None:  # fmt: skip
    """The deliberate difference that explains ``mine`` != ``localai``, or ``None``."""
    reported = system_capability(host.localai)
    caps = meta.capabilities
    if localai is not None:
        entry = STATE.entry(localai)
        assert entry is not None
        if localai_rule_refuses(reported, entry):
            # LocalAI installs a build its own compatibility rule says cannot run here; we pass it over.
            chosen = STATE.entry(mine) if mine is not None else None
            ok = chosen is None or not localai_rule_refuses(reported, chosen)
            return "incompatible build passed over" if ok else None
    primary = selector.host_capability
    if primary != reported:
        driven = reported == "nvidia" and re.fullmatch(r"nvidia-cuda-\d+", primary) is not None
        toolkitless = not (host.localai.cuda12_dir or host.localai.cuda13_dir)
        in_ladder = mine in {caps.get(k) for k in stepped_down(primary)}
        return (
            "CUDA major from the driver without a toolkit directory"
            if driven and toolkitless and in_ladder
            else None
        )
    if reported not in caps:
        ladder = stepped_down(reported)[1:-2]
        if any(caps.get(key) == mine for key in ladder if key in caps):
            return "stepping down instead of falling to default"
    return None


def selector_for(host: Host, root: Path) -> CapabilitySelector:
    facts = detect_host_facts(build_root(host, root), platform=host.platform)
    return CapabilitySelector("auto", lambda: facts)


def compare(tmp_path: Path) -> tuple[dict[str, Counter[str]], list[str]]:
    reasons: dict[str, Counter[str]] = {}
    unexplained = []
    for number, host in enumerate(HOSTS):
        selector = selector_for(host, tmp_path / f"host{number}")
        counts = reasons.setdefault(host.name, Counter())
        for meta in METAS:
            mine, localai = ours(meta, selector), theirs(meta, host)
            if mine == localai:
                counts["same"] += 1
                continue
            reason = why_different(meta, host, selector, mine, localai)
            if reason is None:
                unexplained.append(f"{host.name}: {meta.name}: ours {mine}, LocalAI {localai}")
            else:
                counts[reason] += 1
    return reasons, unexplained


def test_the_real_index_has_the_meta_backends_the_issue_counted() -> None:
    assert len(METAS) == 140


def test_our_first_preference_is_what_localai_reports(tmp_path: Path) -> None:
    """Detection parity: on every modelled host our first key is LocalAI's capability, except
    where docs/localai.md says why not (the CUDA major from the driver)."""
    for number, host in enumerate(HOSTS):
        primary = selector_for(host, tmp_path / f"h{number}").host_capability
        expected = system_capability(host.localai)
        if host.name == "580 driver, no toolkit":
            assert (expected, primary) == ("nvidia", "nvidia-cuda-13")
        else:
            assert primary == expected, host.name


def test_every_choice_is_localais_or_a_documented_difference(tmp_path: Path) -> None:
    reasons, unexplained = compare(tmp_path)
    assert not unexplained, "\n".join(unexplained[:20])
    doc = DOC.read_text()
    for host, counts in reasons.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| {host} |")), None)
        assert row is not None, f"docs/localai.md has no row for {host!r}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:] == [
            str(counts["same"]),
            str(counts["stepping down instead of falling to default"]),
            str(counts["CUDA major from the driver without a toolkit directory"]),
            str(counts["incompatible build passed over"]),
        ], f"docs/localai.md's row for {host!r} does not match: {dict(counts)}"


@pytest.mark.parametrize("host", HOSTS, ids=[h.name for h in HOSTS])
def test_no_chosen_build_fails_localais_compatibility_rule(host: Host, tmp_path: Path) -> None:
    selector = selector_for(host, tmp_path)
    reported = system_capability(host.localai)
    for meta in METAS:
        mine = ours(meta, selector)
        if mine is not None:
            entry = STATE.entry(mine)
            assert entry is not None and not localai_rule_refuses(reported, entry), (meta.name, mine)


def fixed(capability: str) -> CapabilitySelector:
    def never() -> HostFacts:
        raise AssertionError("detection must not run when the config names a capability")

    return CapabilitySelector(capability, never)


def test_a_configured_cuda_key_steps_down_to_what_the_meta_offers() -> None:
    """rerankers offers nvidia but no nvidia-cuda-12: LocalAI falls to nothing, we step down."""
    rerankers = STATE.entry("rerankers")
    assert rerankers is not None and "nvidia-cuda-12" not in rerankers.capabilities
    choice, entry = resolve_meta(
        rerankers, STATE.entry, capabilities=fixed("nvidia-cuda-12"), gallery="localai"
    )
    assert choice.key == "nvidia" and entry.name == rerankers.capabilities["nvidia"]
    assert best_backend_from_meta("nvidia-cuda-12", rerankers.capabilities) is None


def test_a_cuda_only_map_is_refused_on_a_cpu_host_with_the_reason() -> None:
    meta = STATE.entry("faster-qwen3-tts")
    assert meta is not None
    with pytest.raises(IndexFormatError) as caught:
        resolve_meta(meta, STATE.entry, capabilities=fixed("default"), gallery="localai")
    message = str(caught.value)
    assert "no build that can run on this host" in message
    assert (
        "default -> cuda12-faster-qwen3-tts is an NVIDIA CUDA build, which cannot run on this host (default)"
        in message
    )


def test_lint_warns_about_a_map_naming_a_build_its_key_cannot_run() -> None:
    from gallery.operations.lint import lint_index

    report = lint_index((ASSETS / "index.yaml").read_bytes(), max_bytes=64 * 1024 * 1024)
    warned = sorted(f.entry or "" for f in report.findings if "cannot run on a" in f.message)
    assert warned == ["faster-qwen3-tts", "faster-qwen3-tts-development"]


def localai_index_with_local_builds(tmp_path: Path) -> Path:
    """LocalAI's index with every concrete entry's image replaced by one local tarball (with its
    sha256): the same names, aliases, versions and capability maps, installable offline."""
    import hashlib

    import yaml

    from .tarbuild import file, tar_bytes

    blob = tar_bytes([file("run.sh", b"#!/bin/sh\nexec true\n", mode=0o755)])
    tarball = tmp_path / "build.tar"
    tarball.write_bytes(blob)
    entries = yaml.safe_load((ASSETS / "index.yaml").read_text())
    for entry in entries:
        if entry.get("uri"):
            entry["uri"] = f"file://{tarball}"
            entry["sha256"] = hashlib.sha256(blob).hexdigest()
            entry.pop("mirrors", None)
    index = tmp_path / "index.yaml"
    index.write_text(yaml.safe_dump(entries))
    return index


def installer_on(host: Host, tmp_path: Path, index: Path, capability: str = "auto") -> Installer:
    import httpx
    import yaml

    from gallery.config.models import load_config
    from gallery.verify.signatures import SigstoreVerifier

    root = build_root(host, tmp_path / "root")
    data = {"format_version": 1, "backends_path": "./backends", "cache_path": "../cache", "capability_root": str(root),
            "platform": host.platform, "keep_generations": 0, "capability": capability,
            "galleries": [{"name": "localai", "url": str(index)}]}  # fmt: skip
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "gallery.yaml")
    return Installer(config, client=httpx.Client(trust_env=False), verifier=SigstoreVerifier(),
                     detector=host_detector(config.capability_root, config.platform))  # fmt: skip


# Capability keys of LocalAI's index (and LocalAI's darwin-x86) that no modelled host reports:
# installed with the key configured, listed by LocalAI with that capability.
CONFIGURED = ("nvidia", "nvidia-l4t", "nvidia-l4t-cuda-12", "darwin-x86", "cpu", "metal-darwin-arm64")


def test_every_capability_of_the_index_is_covered() -> None:
    keys = {key for meta in METAS for key in meta.capabilities} | {"darwin-x86"}
    reported = {system_capability(h.localai) for h in HOSTS}
    assert keys <= reported | set(CONFIGURED) and set(CONFIGURED) <= keys


def test_localai_runs_every_meta_backend_we_install(tmp_path: Path) -> None:
    """Every meta-backend of LocalAI's index, installed on each modelled host and for every other
    capability key it uses, resolves through LocalAI's own listing (a port of
    ListSystemBackends) to a run.sh that exists; the meta directory has exactly LocalAI's fields
    and values."""
    index = localai_index_with_local_builds(tmp_path)
    cases = [(host, "auto", system_capability(host.localai)) for host in HOSTS]
    cases += [(HOSTS[-3], key, key) for key in CONFIGURED]  # the CPU-only host, the key configured
    for number, (host, configured, capability) in enumerate(cases):
        work = tmp_path / f"case{number}"
        work.mkdir()
        installs_and_lists(installer_on(host, work, index, configured), work / "backends", capability,
                           f"{host.name} ({configured})")  # fmt: skip


def installs_and_lists(installer: Installer, backends: Path, capability: str, label: str) -> None:
    import json

    metas = [m.name for m in METAS]
    batch = installer.install(metas)
    installed = {meta for meta, r in zip(metas, batch.results, strict=True) if r.error is None}
    refused = {
        meta: str(r.error) for meta, r in zip(metas, batch.results, strict=True) if r.error is not None
    }
    # Only maps with no build for this capability are refused.
    for error in refused.values():
        assert "no build that can run on this host" in error or "no capability for this host" in error, error
    assert installed, label
    listing = list_system_backends(backends, capability)
    for name in installed:
        assert name in listing and is_backend_runnable(listing[name]), f"{label}: LocalAI cannot run {name}"
        meta_dir = json.loads((backends / name / "metadata.json").read_text())
        assert "meta_backend_for" in meta_dir, (label, name, meta_dir)
        concrete = STATE.entry(meta_dir["meta_backend_for"])
        assert concrete is not None
        localai_fields = {k: meta_dir.get(k) for k in LOCALAI_METADATA_FIELDS if k in meta_dir}
        expected = {"name", "meta_backend_for", "gallery_url", "installed_at"} | (
            {"version"} if concrete.version else set()
        )
        assert set(localai_fields) == expected, name
        assert localai_fields["name"] == name and localai_fields.get("version") == concrete.version
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", localai_fields["installed_at"])
    assert len(installed) + len(refused) == len(metas)


def test_a_build_for_a_newer_cuda_is_passed_over_and_the_choice_says_so() -> None:
    """ds4 maps plain 'nvidia' to a CUDA 13 build: on a CUDA 12 host that is passed over (a CUDA 13
    build needs a 580 driver), with the reason kept in the choice for `show`."""
    meta = STATE.entry("ds4")
    assert meta is not None and "nvidia-cuda-12" not in meta.capabilities
    choice, entry = resolve_meta(meta, STATE.entry, capabilities=fixed("nvidia-cuda-12"), gallery="localai")
    assert [(s.key, s.target) for s in choice.skipped] == [("nvidia", meta.capabilities["nvidia"])]
    assert "a CUDA 13 build (this host has CUDA 12)" in choice.skipped[0].reason
    assert entry.name == meta.capabilities["default"]
