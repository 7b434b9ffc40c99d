"""A generated gallery index with the shape of LocalAI's ``backend/index.yaml`` (not a copy).

Same features: about 900 entries; a meta-backend per backend family carrying a ``capabilities``
map, defined with an anchor; concrete entries built with ``!!merge <<: *anchor`` so they inherit
``capabilities`` and ``alias`` (equal to the meta-backend's name) and add a ``uri`` on quay.io and
``mirrors`` on Docker Hub written without a registry host; ``-development`` variants on
``master-`` tags; and a few duplicate names, as the real index has.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = [
    "llama-cpp",
    "whisper",
    "stablediffusion-ggml",
    "vllm",
    "transformers",
    "diffusers",
    "rerankers",
    "exllama2",
    "kokoro",
    "faster-whisper",
    "coqui",
    "bark",
    "chatterbox",
    "piper",
    "bark-cpp",
    "silero-vad",
    "rfdetr",
    "kitten-tts",
    "neutts",
    "vibevoice",
    "mlx",
    "mlx-vlm",
    "mlx-audio",
    "moonshine",
    "huggingface",
    "local-store",
    "llama-cpp-tools",
    "sentencetransformers",
    "mamba",
    "autogptq",
    "openvoice",
    "parler-tts",
    "rwkv",
    "vall-e-x",
    "exllama3",
    "sglang",
    "trl",
    "nemo",
    "funasr",
    "fish-speech",
    "ace-step",
    "longcat-video",
    "depth-anything",
    "whisperx",
    "gpt-oss",
]

# capability key -> (concrete-name prefix, image tag part)
VARIANTS = {
    "default": ("cpu", "cpu"),
    "nvidia": ("cuda12", "gpu-nvidia-cuda-12"),
    "nvidia-cuda-12": ("cuda12", "gpu-nvidia-cuda-12"),
    "nvidia-cuda-13": ("cuda13", "gpu-nvidia-cuda-13"),
    "nvidia-l4t": ("nvidia-l4t-arm64", "nvidia-l4t-arm64"),
    "nvidia-l4t-cuda-13": ("cuda13-nvidia-l4t-arm64", "nvidia-l4t-cuda-13-arm64"),
    "amd": ("rocm", "gpu-rocm-hipblas"),
    "intel": ("intel-sycl-f16", "gpu-intel-sycl-f16"),
    "metal": ("metal", "metal-darwin-arm64"),
    "vulkan": ("vulkan", "gpu-vulkan"),
}


@dataclass(frozen=True)
class Fixture:
    text: str
    valid_names: list[str]
    duplicates: list[str]


def build_localai_like_index(duplicate_count: int = 3) -> Fixture:
    lines: list[str] = ["## A generated index shaped like LocalAI's backend/index.yaml"]
    names: list[str] = []
    for family in FAMILIES:
        anchor = family.replace("-", "")
        prefixes = list(dict.fromkeys(prefix for prefix, _ in VARIANTS.values()))
        lines += [
            f"- &{anchor}",
            f'  name: "{family}"',
            f'  alias: "{family}"',
            "  license: mit",
            f"  icon: https://example.org/icons/{family}.png",
            "  description: |",
            f"    {family} is a backend family used to exercise the index loader.",
            "    It has a multi-line description that every variant inherits.",
            "  urls:",
            f"    - https://example.org/{family}",
            "  tags:",
            "    - text-to-text",
            "    - LLM",
            "  capabilities:",
        ]
        lines += [f'    {key}: "{prefix}-{family}"' for key, (prefix, _) in VARIANTS.items()]
        names.append(family)
        lines += [f"- !!merge <<: *{anchor}", f'  name: "{family}-development"', "  capabilities:"]
        lines += [f'    {key}: "{prefix}-{family}-development"' for key, (prefix, _) in VARIANTS.items()]
        names.append(f"{family}-development")
        for prefix in prefixes:
            tag = next(t for p, t in VARIANTS.values() if p == prefix)
            for channel, suffix in (("latest", ""), ("master", "-development")):
                concrete = f"{prefix}-{family}{suffix}"
                image_tag = f"{channel}-{tag}-{family}"
                lines += [
                    f"- !!merge <<: *{anchor}",
                    f'  name: "{concrete}"',
                    f'  uri: "quay.io/go-skynet/local-ai-backends:{image_tag}"',
                    "  mirrors:",
                    f"    - localai/localai-backends:{image_tag}",
                ]
                names.append(concrete)
    duplicates = []
    for family in FAMILIES[:duplicate_count]:
        duplicate = f"cpu-{family}"
        lines += [
            f'- name: "{duplicate}"',
            f'  uri: "quay.io/go-skynet/local-ai-backends:latest-cpu-{family}-duplicate"',
            f'  alias: "{family}"',
        ]
        duplicates.append(duplicate)
    return Fixture(text="\n".join(lines) + "\n", valid_names=names, duplicates=duplicates)
