"""Global options before or after the command (issue 20): the argv rewrite, on the real app."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.argv import with_global_options_first
from cli.main import app

GROUP = typer.main.get_command(app)


def rewrite(*args: str) -> list[str]:
    return with_global_options_first(GROUP, GROUP.make_context("gallery", ["list"]), list(args))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["list", "--config", "x.yaml"], ["--config", "x.yaml", "list"]),
        (["list", "--config=x.yaml", "--debug", "--offline"], ["--config=x.yaml", "--debug", "list", "--offline"]),
        (["-c", "x.yaml", "install", "a", "--no-require-integrity"], ["-c", "x.yaml", "--no-require-integrity", "install", "a"]),
        (["--json", "list"], ["list", "--json"]),
        (["--json", "cache", "prune"], ["cache", "prune", "--json"]),
        # lock has a --capability of its own: it stays lock's
        (["lock", "a", "-o", "l.json", "--capability", "nvidia"], ["lock", "a", "-o", "l.json", "--capability", "nvidia"]),
        (["install", "--capability", "nvidia", "a"], ["--capability", "nvidia", "install", "a"]),
        (["install", "a", "--", "--config"], ["install", "a", "--", "--config"]),
        (["--version"], ["--version"]),
        (["nosuchcommand", "--config", "x"], ["nosuchcommand", "--config", "x"]),
    ],
)  # fmt: skip
def test_global_options_move_before_the_command_and_json_after_it(
    given: list[str], expected: list[str]
) -> None:
    assert rewrite(*given) == expected


def test_the_same_command_either_way_through_the_cli(
    make_config: Callable[..., Path], runner: CliRunner
) -> None:
    config = str(make_config())
    before = runner.invoke(app, ["--config", config, "list", "--installed", "--offline", "--json"])
    after = runner.invoke(app, ["list", "--installed", "--offline", "--config", config, "--json"])
    first = runner.invoke(app, ["--json", "--config", config, "list", "--installed", "--offline"])
    assert before.exit_code == after.exit_code == first.exit_code == 0, (after.output, first.output)
    assert json.loads(before.stdout) == json.loads(after.stdout) == json.loads(first.stdout)


def test_typos_get_the_closest_spelling(
    make_config: Callable[..., Path], runner: CliRunner, localai_index: Path
) -> None:
    command = runner.invoke(app, ["instal", "x"])
    assert command.exit_code == 2 and "Did you mean 'install'?" in command.output
    config = make_config(galleries=[{"name": "localai", "url": str(localai_index)}])
    name = runner.invoke(app, ["--config", str(config), "install", "lama-cpp"])
    assert name.exit_code == 2 and "did you mean 'llama-cpp'?" in name.stderr
    key = make_config(name="typo.yaml", keep_generation=2)
    wrong_key = runner.invoke(app, ["--config", str(key), "list"])
    assert (
        wrong_key.exit_code == 2
        and "keep_generation: unknown key (did you mean 'keep_generations'?)" in wrong_key.stderr
    )
    capability = runner.invoke(
        app, ["--config", str(config), "--capability", "nvidai", "install", "llama-cpp"]
    )
    assert capability.exit_code == 2 and "did you mean 'nvidia'?" in capability.stderr
    assert not (Path(config).parent / "roots/backends/llama-cpp").exists()
    doctor = runner.invoke(app, ["--config", str(config), "--capability", "nvidai", "doctor", "--json"])
    checks = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "capability"]
    assert doctor.exit_code == 2 and any(c["status"] == "error" and "nvidia" in c["message"] for c in checks)


def test_rollback_of_what_is_not_installed_says_so_like_uninstall(
    make_config: Callable[..., Path], runner: CliRunner
) -> None:
    config = str(make_config())
    rollback = runner.invoke(app, ["--config", config, "rollback", "nothing"])
    uninstall = runner.invoke(app, ["--config", config, "uninstall", "nothing"])
    assert rollback.exit_code == uninstall.exit_code == 2
    assert "no installed backend named 'nothing'" in rollback.stderr


def test_json_mode_always_prints_an_object_even_for_a_config_error(tmp_path: Path, runner: CliRunner) -> None:
    missing = runner.invoke(app, ["--config", str(tmp_path / "absent.yaml"), "list", "--json"])
    assert missing.exit_code == 2
    document = json.loads(missing.stdout)
    assert document["exit_code"] == 2 and "cannot read config" in document["error"]["message"]


def test_a_failed_result_names_what_was_asked_for(
    make_config: Callable[..., Path], runner: CliRunner
) -> None:
    result = runner.invoke(app, ["--config", str(make_config()), "install", "nothing", "--json"])
    (failed,) = json.loads(result.stdout)["results"]
    assert failed["name"] == "nothing" and failed["status"] == "failed"


def test_counts_read_as_english() -> None:
    from cli.render import plural

    assert (plural(1, "problem"), plural(2, "problem"), plural(0, "change")) == (
        "1 problem",
        "2 problems",
        "0 changes",
    )


def test_what_was_not_done_is_not_said_done(
    tmp_path: Path, make_config: Callable[..., Path], runner: CliRunner
) -> None:
    from .tarbuild import file, tar_bytes

    config = str(make_config())
    nothing = runner.invoke(app, ["--config", config, "upgrade", "--all"])
    assert nothing.exit_code == 0 and "nothing to do (no backends installed)" in nothing.stdout
    tarball = tmp_path / "t.tar"
    tarball.write_bytes(tar_bytes([file("run.sh", b"#!/bin/sh\n", mode=0o755)]))
    index = tmp_path / "index.yaml"
    index.write_text(f"- name: t\n  uri: file://{tarball}\n")
    dry = runner.invoke(app, ["--config", config, "checksum", str(index)])
    assert "t: sha256 to add" in dry.stdout and "1 change not written (use --write)" in dry.stdout
    assert "sha256 added" not in dry.stdout
    written = runner.invoke(app, ["--config", config, "checksum", str(index), "--write"])
    assert "t: sha256 added" in written.stdout and "wrote 1 change" in written.stdout
    lint = runner.invoke(app, ["lint", str(index)])
    assert "1 entry; 0 errors, 0 warnings" in lint.stdout
