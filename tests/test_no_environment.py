"""The library reads no environment, proven at run time rather than by a text scan.

``os.environ`` is replaced by a mapping that raises on any access, HOME is unset, and the commands
run against a real HTTP server on 127.0.0.1 and real files; afterwards nothing may have been
written outside the configured roots. A text scan would miss ``Path.home()``, ``expanduser``,
``ssl.create_default_context()`` (which reads SSLKEYLOGFILE) and every third-party read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from gallery.catalog.capability import detect_host_facts
from gallery.config.models import load_config
from gallery.net.client import make_http_client
from gallery.operations.fleet import lock_backends, preload
from gallery.operations.fsck import scan
from gallery.operations.installer import Installer
from gallery.operations.lockfile import read_lock, write_lock
from gallery.operations.prune import prune_cache
from gallery.operations.queries import list_entries, run_doctor, show_backend
from gallery.verify.signatures import SigstoreVerifier

from .conftest import REPO
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .test_index_fetch import http_server  # noqa: F401  (fixture)

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import demo_layer, write_layout


class EnvironmentRead(AssertionError):
    pass


class RaisingEnviron(MutableMapping[str, str]):
    """Any access raises, except keys in ``tolerated``, which live in a private dict."""

    def __init__(self, tolerated: frozenset[str] = frozenset()) -> None:
        self.tolerated = tolerated
        self.own: dict[str, str] = {}
        self.reads: list[str] = []

    def _refuse(self, what: str) -> EnvironmentRead:
        return EnvironmentRead(f"the environment was accessed: {what}")

    def __getitem__(self, key: str) -> str:
        if key in self.tolerated:
            return self.own[key]
        raise self._refuse(f"read {key!r}")

    def __setitem__(self, key: str, value: str) -> None:
        if key in self.tolerated:
            self.own[key] = value
            return
        raise self._refuse(f"write {key!r}")

    def __delitem__(self, key: str) -> None:
        if key in self.tolerated:
            del self.own[key]
            return
        raise self._refuse(f"delete {key!r}")

    def __iter__(self) -> Iterator[str]:
        raise self._refuse("iteration")

    def __len__(self) -> int:
        raise self._refuse("len")

    def copy(self) -> dict[str, str]:
        raise self._refuse("copy")


@pytest.fixture
def project(tmp_path: Path, http_server: str) -> Path:  # noqa: F811
    """A config whose gallery comes over HTTP from 127.0.0.1, with a local mirror file whose
    entries install from an OCI layout beside it."""
    (tmp_path / "mirror.yaml").write_text(
        '- {name: m, capabilities: {default: a}}\n- {name: a, uri: "ocifile://layouts/a"}\n'
    )
    for name, flavour in (("a", "cpu"), ("a2", "cuda")):
        write_layout(
            tmp_path / "layouts" / name,
            [(demo_layer(flavour), "application/vnd.oci.image.layer.v1.tar+gzip")],
        )
    # A third gallery whose index and image are signed, so that every command also verifies an
    # index signature (and install s, an image signature) with the environment forbidden.
    instance = SigstoreInstance()
    (tmp_path / "trust").mkdir()
    instance.write_trusted_root(tmp_path / "trust" / "trusted_root.json")
    write_layout(tmp_path / "layouts" / "s", [(demo_layer("cpu"), "application/vnd.oci.image.layer.v1.tar+gzip")],
                 sign=instance.sign_image)  # fmt: skip
    signed = b'- {name: s, uri: "ocifile://layouts/s"}\n'
    (tmp_path / "signed.yaml").write_bytes(signed)
    (tmp_path / "signed.yaml.sigstore.json").write_bytes(instance.sign_blob(signed))
    (tmp_path / "gallery.yaml").write_text(
        "format_version: 1\n"
        "backends_path: ./roots/backends\n"
        "cache_path: ./roots/cache\n"
        "capability: auto\n"
        "galleries:\n"
        f"  - name: web\n    url: {http_server}/index.yaml\n"
        "  - name: local\n    url: ./missing.yaml\n    mirrors: [./mirror.yaml]\n"
        "  - name: signed\n    url: ./signed.yaml\n    require_signed_index: true\n"
        "    trusted_root: ./trust/trusted_root.json\n"
        f"    verification: {{issuer: {GITHUB_ISSUER}, identity: '{DEFAULT_IDENTITY}'}}\n"
    )
    return tmp_path


def offer_new_version(project: Path) -> None:
    """The local gallery now offers another image for ``a`` (written by the fixture)."""
    mirror = project / "mirror.yaml"
    mirror.write_text(mirror.read_text().replace("layouts/a", "layouts/a2"))


def snapshot(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@contextmanager
def forbidden_environment(tolerated: frozenset[str] = frozenset()) -> Iterator[RaisingEnviron]:
    """Swap ``os.environ`` only for the body: pytest itself uses the environment between phases."""
    real = os.environ
    environ = RaisingEnviron(tolerated)
    os.environ = environ  # type: ignore[assignment]
    try:
        yield environ
    finally:
        os.environ = real


Forbid = Callable[..., AbstractContextManager[RaisingEnviron]]


@pytest.fixture
def no_environment(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> Callable[..., AbstractContextManager[RaisingEnviron]]:
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.chdir(project)
    return forbidden_environment


def test_raising_environ_really_raises(no_environment: Forbid) -> None:
    with no_environment(), pytest.raises(EnvironmentRead):
        os.getenv("HOME")
    with no_environment(), pytest.raises(EnvironmentRead):
        Path.home()
    with no_environment(), pytest.raises(EnvironmentRead):
        import ssl

        ssl.create_default_context()


def test_library_commands_read_no_environment(project: Path, no_environment: Forbid) -> None:
    before = snapshot(project)
    with no_environment():  # nothing tolerated: any access fails the test
        config = load_config(project / "gallery.yaml")
        with make_http_client(config) as client:
            listed = list_entries(config, client=client)
            shown = show_backend(config, "m", client=client, detector=detect_host_facts)
            report = run_doctor(config, client=client, detector=detect_host_facts)
            installer = Installer(
                config, client=client, verifier=SigstoreVerifier(), detector=detect_host_facts
            )
            installed = installer.install(["m", "m"])
            listed_installed = [b.name for b in installer.installed()]
            offer_new_version(project)
            upgrader = Installer(
                config, client=client, verifier=SigstoreVerifier(), detector=detect_host_facts
            )
            upgraded = upgrader.upgrade([], all_installed=True)
            rolled = upgrader.rollback("a")
            checked = scan(config, repair=True)
            pruned = prune_cache(config)
            recovered = upgrader.recover()
            removed = upgrader.uninstall(["m"])
            locked = lock_backends(config, ["m"], make_installer=lambda c: Installer(
                c, client=client, verifier=SigstoreVerifier(), detector=detect_host_facts))  # fmt: skip
            write_lock(project / "roots" / "gallery.lock", locked.lock)
            preloaded = preload(upgrader, lock=read_lock(project / "roots" / "gallery.lock"), jobs=2)
    assert [row.entry.name for row in listed.rows] == ["a", "m", "a", "s"]
    assert shown.entry.name == "a" and shown.gallery == "local" and shown.capability is not None
    assert report.exit_code == 0
    assert [r.status for r in installed.results] == ["installed", "unchanged"], installed.results[0].error
    assert listed_installed == ["a", "m"] and removed.exit_code == 0
    assert [r.status for r in upgraded.results] == ["upgraded"], upgraded.results[0].error
    assert rolled.status == "rolled-back" and checked.exit_code == 0 and not recovered.actions
    assert pruned.kept == 1
    assert locked.exit_code == 0 and [r.status for r in preloaded.results] == ["installed"]
    written = snapshot(project) - before
    roots = project / "roots"
    assert written, "the index fetcher saves last good copies under cache_path"
    assert all(path == roots or roots in path.parents for path in written), sorted(written)


# Typer builds pydantic adapters for its own parameters lazily and switches pydantic's plugin
# loading off around them by setting and restoring this variable. It is the CLI framework's own
# bookkeeping, not configuration; every other access still fails the test.
TYPER_INTERNAL = frozenset({"PYDANTIC_DISABLE_PLUGINS"})


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--json"],
        ["show", "m"],
        ["show", "local@m", "--json"],
        ["doctor"],
        ["doctor", "--json"],
        ["--require-integrity", "show", "a"],
        ["schema", "config"],
        ["install", "m"],
        ["install", "local@a", "--json"],
        ["install", "s"],
        ["list", "--installed"],
        ["upgrade", "--all"],
        ["fsck"],
        ["cache", "prune"],
        ["lint", "mirror.yaml"],
        ["checksum", "mirror.yaml", "--pin"],
    ],
)
def test_cli_commands_read_no_environment(project: Path, no_environment: Forbid, command: list[str]) -> None:
    runner = CliRunner()
    before = snapshot(project)
    with no_environment(TYPER_INTERNAL) as environ:
        result = runner.invoke(app, ["--config", str(project / "gallery.yaml"), *command])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    assert environ.own == {}, "the tolerated key was restored"
    roots = project / "roots"
    assert all(path == roots or roots in path.parents for path in snapshot(project) - before)


def test_cli_upgrade_rollback_fsck_read_no_environment(project: Path, no_environment: Forbid) -> None:
    runner = CliRunner()
    config = ["--config", str(project / "gallery.yaml")]
    before = snapshot(project)
    assert runner.invoke(app, [*config, "install", "m"]).exit_code == 0
    offer_new_version(project)
    lock = str(project / "roots" / "gallery.lock")
    sequence = [["upgrade", "m"], ["rollback", "a"], ["upgrade", "--all", "--dry-run"], ["fsck", "--repair"],
                ["cache", "prune"], ["uninstall", "m"], ["lock", "m", "-o", lock], ["preload", "--lock", lock],
                ["preload", "m", "--jobs", "2", "--json"], ["schema", "lock"]]  # fmt: skip
    for command in sequence:
        with no_environment(TYPER_INTERNAL):
            result = runner.invoke(app, [*config, *command])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, (command, result.stderr)
    roots = project / "roots"
    written = snapshot(project) - before
    assert all(path == roots or roots in path.parents for path in written), sorted(written)
