"""``gallery checksum``: fills in sha256s and pins digests without disturbing the index's shape."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cli.main import app
from gallery.catalog.index import parse_index
from gallery.config.safe_yaml import YamlLimits

from .registry_server import LAYER_GZIP, Registry
from .tarbuild import file, gz, tar_bytes


def gallery(tmp_path: Path, *args: str) -> Any:
    config = tmp_path / "gallery.yaml"
    if not config.exists():
        config.write_text("format_version: 1\nbackends_path: ./b\ncache_path: ./c\ngalleries: []\n")
    return CliRunner().invoke(app, ["--config", str(config), *args])


def entries(path: Path) -> dict[str, dict[str, Any]]:
    parsed = parse_index(path.read_bytes(), limits=YamlLimits(max_bytes=1 << 20), local=True)
    return {e.name: e.known_fields() for e in parsed.entries}


def test_fills_in_sha256_keeping_anchors_merge_keys_and_comments(tmp_path: Path) -> None:
    blobs = {}
    for name in ("a", "c"):
        data = gz(tar_bytes([file("run.sh", name.encode())]))
        (tmp_path / f"{name}.tar.gz").write_bytes(data)
        blobs[name] = hashlib.sha256(data).hexdigest()
    index = tmp_path / "index.yaml"
    index.write_text(
        "# published by the demo team\n"
        "- &base\n"
        '  name: "a"\n'
        f'  uri: "file://{tmp_path}/a.tar.gz"  # the tarball\n'
        "  license: MIT\n"
        "- !!merge <<: *base\n"
        '  name: "b"\n'
        '  description: "inherits the uri of a"\n'
        f'- {{name: c, uri: "file://{tmp_path}/c.tar.gz"}}\n'
    )
    dry = gallery(tmp_path, "checksum", str(index), "--json")
    assert dry.exit_code == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert [(c["entry"], c["kind"]) for c in report["changes"]] == [
        ("a", "sha256 added"), ("b", "sha256 added"), ("c", "sha256 added")
    ]  # fmt: skip
    assert not report["written"] and "sha256:" not in index.read_text()

    assert gallery(tmp_path, "checksum", str(index), "--write").exit_code == 0
    text = index.read_text()
    assert "&base" in text and "<<: *base" in text and "# published by the demo team" in text
    assert f'a.tar.gz"  # the tarball\n  sha256: "{blobs["a"]}"' in text, "comments stay on their line"
    assert text.count("sha256:") == 2  # once in the anchor, once in c
    got = entries(index)
    assert got["a"]["sha256"] == got["b"]["sha256"] == blobs["a"] and got["c"]["sha256"] == blobs["c"]

    again = json.loads(gallery(tmp_path, "checksum", str(index), "--write", "--json").stdout)
    assert {c["kind"] for c in again["changes"]} == {"sha256 ok"} and not again["written"]


def test_a_sha256_that_does_not_match_is_an_integrity_failure(tmp_path: Path) -> None:
    (tmp_path / "t.tar.gz").write_bytes(gz(tar_bytes([file("run.sh", b"x")])))
    index = tmp_path / "index.yaml"
    index.write_text(f'- {{name: t, uri: "file://{tmp_path}/t.tar.gz", sha256: "{"0" * 64}"}}\n')
    before = index.read_bytes()
    result = gallery(tmp_path, "checksum", str(index), "--write")
    assert result.exit_code == 3 and "MISMATCH" in result.stdout and index.read_bytes() == before


def test_pins_oci_uris_to_the_digest_their_tag_has(tmp_path: Path, registry: Registry) -> None:
    digest, _ = registry.push_image(
        "checksum/echo", "v1", [(gz(tar_bytes([file("run.sh", b"x")])), LAYER_GZIP)]
    )
    (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./b", "cache_path": "./c", "galleries": [],
        "insecure_registries": [registry.host],
    }))  # fmt: skip
    index = tmp_path / "index.yaml"
    index.write_text(f"- name: echo\n  uri: {registry.host}/checksum/echo:v1\n  alias: e\n")
    assert gallery(tmp_path, "checksum", str(index), "--pin", "--write").exit_code == 0
    assert entries(index)["echo"]["uri"] == f"{registry.host}/checksum/echo:v1@{digest}"
    again = json.loads(gallery(tmp_path, "checksum", str(index), "--pin", "--json").stdout)
    assert [c["kind"] for c in again["changes"]] == ["already pinned"]
