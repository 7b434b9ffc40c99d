"""Hostile input, round 2, through the real CLI: trees deeper than any recursion, directories
their owner cannot read, times no clock has, a bug in the middle of a batch. Each case ends
with the next command on another backend succeeding.

The non-root cases run the CLI as ``nobody`` with ``setpriv`` (skipped, saying so, when the
tests do not run as root or setpriv is missing).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app

from ..conftest import REPO
from ..registry_server import LAYER_GZIP
from ..tarbuild import gz

sys.path.insert(0, str(REPO / "galleries" / "demo"))
from make_layouts import write_layout

RUN_SH = b"#!/bin/sh\necho ok\n"
NOBODY = 65534


def layer(members: list[tuple[str, bytes | None, int, dict[str, str]]]) -> bytes:
    """A gzip tar layer: (name, data or None for a directory, mode, pax headers)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data, mode, pax in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.pax_headers = mode, 1_700_000_000, pax
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return gz(buffer.getvalue())


def plain(name: str = "run.sh") -> list[tuple[str, bytes | None, int, dict[str, str]]]:
    return [(name, RUN_SH, 0o755, {})]


class Project:
    """A gallery of local layouts and a config, all under one directory."""

    def __init__(self, root: Path, **limits: Any) -> None:
        self.root = root
        self.entries: list[dict[str, str]] = []
        self.limits = limits

    def add(self, name: str, members: list[tuple[str, bytes | None, int, dict[str, str]]]) -> None:
        write_layout(self.root / "layouts" / name, [(layer(members), LAYER_GZIP)])
        self.entries.append({"name": name, "uri": f"ocifile://layouts/{name}"})

    def config(self) -> Path:
        (self.root / "index.yaml").write_text(yaml.safe_dump(self.entries))
        path = self.root / "gallery.yaml"
        path.write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
            "limits": self.limits, "galleries": [{"name": "local", "url": "./index.yaml"}],
        }))  # fmt: skip
        return path

    def gallery(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--config", str(self.config()), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    def leftovers(self) -> list[str]:
        state = self.root / "backends" / ".gallery"
        return sorted(
            str(path.relative_to(state))
            for sub in ("staging", "trash")
            if (state / sub).is_dir()
            for path in (state / sub).iterdir()
        )


def deep(levels: int) -> list[tuple[str, bytes | None, int, dict[str, str]]]:
    """run.sh, then a chain of ``levels`` directories named ``d`` with a file at the bottom."""
    path = "/".join(["d"] * levels)
    return [*plain(), (f"{path}/bottom.txt", b"deep", 0o644, {})]


def another_backend_installs(config: Path) -> None:
    """The next command, on another backend of another gallery, succeeds: whatever the case
    broke stays with its own backend."""
    spare = config.parent / "spare"
    write_layout(spare / "layouts" / "good", [(layer(plain()), LAYER_GZIP)])
    (spare / "index.yaml").write_text(yaml.safe_dump([{"name": "good", "uri": "ocifile://layouts/good"}]))
    document = yaml.safe_load(config.read_text())
    document["galleries"] = [*document["galleries"], {"name": "spare", "url": str(spare / "index.yaml")}]
    config.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["--config", str(config), "install", "spare@good"])
    assert result.exit_code == 0, result.output
    backends = (config.parent / document["backends_path"]).resolve()
    assert (backends / "good" / "run.sh").is_file()


