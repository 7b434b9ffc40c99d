"""The operator's day (issue 20): Ctrl-C that works, lock waits that say who, progress you can
read — on a terminal (a pty), in a log (pipes) and as JSON events — all against the real
registry, through a proxy that slows blob downloads the way a real link does.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.filelocks import backend_lock
from gallery.operations.installer import Installer
from gallery.verify.signatures import SigstoreVerifier

from .faulty_proxy import Faults, faulty_proxy
from .registry_server import LAYER_GZIP, Registry, digest_of
from .tarbuild import file, gz, tar_bytes
from .test_crash import EXPECTED_STEPS, Project, before_and_after, prepare, versions  # noqa: F401
from .test_install import RUN_SH, Env

GALLERY = Path(sys.executable).parent / "gallery"
# A stalled link lasts 120 s (faulty_proxy) and reads time out after 60 s: an exit within 20 s
# can only come from cancelling the blocked read.
STALL_TIMEOUTS = {"connect": 2, "read": 60, "min_speed": 0}
BIG = 6_000_000  # incompressible: through the slow proxy (~0.8 MB/s) it takes several seconds


def big_layer() -> bytes:
    return gz(tar_bytes([file("lib/big.so", random.Random(20).randbytes(BIG))]))


class Slow:
    """An index whose one entry, ``big``, is pulled through a proxy that sleeps before each
    16 KiB chunk of a blob; no verification policy (installs unverified, with a warning)."""

    def __init__(self, tmp: Path, registry: Registry, proxy: str) -> None:
        self.env = Env(tmp, registry)
        self.env.push("v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP), (big_layer(), LAYER_GZIP)])
        host = proxy.removeprefix("http://")
        self.env.entries.append({"name": "big", "uri": f"{host}/{self.env.repo}:v1"})
        self.env.config(insecure_registries=[registry.host, host], timeouts={"connect": 2, "read": 30})
        self.config = tmp / "gallery.yaml"

    faults: Faults

    def argv(self, *args: str) -> list[str]:
        return [str(GALLERY), "--config", str(self.config), *args]


@pytest.fixture
def slow(tmp_path: Path, registry: Registry) -> Iterator[Slow]:
    faults = Faults(slow_blobs=0.02)
    with faulty_proxy(registry.url, faults) as proxy:
        made = Slow(tmp_path, registry, proxy)
        made.faults = faults
        yield made


class Terminal:
    """A child process on a pseudo-terminal, its screen bytes collected as they come."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        master, child_side = pty.openpty()
        self.master = master
        self.process = subprocess.Popen(argv, stdin=child_side, stdout=child_side, stderr=child_side,
                                        cwd=cwd, start_new_session=True)  # fmt: skip
        os.close(child_side)
        self.screen = b""

    def read_until(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            assert time.monotonic() < deadline, f"{pattern!r} never appeared in: {self.text[-2000:]!r}"
            self.pump(0.05)
        return self.text

    def pump(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.screen += os.read(self.master, 65536)
            except OSError:  # the child closed its side
                time.sleep(wait)

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"still running; screen: {self.text[-2000:]!r}"
            self.pump(0.05)
        self.pump(0.1)
        os.close(self.master)
        return self.process.returncode

    @property
    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.screen.decode("utf-8", "replace"))


def test_ctrl_c_stops_the_downloads_at_once_and_says_what_was_left(slow: Slow) -> None:
    term = Terminal(slow.argv("install", "big"), slow.env.tmp)
    # The unverified warning comes before any byte is fetched, then the live line with a rate.
    # (the layers are extracted while they download: the line says extracting, with the bar)
    screen = term.read_until(r"big (downloading|extracting).*(kB|MB)/s")
    warning = screen.index("warning: gallery 'test' has no verification policy")
    assert warning < re.search(r"big (downloading|extracting)", screen).start()
    partial = slow.env.tmp / "cache" / "partial"
    deadline = time.monotonic() + 30
    while not (partial.is_dir() and any(p.stat().st_size for p in partial.iterdir())):
        assert time.monotonic() < deadline
        term.pump(0.05)
    term.process.send_signal(signal.SIGINT)
    code = term.finish(timeout=30)
    time.sleep(0.5)  # anything still streaming would show in the count
    assert code == 130, term.text[-3000:]
    # The rest of the 6 MB layer would have taken seconds more through the proxy: the download
    # stopped instead (how fast is measured by bench/operator.py, not asserted here).
    assert slow.faults.blob_bytes_sent < BIG, slow.faults.blob_bytes_sent
    assert "big: interrupted: nothing was changed; big is not installed" in term.text
    assert "partial downloads are kept in the cache" in term.text
    assert slow.env.visible() == []
    assert any(p.stat().st_size for p in partial.iterdir()), "the partial download is kept for resume"
    fsck = subprocess.run(slow.argv("fsck"), capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0 and re.search(
        r"note +sha256:[0-9a-f]{64}: partial-download: [\d.]+ [kM]B downloaded", fsck.stdout
    ), fsck.stdout
    # ... and the next run resumes it and installs.
    done = subprocess.run(slow.argv("install", "big"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert slow.env.visible() == ["big"]


def test_ctrl_c_on_a_stalled_link_exits_without_waiting_for_the_link(
    tmp_path: Path, registry: Registry
) -> None:
    # The link stops sending in the middle of the big layer, while it is being extracted: the
    # moment an operator reaches for Ctrl-C. Neither the extractor (waiting for bytes) nor the
    # download (blocked in a read, 60 s from its read timeout) may hold the exit.
    faults = Faults(stall_blobs_after=1_000_000)
    with faulty_proxy(registry.url, faults) as proxy:
        env, gallery = _proxied(
            tmp_path, registry, proxy, [gz(tar_bytes([RUN_SH])), big_layer()], STALL_TIMEOUTS
        )
        process = subprocess.Popen([*gallery, "install", "big"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        partial = tmp_path / "cache" / "partial"
        deadline = time.monotonic() + 30
        while not (partial.is_dir() and any(p.stat().st_size >= 1_000_000 for p in partial.iterdir())):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)  # the extractor has caught up and waits for bytes that do not come
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=20)  # the stall lasts 120 s, the read timeout 60 s
        finally:
            faults.released.set()
            process.kill()
    assert process.returncode == 130, stderr
    assert "big: interrupted: nothing was changed; big is not installed" in stderr
    assert env.visible() == []


def test_ctrl_c_while_waiting_for_a_lock_and_the_wait_says_who_holds_it(slow: Slow) -> None:
    state = slow.env.tmp / "backends" / ".gallery"
    with backend_lock(state, "big", timeout=1, operation="upgrade"):
        term = Terminal(slow.argv("install", "big"), slow.env.tmp)
        screen = term.read_until(r"big waiting")
        assert re.search(
            rf"pid {os.getpid()} \(upgrade\) for \d+ s holds the lock; waiting up to 600 s", screen
        )
        term.process.send_signal(signal.SIGINT)
        assert term.finish(timeout=30) == 130
    assert "big: interrupted: nothing was changed" in term.text


def test_a_lock_timeout_names_the_holder(slow: Slow) -> None:
    state = slow.env.tmp / "backends" / ".gallery"
    config = yaml.safe_load(slow.config.read_text())
    config["timeouts"]["lock"] = 1
    slow.config.write_text(yaml.safe_dump(config))
    with backend_lock(state, "big", timeout=1, operation="install"):
        done = subprocess.run(slow.argv("install", "big"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert re.search(rf"changing big \(pid {os.getpid()} \(install\) for \d+ s\) .*waited 1 s", done.stderr)
    assert "big: waiting" in done.stderr and "waiting up to 1 s" in done.stderr


def test_not_on_a_terminal_one_line_per_phase_and_each_result_when_known(
    tmp_path: Path, registry: Registry
) -> None:
    env = Env(tmp_path, registry)
    env.push("v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP), (big_layer(), LAYER_GZIP)])
    env.push("small", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries += [{"name": "big", "uri": env.ref("v1")}, {"name": "small", "uri": env.ref("small")}]
    env.config()
    argv = [str(GALLERY), "--config", str(tmp_path / "gallery.yaml"), "install", "big", "small"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    big = [line for line in lines if line.startswith("big: ")]
    phases = [line.split()[1] for line in big if not line.startswith("big: downloaded ")]
    assert phases == ["resolving", "verifying", "downloading", "extracting", "swapping"], lines
    assert re.fullmatch(r"big: downloading 6\.0 MB \(2 of 2 blobs\)", big[2])
    assert [
        line for line in big if re.fullmatch(r"big: downloaded 6\.0 MB in [\d.]+ s \([\d.]+ [kMG]B/s\)", line)
    ]
    assert sum("warning: gallery 'test' has no verification policy" in line for line in lines) == 2
    assert re.fullmatch(r"big: installed sha256:[0-9a-f]{64}, unverified, 6\.0 MB fetched in [\d.]+ s\n"
                        r"small: installed sha256:[0-9a-f]{64}, unverified\n",  # its one layer: big's
                        done.stdout)  # fmt: skip


def test_json_progress_events_one_object_per_line(tmp_path: Path, registry: Registry) -> None:
    env = Env(tmp_path, registry)
    env.push("v1", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP), (big_layer(), LAYER_GZIP)])
    env.entries.append({"name": "big", "uri": env.ref("v1")})
    env.config()
    argv = [str(GALLERY), "--json", "--config", str(tmp_path / "gallery.yaml"), "install", "big"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every line is an object
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["resolving", "verifying", "unverified", "downloading", "extracting", "extracting",
                      "swapping", "done"]  # fmt: skip
    downloading = next(e for e in events if e.get("phase") == "downloading")
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["bytes"] == progress[-1]["total"] == downloading["total"]
    assert [e["status"] for e in events if e["event"] == "result"] == ["installed"]
    assert json.loads(done.stdout)["results"][0]["status"] == "installed"  # stdout: the one document


def install_small(
    tmp_path: Path, registry: Registry, *flags: str
) -> tuple[Env, subprocess.CompletedProcess[str]]:
    """``gallery install small`` (one tiny layer, no policy) with ``flags`` after the command."""
    env = Env(tmp_path, registry)
    env.push("small", [(gz(tar_bytes([RUN_SH])), LAYER_GZIP)])
    env.entries.append({"name": "small", "uri": env.ref("small")})
    env.config()
    argv = [str(GALLERY), "--config", str(tmp_path / "gallery.yaml"), "install", "small", *flags]
    return env, subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_quiet_prints_only_the_results(tmp_path: Path, registry: Registry) -> None:
    _, done = install_small(tmp_path, registry, "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("small: installed sha256:")


def test_verbose_logs_every_request_without_queries_or_credentials(
    tmp_path: Path, registry: Registry
) -> None:
    env, done = install_small(tmp_path, registry, "-v")  # a global option after the command
    assert done.returncode == 0, done.stderr
    requests = [line for line in done.stderr.splitlines() if line.startswith("http: ")]
    assert any(re.fullmatch(rf"http: GET http://{re.escape(registry.host)}/v2/{env.repo}/blobs/sha256:[0-9a-f]{{64}} "
                            r"-> 200 \(\d+ ms, \d+ bytes\)", line) for line in requests), requests  # fmt: skip
    assert any("/manifests/small -> 200" in line for line in requests), requests


# -- Ctrl-C at every swap step: the swap completes first, never a half state -------------------


class _InterruptAt:
    def __init__(self, step: str) -> None:
        self.step, self.reached = step, False

    def __call__(self, reached: str) -> None:
        if reached == self.step:
            self.reached = True
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers, at exactly this point


@pytest.mark.parametrize(
    ("op", "step"), [(op, step) for op, steps in EXPECTED_STEPS.items() for step in steps]
)
def test_ctrl_c_at_every_swap_step_completes_the_swap_first(
    tmp_path: Path,
    versions: dict[str, Any],  # noqa: F811
    op: str,
    step: str,
) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    project = Project(tmp_path)
    prepare(project, op)
    if op == "upgrade":
        project.offer("v2")
    before, after = before_and_after(op, versions)
    hook = _InterruptAt(step)
    with httpx.Client(trust_env=False) as client:
        installer = Installer(load_config(project.config), client=client, verifier=SigstoreVerifier(),
                              detector=lambda: HostFacts("linux", "amd64"), step=hook)  # fmt: skip
        if op == "rollback":  # one operation, not a batch: the interrupt reaches the caller
            with pytest.raises(KeyboardInterrupt):
                installer.rollback("b")
            code = 130
        else:
            batch = {
                "install": installer.install,
                "upgrade": installer.upgrade,
                "uninstall": installer.uninstall,
            }[op](["b"])
            code = batch.exit_code
            assert batch.results[0].status == "interrupted"
    assert hook.reached and code == 130
    # Before the transaction began (the staged copy flushed), nothing changed; from the journal
    # on, the swap ran to its end before the interrupt was let through. No recovery was needed.
    expected = before if step == "synced" else after
    assert project.live() == expected
    project.assert_settled()


# -- streaming: layers are extracted while they download (issue 21) ------------------------------


def _proxied(
    tmp_path: Path,
    registry: Registry,
    proxy: str,
    layers: list[bytes],
    timeouts: dict[str, float] | None = None,
) -> tuple[Env, list[str]]:
    env = Env(tmp_path, registry)
    env.push("v1", [(data, LAYER_GZIP) for data in layers])
    host = proxy.removeprefix("http://")
    env.entries.append({"name": "big", "uri": f"{host}/{env.repo}:v1"})
    env.config(insecure_registries=[registry.host, host], timeouts=timeouts or {"connect": 2, "read": 30})
    return env, [str(GALLERY), "--config", str(tmp_path / "gallery.yaml")]


def _installed_files(env: Env) -> dict[str, str]:
    metadata = json.loads((env.backends / "big" / "metadata.json").read_text())
    return {f["path"]: f.get("sha256", "") for f in metadata["files"]}


def test_a_layer_is_extracted_while_it_downloads(tmp_path: Path, registry: Registry) -> None:
    with faulty_proxy(registry.url, Faults(slow_blobs=0.02)) as proxy:
        _, gallery = _proxied(tmp_path, registry, proxy, [gz(tar_bytes([RUN_SH])), big_layer()])
        done = subprocess.run(
            [*gallery, "--json", "install", "big"], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    second = next(i for i, e in enumerate(events) if e.get("detail", "").startswith("layer 2 of 2"))
    last_bytes = max(i for i, e in enumerate(events) if e["event"] == "progress")
    complete = next(i for i, e in enumerate(events) if e["event"] == "progress" and e["bytes"] == e["total"])
    # The big layer's extraction began seconds before its last byte arrived.
    assert second < complete <= last_bytes, events


def test_a_dropped_connection_resumes_under_the_extractor(tmp_path: Path, registry: Registry) -> None:
    layers = [gz(tar_bytes([RUN_SH])), big_layer()]
    faults = Faults(drop_blob_after=2_500_000, slow_blobs=0.001)
    with faulty_proxy(registry.url, faults) as proxy:
        env, gallery = _proxied(tmp_path, registry, proxy, layers)
        done = subprocess.run(
            [*gallery, "--json", "install", "big"], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert [rng for _, path, rng in faults.seen if "/blobs/" in path and rng] == ["bytes=2500000-"]
    result = json.loads(done.stdout)["results"][0]
    # Resumed with Range, not fetched again from the start: each byte came once.
    assert result["bytes_fetched"] == sum(len(data) for data in layers)
    expected = hashlib.sha256(random.Random(20).randbytes(BIG)).hexdigest()
    assert _installed_files(env)["lib/big.so"] == expected


def test_a_server_ignoring_range_makes_the_extraction_start_again(tmp_path: Path, registry: Registry) -> None:
    layers = [gz(tar_bytes([RUN_SH])), big_layer()]
    faults = Faults(drop_blob_after=2_500_000, slow_blobs=0.001, ignore_range=True)
    with faulty_proxy(registry.url, faults) as proxy:
        env, gallery = _proxied(tmp_path, registry, proxy, layers)
        done = subprocess.run(
            [*gallery, "--json", "install", "big"], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    # The bytes before the drop were received, then the whole blob again: what the extractor had
    # read no longer counted, and it extracted again from the cache.
    assert json.loads(done.stdout)["results"][0]["bytes_fetched"] >= sum(len(d) for d in layers) + 2_000_000
    ranged = [rng for method, path, rng in faults.seen if method == "GET" and "/blobs/" in path and rng]
    assert ranged, "the client did ask to resume"
    expected = hashlib.sha256(random.Random(20).randbytes(BIG)).hexdigest()
    assert _installed_files(env)["lib/big.so"] == expected
    assert not any((env.backends / ".gallery" / "staging").iterdir())


def test_one_failed_layer_stops_the_others_at_once(tmp_path: Path, registry: Registry) -> None:
    missing = gz(tar_bytes([file("lib/gone.so", b"x" * 1000)]))
    faults = Faults(slow_blobs=0.02)
    with faulty_proxy(registry.url, faults) as proxy:
        env, gallery = _proxied(tmp_path, registry, proxy, [big_layer(), missing])
        registry.blob_data_path(digest_of(missing)).unlink()
        done = subprocess.run([*gallery, "install", "big"], capture_output=True, text=True, timeout=120)
        time.sleep(0.5)  # anything still streaming would show in the count
        sent = faults.blob_bytes_sent
    assert done.returncode != 0 and digest_of(missing) in done.stderr, done.stderr
    # The other layer's download stopped at once instead of running to its 6 MB end.
    assert sent < BIG / 2, sent
    assert env.visible() == []


def test_one_failed_layer_stops_a_stalled_one_without_waiting_for_its_timeout(
    tmp_path: Path, registry: Registry
) -> None:
    missing = gz(tar_bytes([file("lib/gone.so", b"x" * 1000)]))
    faults = Faults(stall_blobs_after=500_000)
    with faulty_proxy(registry.url, faults) as proxy:
        env, gallery = _proxied(tmp_path, registry, proxy, [big_layer(), missing], STALL_TIMEOUTS)
        registry.blob_data_path(digest_of(missing)).unlink()
        try:
            # The stall lasts 120 s and the read timeout is 60 s: only cancelling the stalled
            # read lets the failure be reported within the 20 s.
            done = subprocess.run([*gallery, "install", "big"], capture_output=True, text=True, timeout=20)
        finally:
            faults.released.set()
    assert done.returncode != 0 and digest_of(missing) in done.stderr, done.stderr
    assert env.visible() == []
