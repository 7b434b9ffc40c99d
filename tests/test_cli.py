from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

from .localai_fixture import build_localai_like_index
from .test_safe_yaml import BILLION_LAUGHS

Invoke = Callable[..., "InvokeResult"]


class InvokeResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)


@pytest.fixture
def invoke(runner: CliRunner) -> Invoke:
    def run(config: Path, *args: str) -> InvokeResult:
        result = runner.invoke(app, ["--config", str(config), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.stderr
        return InvokeResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def localai_config(make_config: Callable[..., Path], localai_index: Path) -> Callable[..., Path]:
    def make(**fields: object) -> Path:
        return make_config(galleries=[{"name": "localai", "url": str(localai_index)}], **fields)

    return make


def test_list_json_lists_every_valid_entry(invoke: Invoke, localai_config: Callable[..., Path]) -> None:
    fixture = build_localai_like_index()
    result = invoke(localai_config(), "list", "--json")
    assert result.exit_code == 0
    data = result.json()
    assert [e["name"] for e in data["entries"]] == fixture.valid_names
    assert {e["kind"] for e in data["entries"]} == {"meta", "oci"}
    assert len(data["notices"]) == len(fixture.duplicates)
    assert "duplicate name" in result.stderr


@pytest.mark.parametrize(
    ("capability", "concrete"), [("nvidia", "cuda12-llama-cpp"), ("default", "cpu-llama-cpp")]
)
def test_show_resolves_meta_backend_by_config_capability(
    invoke: Invoke, localai_config: Callable[..., Path], capability: str, concrete: str
) -> None:
    result = invoke(localai_config(capability=capability), "show", "llama-cpp", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["name"] == concrete
    assert data["meta_backend"]["capability"] == capability
    assert data["meta_backend"]["capability_source"] == "config"
    assert data["candidates"][0]["kind"] == "uri"
    assert data["candidates"][1]["uri"].startswith("docker.io/localai/localai-backends:")
    text = invoke(localai_config(capability=capability), "show", "llama-cpp")
    assert concrete in text.stdout and "candidates, in order" in text.stdout


def test_capability_flag_overrides_the_config(
    invoke: Invoke, localai_config: Callable[..., Path], runner: CliRunner
) -> None:
    config = localai_config(capability="default")
    result = runner.invoke(
        app, ["--config", str(config), "--capability", "nvidia", "show", "llama-cpp", "--json"]
    )
    assert json.loads(result.stdout)["name"] == "cuda12-llama-cpp"


def test_show_reports_policy_and_strict_mode(
    invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path, runner: CliRunner
) -> None:
    index = tmp_path / "i.yaml"
    index.write_text('- {name: a, uri: "quay.io/x/a:1"}\n- {name: t, uri: "https://h/t.tgz"}\n')
    policy = {
        "issuer": "https://token.actions.githubusercontent.com",
        "identity": "https://github.com/o/r/w@x",
    }
    signed = make_config(
        galleries=[{"name": "g", "url": str(index), "verification": policy}], name="signed.yaml"
    )
    data = invoke(signed, "show", "a", "--json").json()
    assert data["verification"]["policy"] == policy and data["verification"]["protection"] == "signature"
    unsigned = make_config(galleries=[{"name": "g", "url": str(index)}], require_integrity=True)
    data = invoke(unsigned, "show", "a", "--json").json()
    assert "strict mode" in data["verification"]["refused"]
    data = invoke(unsigned, "show", "t", "--json").json()
    assert "no sha256" in data["verification"]["refused"]
    result = runner.invoke(app, ["--config", str(unsigned), "--no-require-integrity", "show", "a", "--json"])
    assert json.loads(result.stdout)["verification"]["refused"] is None


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (
            "format_version: 1\ngalleries:\n  - name: g\n    url: i.yaml\n    verification:\n      issuer: x\n"
            "      identity_regex: '(bad'\n",
            "does not compile",
        ),
        (
            "format_version: 1\ngalleries:\n  - name: g\n    url: i.yaml\n    verification:\n      issuer: x\n",
            "identity",
        ),
        ("format_version: 1\nunknown_key: 1\n", "unknown key"),
        ("format_version: 1\ngalleries: [{name: '../x', url: i.yaml}]\n", "safe single path component"),
        ("{{{", "YAML error"),
    ],
)
def test_malformed_configs_exit_2_with_one_line(
    invoke: Invoke, tmp_path: Path, config_text: str, message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(config_text)
    for command in (["list"], ["show", "x"], ["doctor"], ["list", "--json"]):
        result = invoke(config, *command)
        assert result.exit_code == 2
        assert message in result.stderr
        if "--json" in command:  # tools get an object, never an empty stdout
            assert json.loads(result.stdout)["exit_code"] == 2
        else:
            assert result.stdout == ""


@pytest.mark.parametrize(
    ("index_bytes", "exit_code", "message"),
    [
        (BILLION_LAUGHS, 2, "expands to more than"),
        (b"- [unclosed", 2, "YAML error"),
        (b"name: not-a-list\n", 2, "YAML list"),
        (
            b'- {name: "../x", uri: "quay.io/x/a:1"}\n- {name: ok, uri: "quay.io/x/ok:1", sha256: "XYZ"}\n'
            b'- {name: ok2, uri: "quay.io/x/ok:1"}\n',
            0,
            "skipped",
        ),
    ],
)
def test_malformed_indexes(
    invoke: Invoke,
    make_config: Callable[..., Path],
    tmp_path: Path,
    index_bytes: bytes,
    exit_code: int,
    message: str,
) -> None:
    index = tmp_path / "index.yaml"
    index.write_bytes(index_bytes)
    result = invoke(make_config(galleries=[{"name": "g", "url": str(index)}]), "list", "--json")
    assert result.exit_code == exit_code
    assert message in result.stderr


def test_hundred_megabyte_index_exits_2(
    invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    index = tmp_path / "huge.yaml"
    with index.open("wb") as handle:
        handle.write(b"- {name: a, uri: quay.io/x/a:1}\n")
        handle.truncate(100 * 1024 * 1024)
    result = invoke(make_config(galleries=[{"name": "g", "url": str(index)}]), "list")
    assert result.exit_code == 2 and "max_index_bytes" in result.stderr


def test_unreachable_gallery_is_exit_1_and_others_still_list(
    invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text('- {name: a, uri: "quay.io/x/a:1"}\n')
    config = make_config(
        galleries=[{"name": "down", "url": str(tmp_path / "missing.yaml")}, {"name": "up", "url": str(good)}]
    )
    result = invoke(config, "list", "--json")
    assert result.exit_code == 1
    assert [e["name"] for e in result.json()["entries"]] == ["a"]
    assert "down" in result.stderr


def test_unknown_backend_and_ambiguous_alias_exit_2(
    invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    index = tmp_path / "i.yaml"
    index.write_text(
        '- {name: a, uri: "quay.io/x/a:1", alias: z}\n- {name: b, uri: "quay.io/x/b:1", alias: z}\n'
    )
    config = make_config(galleries=[{"name": "g", "url": str(index)}])
    missing = invoke(config, "show", "nope")
    assert missing.exit_code == 2 and "no backend named 'nope'" in missing.stderr
    ambiguous = invoke(config, "show", "z")
    assert ambiguous.exit_code == 2 and "a, b" in ambiguous.stderr


def test_schema_outputs_json_schema(runner: CliRunner) -> None:
    config_schema = json.loads(runner.invoke(app, ["schema", "config"]).stdout)
    assert {"galleries", "require_integrity", "backends_path"} <= set(config_schema["properties"])
    index_schema = json.loads(runner.invoke(app, ["schema", "index"]).stdout)
    assert index_schema["type"] == "array" and "uri" in index_schema["items"]["properties"]
    assert runner.invoke(app, ["schema", "nonsense"]).exit_code == 2


def test_doctor(invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path) -> None:
    index = tmp_path / "i.yaml"
    index.write_text('- {name: a, uri: "quay.io/x/a:1"}\n')
    healthy = invoke(make_config(galleries=[{"name": "g", "url": str(index)}]), "doctor", "--json")
    assert healthy.exit_code == 0 and healthy.json()["ok"] is True
    broken = invoke(
        make_config(
            galleries=[{"name": "g", "url": str(index)}],
            trusted_root="missing_root.json",
            require_integrity=True,
        ),
        "doctor",
    )
    assert broken.exit_code == 2
    assert "cannot read" in broken.stdout and "strict mode refuses" in broken.stdout


def test_debug_shows_the_traceback(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "--config", str(tmp_path / "absent.yaml"), "list"])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ConfigError"


def test_hostile_index_text_cannot_drive_the_terminal(
    invoke: Invoke, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    index = tmp_path / "i.yaml"
    index.write_text(
        '- name: a\n  uri: "quay.io/x/a:1"\n  version: "1\\e]0;pwned\\a\\e[2J"\n'
        '  description: "[red]markup[/red] \\e[31mred\\rover"\n'
    )
    result = invoke(make_config(galleries=[{"name": "g", "url": str(index)}]), "show", "a")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert "[red]markup[/red]" in result.stdout


def test_errors_are_one_line_with_the_next_step(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(tmp_path / "absent.yaml", "list")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read config" in lines[0] and "next: pass --config" in lines[0]
