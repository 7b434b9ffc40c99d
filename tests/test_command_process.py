"""The console script's own process (``cli.main.run``, issue 20's start-up): the garbage
collector is paused while the command starts, collects again once the command's work begins
(an install runs for minutes), and what start-up made is left out of later collections."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .conftest import REPO

# Runs the real entry point in a fresh interpreter, with two library calls wrapped to note the
# collector's state: the config load (still start-up) and the command's first library call.
PROBE = r"""
import gc, json, sys
import gallery
seen = {"before run": gc.isenabled()}

def noting(label, real):
    def wrapper(*args, **kwargs):
        seen[label] = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
        return real(*args, **kwargs)
    return wrapper

gallery.load_config = noting("loading the config", gallery.load_config)
gallery.inventory = noting("the command's work", gallery.inventory)
gallery.lint_files = noting("the command's work", gallery.lint_files)
sys.argv = ["gallery", *sys.argv[1:]]
from cli.main import run
try:
    run()
except SystemExit as exc:
    seen["exit"] = exc.code
seen["frozen at exit"] = gc.get_freeze_count()
print(json.dumps(seen))
"""


def probe(*args: str, cwd: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_collector_waits_for_start_up_then_collects_as_usual(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    seen = probe("--config", str(config), "list", "--installed", "--offline", cwd=tmp_path)
    assert seen["exit"] == 0
    assert seen["before run"] is True
    assert seen["loading the config"] == {"enabled": False, "frozen": 0}
    work = seen["the command's work"]
    assert isinstance(work, dict)
    assert work["enabled"] is True
    assert work["frozen"] > 10_000  # start-up's objects, out of every later collection
    assert isinstance(seen["frozen at exit"], int) and seen["frozen at exit"] >= work["frozen"]


def test_a_command_without_a_config_collects_once_its_work_begins(tmp_path: Path) -> None:
    index = tmp_path / "index.yaml"
    index.write_text("- name: a\n  uri: example.org/a:v1\n", encoding="utf-8")
    seen = probe("lint", str(index), cwd=tmp_path)
    work = seen["the command's work"]
    assert isinstance(work, dict) and work["enabled"] is True
