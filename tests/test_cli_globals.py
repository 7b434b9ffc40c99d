"""Global options before or after the command (issue 20): the argv rewrite, on the real app."""

from __future__ import annotations

import json
import re
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


# -- config discovery, gallery init, --help, doctor ----------------------------------------------


def test_config_is_found_by_flag_then_cwd_then_etc(tmp_path: Path) -> None:
    from gallery import ConfigError, locate_config

    here, system = tmp_path / "gallery.yaml", tmp_path / "etc" / "gallery.yaml"
    search = (here, system)
    with pytest.raises(ConfigError) as missing:
        locate_config(None, search=search)
    assert "gallery init" in (missing.value.hint or "")
    system.parent.mkdir()
    system.write_text("format_version: 1\n")
    assert locate_config(None, search=search).path == system
    here.write_text("format_version: 1\n")
    found = locate_config(None, search=search)
    assert found.path == here and found.describe() == f"{here} (search order: --config, {here}, {system})"
    flag = locate_config(tmp_path / "other.yaml", search=search)
    assert flag.path == tmp_path / "other.yaml" and flag.describe().endswith("(from --config)")


def test_init_writes_a_starter_that_loads_and_never_overwrites(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gallery import CONFIG_SEARCH, load_config

    from .conftest import REPO

    monkeypatch.chdir(tmp_path)
    written = runner.invoke(app, ["init"])
    assert written.exit_code == 0, written.output
    config = load_config(tmp_path / "gallery.yaml")
    assert config.require_integrity and config.galleries[0].verification is not None
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 2 and "exists; not overwritten" in again.stderr
    localai = runner.invoke(app, ["--config", "localai.yaml", "init", "--localai"])
    assert localai.exit_code == 0
    assert (tmp_path / "localai.yaml").read_text() == (REPO / "galleries" / "localai.yaml").read_text()
    assert load_config(tmp_path / "localai.yaml").galleries[0].name == "localai"
    # The found-by-search config is what the next command uses, and doctor says how it was found.
    assert CONFIG_SEARCH[0] == Path("gallery.yaml")
    doctor = runner.invoke(app, ["doctor", "--json"])
    checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["config"]["message"].startswith(
        "./gallery.yaml (search order: --config, ./gallery.yaml, /etc/gallery/gallery.yaml)"
    )
    assert " free)" in checks["backends_path"]["message"]


def test_no_config_anywhere_says_how_to_make_one(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if Path("/etc/gallery/gallery.yaml").exists():
        pytest.skip("this machine has /etc/gallery/gallery.yaml")
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 2
    assert "no config file: looked for ./gallery.yaml, then /etc/gallery/gallery.yaml" in result.stderr
    assert "gallery init" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2


def _commands(group: object) -> list[tuple[str, object]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append((name, command))
        found += [(f"{name} {sub}", c) for sub, c in _commands(command)]
    return found


@pytest.mark.parametrize("path", [name for name, _ in _commands(GROUP)] + [""])
def test_help_has_no_python_types_and_every_option_says_what_it_does(path: str, runner: CliRunner) -> None:
    result = runner.invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0
    assert not re.search(r"<(str|int|path|file|list|float|bool|int range)[^>]*>", result.stdout), (
        result.stdout
    )
    command = GROUP
    for part in path.split():
        command = command.commands[part]  # type: ignore[attr-defined]
    for param in command.params:
        assert param.param_type_name == "argument" or param.help, f"{path}: {param.opts} has no help"


def test_help_lists_the_exit_codes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert "Exit codes: 0 success; 1 operational failure" in result.stdout
    assert "130 interrupted (Ctrl-C)" in " ".join(result.stdout.split())


def test_tables_do_not_wrap_when_piped(make_config: Callable[..., Path], runner: CliRunner) -> None:
    long_uri = "registry.example.org/" + "deep/" * 30 + "backend:latest"
    index = make_config().parent / "wide.yaml"
    index.write_text(json.dumps([{"name": "wide", "uri": long_uri}]))
    config = make_config(galleries=[{"name": "g", "url": str(index), "index_signature": "none"}])
    result = runner.invoke(app, ["--config", str(config), "--no-color", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["wide"])
    assert row.endswith(long_uri) and "\x1b" not in result.stdout


def test_list_offline_uses_the_last_good_copy_and_sends_nothing(
    make_config: Callable[..., Path], runner: CliRunner
) -> None:
    from .file_server import serving

    with serving() as server:
        url = server.publish(
            "/index.yaml", json.dumps([{"name": "remote-one", "uri": "quay.io/x/y:1"}]).encode()
        )
        config = str(make_config(galleries=[{"name": "r", "url": url, "index_signature": "none"}]))
        assert runner.invoke(app, ["--config", config, "list"]).exit_code == 0
        asked = len(server.requests)
        offline = runner.invoke(app, ["--config", config, "list", "--offline"])
        assert len(server.requests) == asked  # nothing sent
    assert offline.exit_code == 0, offline.output
    assert "remote-one" in offline.stdout
    assert "gallery 'r': offline: the last good copy from" in offline.stderr


def test_the_pre_rendered_help_is_what_typer_renders_now() -> None:
    from cli import help_text

    assert help_text.render() == help_text.TOP_LEVEL_HELP, (
        "the commands or global options changed: run .venv/bin/python -m cli.help_text"
    )
    import subprocess
    import sys

    shown = subprocess.run(
        [str(Path(sys.executable).parent / "gallery"), "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and shown.stdout == help_text.TOP_LEVEL_HELP
