"""``gallery lint``: real-world-shaped indexes pass clean; each rule fires on its own mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from gallery.operations.lint import lint_index

from .localai_fixture import build_localai_like_index

LIMIT = 16 * 1024 * 1024
SHA = "a" * 64


def lint(text: str) -> list[tuple[str, str | None]]:
    return [(f.level, f.entry) for f in lint_index(text.encode(), max_bytes=LIMIT).findings]


def test_a_localai_shaped_index_reports_nothing_false() -> None:
    fixture = build_localai_like_index()
    report = lint_index(fixture.text.encode(), max_bytes=LIMIT)
    assert report.entries > 100
    # The fixture's only mistakes are its deliberate duplicate names: lint reports exactly those.
    assert {f.entry for f in report.findings} == set(fixture.duplicates), report.findings
    assert all(f.level == "error" and "duplicate" in f.message for f in report.findings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- {name: a, uri: quay.io/x/a:1}\n- {name: m, capabilities: {default: a, nvidia: missing}}\n",
         [("error", "m")]),
        ("- {name: m1, capabilities: {default: m2}}\n- {name: m2, capabilities: {default: a}}\n"
         "- {name: a, uri: quay.io/x/a:1}\n", [("error", "m1")]),
        ("- {name: a, uri: quay.io/x/a:1, alias: x}\n- {name: b, uri: quay.io/x/b:1, alias: x}\n",
         [("error", "x")]),
        ("- {name: a, uri: quay.io/x/a:1, alias: b}\n- {name: b, uri: quay.io/x/b:1}\n", [("warning", "b")]),
        ("- {name: t, uri: 'https://h/t.tgz'}\n", [("warning", "t")]),
        (f"- {{name: t, uri: 'https://h/t.tgz', sha256: {SHA}}}\n", []),
        ("- {name: a, uri: quay.io/x/a:1}\n- {name: a, uri: quay.io/x/b:1}\n", [("error", "a")]),
        ("- {name: ../evil, uri: quay.io/x/a:1}\n", [("error", "../evil")]),
        ("- {name: a, uri: 'gopher://h/a'}\n", [("error", "a")]),
        ("- {name: m, description: nothing}\n", [("error", "m")]),
    ],
)  # fmt: skip
def test_each_rule(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert lint(text) == expected


def test_cli_lint_needs_no_config_and_sets_the_exit_code(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"- {{name: t, uri: 'https://h/t.tgz', sha256: {SHA}}}\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["--config", str(tmp_path / "absent.yaml"), "lint", str(good)])
    assert ok.exit_code == 0 and "0 errors" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: m, capabilities: {default: gone}}\n")
    result = runner.invoke(app, ["lint", str(bad), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["findings"][0]["entry"] == "m"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(9)
    ))  # fmt: skip
    refused = runner.invoke(app, ["lint", str(bomb)])
    assert refused.exit_code == 2 and "error" in refused.stdout
