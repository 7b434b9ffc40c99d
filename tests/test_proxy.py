"""The configured proxy: every connection through it (plain HTTP forwarded, HTTPS tunnelled with
CONNECT, TLS still checked end to end), none for ``no_proxy`` hosts, nothing from the environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app

from .file_server import serving
from .file_server import test_authority as make_authority
from .forward_proxy import forward_proxy
from .registry_server import LAYER_GZIP, Registry
from .tarbuild import file, gz, tar_bytes

RUN_SH = file("run.sh", b"#!/bin/sh\necho proxied\n", mode=0o755)


def write_config(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump({"format_version": 1, "backends_path": "./b", "cache_path": "./c",
                                    "capability": "default", **fields}))  # fmt: skip
    return path


def test_registry_and_https_index_go_through_the_proxy_with_its_credentials(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # never read: a dead port if it were
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    digest, _ = registry.push_image("proxy/app", "v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    ca, tls = make_authority(tmp_path)
    with serving(tls) as secure, forward_proxy() as (proxy_url, log):
        entries = [{"name": "app", "uri": f"{registry.host}/proxy/app:v1"}]
        secure.publish("/index.yaml", yaml.safe_dump(entries).encode())
        authenticated = proxy_url.replace("http://", "http://ops:pr0xy@")
        config = write_config(tmp_path, proxy=authenticated, tls_ca_bundle=str(ca),
                              insecure_registries=[registry.host],
                              galleries=[{"name": "g", "url": f"{secure.url}/index.yaml"}])  # fmt: skip
        result = CliRunner().invoke(app, ["--config", str(config), "install", "app"])
        assert result.exit_code == 0, result.output
    host = secure.url.removeprefix("https://")
    assert ("CONNECT", host) in log.requests, "the HTTPS index is tunnelled"
    registry_requests = [target for method, target in log.requests if method != "CONNECT"]
    assert any(t.startswith(f"http://{registry.host}/v2/proxy/app/blobs/") for t in registry_requests)
    assert all(t.startswith(f"http://{registry.host}/") for t in registry_requests)
    assert set(log.proxy_auth) == {"Basic b3BzOnByMHh5"}  # ops:pr0xy, to the proxy on every request
    assert (tmp_path / "b/app/run.sh").exists() and digest


def test_no_proxy_hosts_are_reached_directly(tmp_path: Path) -> None:
    tarball = gz(tar_bytes([RUN_SH]))
    with serving() as server, forward_proxy() as (proxy_url, log):
        entries = [{"name": "t", "uri": server.publish("/t.tar.gz", tarball),
                    "sha256": hashlib.sha256(tarball).hexdigest()}]  # fmt: skip
        index = server.publish("/index.yaml", yaml.safe_dump(entries).encode())
        config = write_config(tmp_path, proxy=proxy_url, no_proxy=["127.0.0.1"],
                              galleries=[{"name": "g", "url": index}])  # fmt: skip
        result = CliRunner().invoke(app, ["--config", str(config), "install", "t"])
        assert result.exit_code == 0, result.output
    assert log.requests == [] and "/t.tar.gz" in server.requests


def test_a_proxy_that_is_not_an_http_url_is_a_config_error_that_hides_its_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, proxy="socks5://user:hunter2@proxy:1080")
    result = CliRunner().invoke(app, ["--config", str(config), "list"])
    assert result.exit_code == 2 and "is not http(s)://" in result.output
    assert "hunter2" not in result.output and "***" in result.output