def test_a_tree_deeper_than_max_depth_is_refused_and_the_next_command_works(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.add("deep", deep(1100))  # 2,201 characters: under max_path_length, over max_depth
    project.add("good", plain())
    code, output = project.gallery("install", "deep", "good")
    assert code == 3, output
    assert "limits.max_depth (256)" in output and "good: installed" in output
    assert project.leftovers() == []
    assert project.gallery("list", "--installed")[0] == 0
    assert project.gallery("fsck")[0] == 0


def test_a_tree_as_deep_as_allowed_installs_checks_and_uninstalls(tmp_path: Path) -> None:
    """1,100 levels with max_depth raised: no recursion anywhere (extract, fsync of directories,
    fsck, removal, recovery)."""
    project = Project(tmp_path, max_depth=2000)
    project.add("deep", deep(1100))
    project.add("good", plain())
    assert project.gallery("install", "deep")[0] == 0
    assert project.gallery("fsck")[0] == 0
    assert project.gallery("upgrade", "deep")[0] == 0
    assert project.gallery("uninstall", "deep")[0] == 0
    assert not (tmp_path / "backends" / "deep").exists() and project.leftovers() == []
    assert project.gallery("install", "good")[0] == 0


def test_cache_prune_removes_an_unpacked_bundle_of_any_depth(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.add("good", plain())
    old = tmp_path / "cache" / "bundles" / "old"
    bottom = str(old)
    os.makedirs(bottom)
    for _level in range(1500):  # os.makedirs and Path.mkdir recurse themselves
        bottom += "/d"
        os.mkdir(bottom)
    Path(bottom, "f").write_bytes(b"x" * 10)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    code, output = project.gallery("cache", "prune")
    assert code == 0, output
    assert not old.exists()


@pytest.mark.parametrize("mtime", ["inf", "nan", "1e300", "-1e300"])
def test_an_impossible_pax_mtime_is_refused_and_the_batch_goes_on(tmp_path: Path, mtime: str) -> None:
    project = Project(tmp_path)
    project.add(
        "timeless", [("run.sh", RUN_SH, 0o755, {"mtime": mtime}), ("dir", None, 0o755, {"mtime": mtime})]
    )
    project.add("good", plain())
    code, output = project.gallery("install", "timeless", "good")
    assert code == 3, output
    assert "modification time" in output and "out of range" in output
    assert "good: installed" in output and "Traceback" not in output


def test_a_bug_in_one_backend_is_one_line_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything unexpected becomes an InternalError naming where it happened; the next backend of
    the batch still installs, and the exit code says a backend failed."""
    from gallery.place import extract

    original = extract.TreeBuilder.finish
    calls = {"n": 0}

    def broken_once(self: extract.TreeBuilder) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated bug")
        return original(self)

    monkeypatch.setattr(extract.TreeBuilder, "finish", broken_once)
    project = Project(tmp_path)
    project.add("first", plain())
    project.add("second", plain())
    code, output = project.gallery("install", "first", "second")
    assert code == 1, output
    assert "unexpected RuntimeError at gallery/" in output and "simulated bug" in output
    assert "--debug" in output and "second: installed" in output and "Traceback" not in output
    assert project.leftovers() == []


def test_a_journal_that_cannot_be_recovered_never_stops_another_backend(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.add("good", plain())
    journals = tmp_path / "backends" / ".gallery" / "journal"
    journals.mkdir(parents=True)
    (journals / "wrecked.json").write_bytes(b"\x00not a journal")
    code, output = project.gallery("install", "good")
    assert code == 0, output
    assert "wrecked" in output  # reported, with where it is
    assert project.gallery("list", "--installed")[0] == 0


# -- as the unprivileged owner of backends_path --------------------------------------------------


def _as_nobody(project: Project, *args: str) -> tuple[int, str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    gallery = REPO / ".venv" / "bin" / "gallery"
    done = subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(gallery),
         "--config", str(project.root / "gallery.yaml"), *args],
        capture_output=True, text=True, timeout=120, cwd=project.root,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _chown_tree(root: Path) -> None:
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.chown(Path(directory) / name, NOBODY, NOBODY, follow_symlinks=False)
    os.chown(root, NOBODY, NOBODY)


@pytest.fixture
def nobodys(tmp_path: Path) -> Iterator[Path]:
    """A project directory ``nobody`` can reach (pytest's own tmp is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="gallery-nobody-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base / "p"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_unreadable_directory_in_an_image_installs_checks_and_uninstalls_as_its_owner(
    nobodys: Path,
) -> None:
    project = Project(nobodys)
    project.root.mkdir()
    project.add("sealed", [*plain(), ("vault", None, 0o000, {}), ("vault/secret", b"s", 0o600, {}),
                           ("ro", None, 0o500, {}), ("ro/file", b"r", 0o400, {})])  # fmt: skip
    project.add("good", plain())
    project.config()
    _chown_tree(project.root)
    code, output = _as_nobody(project, "install", "sealed")
    assert code == 0, output
    vault = project.root / "backends" / "sealed" / "vault"
    assert (vault.stat().st_mode & 0o777) == 0o000
    code, output = _as_nobody(project, "fsck")
    assert code == 0 and "Traceback" not in output, output
    assert (vault.stat().st_mode & 0o777) == 0o000, "fsck gave the modes it borrowed back"
    code, output = _as_nobody(project, "uninstall", "sealed")
    assert code == 0, output
    assert not (project.root / "backends" / "sealed").exists()
    assert _as_nobody(project, "install", "good")[0] == 0


def test_recovery_that_breaks_unexpectedly_is_reported_and_contained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a journal problem we foresaw (here: the filesystem refusing mid-recovery): the backend
    is reported with its journal, every other command goes on."""
    from gallery.place import swap

    original = swap.Swapper.recover

    def refuse(self: swap.Swapper, name: str) -> str | None:
        if name != "stuck":
            return original(self, name)
        raise PermissionError(13, "Permission denied", f"backends/.gallery/staging/{name}.x/deep")

    monkeypatch.setattr(swap.Swapper, "recover", refuse)
    project = Project(tmp_path)
    project.add("good", plain())
    journals = tmp_path / "backends" / ".gallery" / "journal"
    journals.mkdir(parents=True)
    (journals / "stuck.json").write_text("{}")
    code, output = project.gallery("install", "good")
    assert code == 0, output
    assert "stuck: cannot recover (PermissionError" in output and "stuck.json is kept" in output


# -- bodies that would not end or would explode, measured in a process of their own ------------


def _cli_peak_rss(config: Path, *args: str) -> tuple[int, str, int]:
    """Run the CLI in a child of a fresh interpreter; (exit code, output, the CLI's peak RSS in
    KiB) — RUSAGE_CHILDREN of that interpreter sees only this one CLI process."""
    gallery = REPO / ".venv" / "bin" / "gallery"
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
        "sys.stdout.write(f'{done.returncode}\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
        "sys.stdout.write(done.stdout + done.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(gallery), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=180, env={"PATH": os.environ.get("PATH", "")})  # fmt: skip
    code, rss, output = done.stdout.split("\n", 2)
    return int(code), output, int(rss)


def test_a_content_encoding_bomb_on_the_index_stays_small(tmp_path: Path) -> None:
    """One 32 KiB zstd frame of a gigabyte of zeros as Content-Encoding: refused, not decoded."""
    import zstandard

    from ..file_server import serving

    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush()
    with serving() as server:
        url = server.publish("/index.yaml", bomb)
        server.headers["/index.yaml"] = {"Content-Encoding": "zstd"}
        config = tmp_path / "gallery.yaml"
        config.write_text(yaml.safe_dump({"format_version": 1, "backends_path": "./b", "cache_path": "./c",
                                          "galleries": [{"name": "g", "url": url}]}))  # fmt: skip
        code, output, rss = _cli_peak_rss(config, "list")
    assert code != 0 and "Content-Encoding 'zstd'" in output, output
    assert rss < 200 * 1024, f"peak RSS {rss} KiB"
    another_backend_installs(config)


def _registry_project(tmp_path: Path, uri: str, host: str) -> Path:
    """A gallery of one entry ``t`` at ``uri``, on an insecure (plain HTTP) registry ``host``."""
    (tmp_path / "index.yaml").write_text(yaml.safe_dump([{"name": "t", "uri": uri}]))
    config = tmp_path / "gallery.yaml"
    config.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
        "insecure_registries": [host], "galleries": [{"name": "g", "url": "./index.yaml"}],
    }))  # fmt: skip
    return config


def test_an_endless_bearer_token_stays_small(tmp_path: Path) -> None:
    """The token service answers with a body that never ends: read up to its cap, refused."""
    from .server import REPO as IMAGE
    from .server import endless, hostile_registry

    with hostile_registry() as registry:
        registry.image()
        registry.challenge = f'Bearer realm="http://{registry.host}/token",service="hostile"'
        registry.authorization = "Bearer never"
        registry.overrides["/token"] = endless()
        config = _registry_project(tmp_path, f"{registry.host}/{IMAGE}:v1", registry.host)
        code, output, rss = _cli_peak_rss(config, "install", "t")
    assert code != 0 and "token size limit" in output, output
    assert rss < 200 * 1024, f"peak RSS {rss} KiB"
    another_backend_installs(config)


# -- tarballs: a dropped download, two processes at once -----------------------------------------


def _tarball_project(tmp_path: Path, server: Any, entries: list[dict[str, Any]]) -> Path:
    (tmp_path / "index.yaml").write_text(yaml.safe_dump(entries))
    config = tmp_path / "gallery.yaml"
    config.write_text(yaml.safe_dump({
        "format_version": 1, "backends_path": "./backends", "cache_path": "./cache", "capability": "default",
        "galleries": [{"name": "g", "url": "./index.yaml"}],
    }))  # fmt: skip
    return config


def test_a_download_dropped_half_way_never_poisons_a_good_mirror(tmp_path: Path) -> None:
    """The primary hangs up half-way (its partial stays behind); the mirror's download starts
    afresh instead of appending to it, so the sha256 matches — this time and every time."""
    import hashlib

    from ..file_server import serving

    tarball = gz(tar_bytes_of({"run.sh": RUN_SH, "lib/big.bin": os.urandom(256 * 1024)}))
    with serving() as server:
        primary = server.publish("/primary/b.tar.gz", tarball)
        mirror = server.publish("/mirror/b.tar.gz", tarball)
        server.cut_after["/primary/b.tar.gz"] = len(tarball) // 2
        entry = {
            "name": "b",
            "uri": primary,
            "mirrors": [mirror],
            "sha256": hashlib.sha256(tarball).hexdigest(),
        }
        config = _tarball_project(tmp_path, server, [entry])
        for _attempt in range(2):
            result = CliRunner().invoke(app, ["--config", str(config), "install", "b"])
            assert result.exit_code == 0, result.output
            CliRunner().invoke(app, ["--config", str(config), "uninstall", "b"])
            shutil.rmtree(tmp_path / "cache" / "blobs", ignore_errors=True)  # fetch again next time
        another_backend_installs(config)


def test_two_processes_installing_one_tarball_both_succeed(tmp_path: Path) -> None:
    """Same URL and sha256 into one cache at once (the per-blob lock): both installs succeed;
    and preload of two entries sharing the tarball with --jobs 2 too."""
    import hashlib

    from ..file_server import serving

    tarball = gz(tar_bytes_of({"run.sh": RUN_SH, "lib/big.bin": os.urandom(2 * 1024 * 1024)}))
    with serving() as server:
        url = server.publish("/b.tar.gz", tarball)
        sha = hashlib.sha256(tarball).hexdigest()
        config = _tarball_project(tmp_path, server, [{"name": "a", "uri": url, "sha256": sha},
                                                     {"name": "b", "uri": url, "sha256": sha}])  # fmt: skip
        gallery = str(REPO / ".venv" / "bin" / "gallery")
        env = {"PATH": os.environ.get("PATH", "")}
        runs = [subprocess.Popen([gallery, "--config", str(config), "install", name], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env) for name in ("a", "b")]  # fmt: skip
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        for name in ("a", "b"):
            assert (
                subprocess.run([gallery, "--config", str(config), "uninstall", name], env=env).returncode == 0
            )
        shutil.rmtree(tmp_path / "cache")
        done = subprocess.run([gallery, "--config", str(config), "preload", "a", "b", "--jobs", "2"],
                              capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
        another_backend_installs(config)


def tar_bytes_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_transient_failures_of_an_index_and_a_tarball_are_retried_and_counted(tmp_path: Path) -> None:
    """503 twice on the index and on the tarball: both retried (no mirror needed), and the
    tarball's download is reported in bytes_fetched."""
    import hashlib

    from ..file_server import serving

    tarball = gz(tar_bytes_of({"run.sh": RUN_SH, "lib/data.bin": os.urandom(64 * 1024)}))
    with serving() as server:
        url = server.publish("/b.tar.gz", tarball)
        index = server.publish("/index.yaml", yaml.safe_dump(
            [{"name": "b", "uri": url, "sha256": hashlib.sha256(tarball).hexdigest()}]).encode())  # fmt: skip
        server.unavailable.update({"/b.tar.gz": 2, "/index.yaml": 2})
        config = tmp_path / "gallery.yaml"
        config.write_text(yaml.safe_dump({"format_version": 1, "backends_path": "./b", "cache_path": "./c",
                                          "capability": "default", "galleries": [{"name": "g", "url": index}]}))  # fmt: skip
        result = CliRunner().invoke(app, ["--config", str(config), "install", "b", "--json"])
    assert result.exit_code == 0, result.output
    (installed,) = json.loads(result.stdout)["results"]
    assert installed["status"] == "installed" and installed["bytes_fetched"] == len(tarball)
    assert server.requests.count("/b.tar.gz") == 3 and server.requests.count("/index.yaml") == 3
    another_backend_installs(config)


def test_when_one_layer_fails_the_others_stop_downloading(tmp_path: Path) -> None:
    """Three layers: one is refused at once (404), two drip slowly. The install fails on the
    first and the slow ones are abandoned, not downloaded to the end."""
    from .server import REPO as IMAGE
    from .server import drip, hostile_registry

    slow = [gz(tar_bytes_of({f"part{i}.bin": os.urandom(4096)})) for i in range(2)]
    bad = gz(tar_bytes_of({"run.sh": RUN_SH}))
    sent: dict[str, int] = {}

    with hostile_registry() as registry:
        _digest, manifest = registry.image([bad, *slow])
        layers = manifest["layers"]
        registry.overrides[registry.path("blobs", layers[0]["digest"])] = lambda request: request.send(404)
        for index, layer in enumerate(layers[1:]):
            registry.overrides[registry.path("blobs", layer["digest"])] = drip(
                slow[index], every=0.005, sent=sent, key=layer["digest"]
            )
        config = _registry_project(tmp_path, f"{registry.host}/{IMAGE}:v1", registry.host)
        result = CliRunner().invoke(app, ["--config", str(config), "install", "t"])
    assert result.exit_code != 0, result.output
    for layer, body in zip(layers[1:], slow, strict=True):
        assert sent.get(layer["digest"], 0) < len(body), "a slow layer was downloaded to the end"
    another_backend_installs(config)


# -- redirects from https down to plain http --------------------------------------------------


def test_an_https_index_or_tarball_redirecting_to_plain_http_is_refused(tmp_path: Path) -> None:
    """Real HTTPS (a test CA given as tls_ca_bundle): the index served directly is used; one
    that redirects to plain http is refused without asking the plain server, and so is a tarball."""
    import hashlib

    from ..file_server import serving, test_authority

    ca, tls = test_authority(tmp_path)
    tarball = gz(tar_bytes_of({"run.sh": RUN_SH}))
    with serving(tls) as secure, serving() as plain:
        plain_url = plain.publish("/b.tar.gz", tarball)
        secure.redirects["/b.tar.gz"] = plain_url
        entries = [
            {"name": "b", "uri": f"{secure.url}/b.tar.gz", "sha256": hashlib.sha256(tarball).hexdigest()}
        ]
        secure.publish("/index.yaml", yaml.safe_dump(entries).encode())
        plain.publish("/index.yaml", yaml.safe_dump(entries).encode())
        secure.redirects["/moved.yaml"] = f"{plain.url}/index.yaml"
        config = tmp_path / "gallery.yaml"

        def project(index: str) -> None:
            config.write_text(yaml.safe_dump({
                "format_version": 1, "backends_path": "./b", "cache_path": "./c", "capability": "default",
                "tls_ca_bundle": str(ca), "galleries": [{"name": "g", "url": f"{secure.url}{index}"}],
            }))  # fmt: skip

        project("/moved.yaml")
        result = CliRunner().invoke(app, ["--config", str(config), "list"])
        assert result.exit_code != 0 and "from https to plain http is refused" in result.output, result.output
        project("/index.yaml")
        result = CliRunner().invoke(app, ["--config", str(config), "install", "b"])
        assert result.exit_code != 0 and "from https to plain http is refused" in result.output, result.output
        assert plain.requests == [], "the plain-http server was never asked"
    another_backend_installs(config)


def test_pin_writes_only_a_digest_it_fetched_and_hashed(tmp_path: Path) -> None:
    """A registry whose HEAD names a digest it cannot serve: nothing is pinned."""
    from .server import REPO, hostile_registry

    with hostile_registry() as lying:
        lying.image()
        claimed = "sha256:" + "ab" * 32

        def head_lies(handler: Any) -> None:
            handler.send(
                200,
                b"",
                {
                    "Docker-Content-Digest": claimed,
                    "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                },
            )

        lying.overrides[lying.path("manifests", "v1")] = head_lies
        (tmp_path / "gallery.yaml").write_text(yaml.safe_dump({
            "format_version": 1, "backends_path": "./b", "cache_path": "./c", "galleries": [],
            "insecure_registries": [lying.host],
        }))  # fmt: skip
        index = tmp_path / "index.yaml"
        original = f"- name: echo\n  uri: {lying.host}/{REPO}:v1\n"
        index.write_text(original)
        result = CliRunner().invoke(
            app,
            [
                "--config",
                str(tmp_path / "gallery.yaml"),
                "checksum",
                str(index),
                "--pin",
                "--write",
                "--json",
            ],
        )
        assert [c["kind"] for c in json.loads(result.stdout)["changes"]] == ["failed"], result.stdout
        assert index.read_text() == original
        assert any(claimed in seen.path for seen in lying.seen if seen.method == "GET")


def test_a_tarball_in_the_cache_installs_offline_for_another_entry(tmp_path: Path) -> None:
    """Two entries share one tarball (same sha256): once it is cached, the second installs with
    the server gone — the cache answers for the sha256 the index gives, no download."""
    import hashlib

    from ..file_server import serving

    tarball = gz(tar_bytes_of({"run.sh": RUN_SH}))
    sha = hashlib.sha256(tarball).hexdigest()
    with serving() as server:
        url = server.publish("/b.tar.gz", tarball)
        config = _tarball_project(tmp_path, server, [{"name": "a", "uri": url, "sha256": sha},
                                                     {"name": "b", "uri": url, "sha256": sha}])  # fmt: skip
        assert CliRunner().invoke(app, ["--config", str(config), "install", "a"]).exit_code == 0
    result = CliRunner().invoke(app, ["--config", str(config), "install", "b", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["bytes_fetched"] == 0
