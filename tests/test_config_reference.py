"""docs/config-reference.md is what the config models say (regenerate: gallery schema config --markdown)."""

from __future__ import annotations

from gallery.config.models import Config
from gallery.config.reference_doc import config_reference

from .conftest import REPO


def test_the_config_reference_is_current() -> None:
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == config_reference(), (
        "docs/config-reference.md is stale: .venv/bin/gallery schema config --markdown > docs/config-reference.md"
    )


def test_every_config_key_is_documented() -> None:
    reference = config_reference()
    for name, field in Config.model_fields.items():
        assert f"| `{name}` |" in reference
        assert field.description, f"{name} has no docstring"
