"""kill -9 at every step of install, upgrade, rollback and uninstall, and at random times.

A child process (tests/crash_worker.py) runs the operation with a step hook that SIGKILLs it at a
chosen journal step. The next command (``gallery list --installed``, a reader) recovers, and
``backends/b`` must then equal the old or the new version file-for-file — never a mix, never
missing when it existed. The steps each operation passes through are asserted, so a step that
silently stops being reached fails the test.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.fsck import scan
from gallery.operations.installer import Installer
from gallery.place.swap import StateDir
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .fsfaults import tree
from .tarbuild import file, gz, tar_bytes

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WORKER = Path(__file__).parent / "crash_worker.py"

EXPECTED_STEPS = {
    "install": ["synced", "journaled", "placed", "checked", "retired", "pruned", "done"],
    "upgrade": ["synced", "journaled", "exchanged", "checked", "retired", "pruned", "done"],
    "rollback": ["journaled", "exchanged", "checked", "retired", "pruned", "done"],
    "uninstall": ["journaled", "moved-live", "checked", "retired", "pruned", "done"],
}


def image(version: str) -> bytes:
    members = [file("run.sh", f"#!/bin/sh\necho {version}\n".encode(), mode=0o755)]
    members += [file(f"lib/{version}/f{i}.txt", f"{version}-{i}\n".encode() * 50) for i in range(300)]
    members.append(file("shared.txt", version.encode() * 1000))
    return gz(tar_bytes(members))


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        for version in ("v1", "v2"):
            write_layout(root / "layouts" / version, [(image(version), LAYER)])
        self.config = root / "gallery.yaml"
        self.config.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
            "galleries": [{"name": "g", "url": "./index.yaml"}],
        }))  # fmt: skip
        self.offer("v1")

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    def offer(self, version: str) -> None:
        (self.root / "index.yaml").write_text(
            yaml.safe_dump([{"name": "b", "uri": f"ocifile://layouts/{version}"}])
        )

    def run(self, op: str) -> tuple[int, list[str]]:
        """In this process (fast): for preparing states and recording the steps."""
        steps: list[str] = []
        with httpx.Client(trust_env=False) as client:
            installer = Installer(load_config(self.config), client=client, verifier=SigstoreVerifier(),
                                  detector=lambda: HostFacts("linux", "amd64"), step=steps.append)  # fmt: skip
            action = {"install": installer.install_one, "upgrade": installer.upgrade_one,
                      "rollback": installer.rollback, "uninstall": installer.uninstall_one}[op]  # fmt: skip
            result = action("b")
        return result.exit_code, steps

    def run_killed(self, op: str, kill_at: str) -> tuple[int, list[str]]:
        """In a child process that SIGKILLs itself at ``kill_at``."""
        process = subprocess.run(
            [sys.executable, str(WORKER), str(self.config), op, "b", kill_at],
            capture_output=True, text=True, timeout=120, cwd=self.root,
        )  # fmt: skip
        steps = [line.split()[1] for line in process.stdout.splitlines() if line.startswith("step ")]
        return process.returncode, steps

    def recover_by_next_command(self) -> str:
        result = CliRunner().invoke(app, ["--config", str(self.config), "list", "--installed"])
        assert result.exit_code == 0, result.stderr
        return result.stderr

    def live(self) -> dict[str, Any] | None:
        """backends/b as data; metadata.json reduced to the digest (installed_at differs per run)."""
        path = self.backends / "b"
        if not path.exists():
            return None
        data: dict[str, Any] = dict(tree(path))
        data["metadata.json"] = json.loads((path / "metadata.json").read_text())["digest"]
        return data

    def assert_settled(self) -> None:
        state = StateDir(self.backends)
        assert not state.journal("b").exists()
        for parent in (state.staging, state.trash):
            assert not parent.exists() or not any(parent.iterdir()), list(parent.iterdir())
        # The file store too: every stored file whole and as named, every tree as recorded
        # (objects a kill left unused are not damage: prune removes them).
        damage = [f for f in scan(load_config(self.config)).findings if f.damage]
        assert not damage, damage


def prepare(project: Project, op: str) -> None:
    """Bring the project to the state before ``op``."""
    if op == "install":
        return
    project.offer("v1")
    assert project.run("install")[0] == 0
    if op == "rollback":
        project.offer("v2")
        assert project.run("upgrade")[0] == 0


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """backends/b after an uninterrupted install of v1 and of v2."""
    found: dict[str, Any] = {}
    for version in ("v1", "v2"):
        project = Project(tmp_path_factory.mktemp(f"ref-{version}"))
        project.offer(version)
        assert project.run("install")[0] == 0
        found[version] = project.live()
    return found


def before_and_after(op: str, versions: dict[str, Any]) -> tuple[Any, Any]:
    return {
        "install": (None, versions["v1"]),
        "upgrade": (versions["v1"], versions["v2"]),
        "rollback": (versions["v2"], versions["v1"]),
        "uninstall": (versions["v1"], None),
    }[op]


@pytest.mark.parametrize("op", list(EXPECTED_STEPS))
def test_kill_at_every_step(tmp_path: Path, versions: dict[str, Any], op: str) -> None:
    old, new = before_and_after(op, versions)
    dry = Project(tmp_path / "dry")
    prepare(dry, op)
    if op == "upgrade":
        dry.offer("v2")
    code, steps = dry.run(op)
    assert code == 0 and steps == EXPECTED_STEPS[op]
    assert dry.live() == new

    outcomes = []
    for number, step in enumerate(steps):
        project = Project(tmp_path / f"kill-{number}")
        prepare(project, op)
        if op == "upgrade":
            project.offer("v2")
        assert project.live() == old
        code, reached = project.run_killed(op, kill_at=step)
        assert code == -9 and reached[-1] == step, (step, code, reached)
        project.recover_by_next_command()
        live = project.live()
        assert live in (old, new), f"killed at {step!r}: backends/b is neither version"
        project.assert_settled()
        outcomes.append("new" if live == new else "old")
        # Whatever survived is usable by the next operation.
        if live == new and op == "upgrade":
            assert project.run("rollback")[0] == 0 and project.live() == old
    assert len(outcomes) == len(EXPECTED_STEPS[op])
    # Before the journal nothing changed; once the exchange happened, the operation is finished.
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes


def test_kill_at_random_times(tmp_path: Path, versions: dict[str, Any]) -> None:
    """SIGKILL at random moments of an upgrade (mostly during fetch and extraction)."""
    rng = random.Random(20261123)
    old, new = versions["v1"], versions["v2"]
    seen = set()
    for attempt in range(6):
        project = Project(tmp_path / f"random-{attempt}")
        prepare(project, "upgrade")
        project.offer("v2")
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(project.config), "upgrade", "b", "none"],
            stdout=subprocess.PIPE, text=True, cwd=project.root,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        # The first kill lands right away (certainly before the swap, however fast this machine
        # is); the others at random moments.
        time.sleep(rng.uniform(0.0, 0.25) if attempt else 0.0)
        process.kill()
        process.wait(timeout=60)
        project.recover_by_next_command()
        live = project.live()
        assert live in (old, new), f"random kill {attempt}: neither version"
        project.assert_settled()
        seen.add("new" if live == new else "old")
    assert "old" in seen  # at least one kill landed before the swap


def test_a_crash_leftover_is_reported_by_doctor_while_its_owner_holds_the_lock(tmp_path: Path) -> None:
    project = Project(tmp_path / "p")
    prepare(project, "upgrade")
    project.offer("v2")
    assert project.run_killed("upgrade", kill_at="exchanged")[0] == -9
    from gallery.filelocks import backend_lock

    with backend_lock(StateDir(project.backends).root, "b", timeout=1):  # a live owner
        result = CliRunner().invoke(app, ["--config", str(project.config), "doctor"])
        assert "pending recovery" in result.stdout and "b" in result.stdout
        assert StateDir(project.backends).journal("b").exists(), "readers do not take a held lock"
    assert "finished it" in project.recover_by_next_command()


def test_while_another_process_recovers_readers_go_on_without_waiting(tmp_path: Path) -> None:
    project = Project(tmp_path / "p")
    prepare(project, "upgrade")
    project.offer("v2")
    assert project.run_killed("upgrade", kill_at="journaled")[0] == -9
    from gallery.filelocks import recovery_lock

    with recovery_lock(StateDir(project.backends).root, timeout=1):  # another process recovering
        result = CliRunner().invoke(app, ["--config", str(project.config), "list", "--installed"])
        assert result.exit_code == 0 and "recover" not in result.stderr
        assert StateDir(project.backends).journal("b").exists(), "left to the process that holds the lock"
    assert "undid it" in project.recover_by_next_command()
