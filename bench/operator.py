"""What an operator waits for: start-up of the commands typed most, and Ctrl-C during a download.

    .venv/bin/python bench/operator.py [--rounds 15] [--json]

Start-up (medians over interleaved rounds, each a fresh process), with peers from the same run so
the numbers survive a noisy machine: ``python -c pass`` (the floor every Python CLI pays) and
``python -c "import typer"`` (the CLI framework alone), the floor of the chosen dependencies
(typer, pydantic and PyYAML imported, one model validated), and ``list`` once more as installed from
gallery's wheel (no editable-install import hook). Goals (issue 20): ``gallery --version``
and ``gallery --help`` <= 0.15 s, ``gallery list --installed --offline`` <= 0.4 s.

Every command runs with its bytecode cached (in a scratch ``PYTHONPYCACHEPREFIX``, after one
warm-up run), as for an operator: pip compiles a wheel's modules when it installs them. A shell
that exports ``PYTHONDONTWRITEBYTECODE=1`` (this machine's does) would otherwise have an
editable install compile gallery's ~60 modules from source at every start (+50-90 ms).

Ctrl-C: ``gallery install`` of a 6 MB layer through a proxy that slows blobs to ~0.8 MB/s, SIGINT
once bytes arrive; the time until the process has exited (goal: <= 1 s), in --rounds // 3 rounds.
Needs Debian's docker-registry. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import GALLERY, ROOT, local_registry, write_gallery
from faulty_proxy import Faults, faulty_proxy
from registry_server import LAYER_GZIP
from tarbuild import file, gz, tar_bytes

PYTHON = sys.executable
DEMO = ROOT / "galleries" / "demo" / "gallery.yaml"
GOALS = {"gallery --version": 0.15, "gallery --help": 0.15, "gallery list --installed --offline": 0.4}


# What any typer + pydantic + PyYAML command pays before doing anything: the frameworks, one
# model built and validated (pydantic's schema machinery loads with the first), with the same
# stand-in for pydantic's plugin loader the CLI uses.
DEPENDENCY_FLOOR = """
import sys, types
sys.modules["pydantic.plugin._loader"] = loader = types.ModuleType("pydantic.plugin._loader")
loader.get_plugins = tuple
import typer, yaml, pydantic
class Model(pydantic.BaseModel):
    x: int
Model.model_validate(yaml.safe_load("x: 1"))
"""


def startup(rounds: int, from_wheel: Path, scratch: Path) -> dict[str, list[float]]:
    listing = ["--config", str(DEMO), "list", "--installed", "--offline"]
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "python -c 'import typer'": [PYTHON, "-c", "import typer"],
        "floor: typer + pydantic + yaml, one model": [PYTHON, "-c", DEPENDENCY_FLOOR],
        "gallery --version": [str(GALLERY), "--version"],
        "gallery --help": [str(GALLERY), "--help"],
        "gallery list --installed --offline": [str(GALLERY), *listing],
        "  the same, installed from the wheel": [str(from_wheel / "bin" / "python"), "-c",
                                                          RUN_GALLERY, *listing],
    }  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    subprocess.run(
        [str(GALLERY), "--config", str(DEMO), "install", "demo-echo"],
        capture_output=True,
        check=True,
        env=environment,
    )
    for argv in commands.values():  # the warm-up that writes the bytecode
        subprocess.run(argv, capture_output=True, check=True, env=environment)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=environment
            )
            samples[name].append(time.perf_counter() - started)
    return samples


RUN_GALLERY = "import sys; sys.argv[0] = 'gallery'; from cli.main import run; sys.exit(run())"


def wheel_environment(root: Path) -> Path:
    """A venv holding gallery installed from its wheel (pip builds it and byte-compiles its
    modules, as for an operator) and seeing the development venv's dependencies: what
    ``pip install gallery`` gives, without the import hook an editable install runs at every
    start. Building the wheel fetches setuptools from the package index once."""
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(root)], check=True)
    wheel_install = root / "gallery-wheel"
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--target", str(wheel_install), str(ROOT)], check=True)  # fmt: skip
    site_packages = Path(
        subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    target = Path(
        subprocess.run([str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    (target / "gallery-bench.pth").write_text(f"{wheel_install}\n{site_packages}\n")
    return root


def interrupt_latency(rounds: int) -> list[float]:
    layer = gz(tar_bytes([file("lib/big.so", random.Random(1).randbytes(6_000_000))]))
    run_sh = gz(tar_bytes([file("run.sh", b"#!/bin/sh\necho hi\n", mode=0o755)]))
    latencies = []
    with local_registry() as (tmp, registry), faulty_proxy(registry.url, Faults(slow_blobs=0.02)) as proxy:
        registry.push_image("bench/big", "v1", [(run_sh, LAYER_GZIP), (layer, LAYER_GZIP)])
        host = proxy.removeprefix("http://")
        for number in range(rounds):
            root = tmp / f"round{number}"
            root.mkdir()
            config = write_gallery(root, registry, [{"name": "big", "uri": f"{host}/bench/big:v1"}])
            data = yaml.safe_load(config.read_text())
            data["insecure_registries"].append(host)
            config.write_text(yaml.safe_dump(data))
            process = subprocess.Popen([str(GALLERY), "--config", str(config), "install", "big"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            partial = root / "cache" / "partial"
            while not (partial.is_dir() and any(p.stat().st_size > 100_000 for p in partial.iterdir())):
                if process.poll() is not None:
                    raise SystemExit(
                        f"install ended before it could be interrupted (exit {process.returncode})"
                    )
                time.sleep(0.01)
            started = time.perf_counter()
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=60)
            latencies.append(time.perf_counter() - started)
            if code != 130:
                raise SystemExit(f"interrupted install exited {code}, not 130")
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        samples = startup(args.rounds, wheel_environment(Path(scratch) / "venv"), Path(scratch))
    summary: dict[str, object] = {}
    print(f"start-up, median of {args.rounds} interleaved rounds (min in brackets)")
    for name, values in samples.items():
        median = statistics.median(values)
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"   goal <= {goal:.2f} s: {'met' if median <= goal else 'MISSED'}"
        print(f"  {name:40s} {median:6.3f} s  ({min(values):.3f}){verdict}")
        summary[name] = {"median": round(median, 4), "min": round(min(values), 4), "goal": goal}
    latencies = interrupt_latency(max(3, args.rounds // 3))
    median = statistics.median(latencies)
    print(f"Ctrl-C during a download, until exit: median {median:.3f} s, max {max(latencies):.3f} s "
          f"({len(latencies)} rounds)   goal <= 1 s: {'met' if median <= 1 else 'MISSED'}")  # fmt: skip
    summary["ctrl-c"] = {"median": round(median, 4), "max": round(max(latencies), 4), "goal": 1.0}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
