"""Many workers on one node behind a pull-through registry mirror, all real processes.

An upstream docker-registry holds five signed backends; a second docker-registry runs in proxy
mode in front of it (distribution 2.8's pull-through cache); a counting proxy in front of the
mirror sees every request. Four `gallery preload --lock` processes share one cache and one
backends directory: each layer blob is requested from the mirror once, every backend ends up
installed and verified. A worker killed mid-way leaves nothing the others or the next run trip
over. With the mirror down, the upstream is used.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from gallery.config.models import load_config
from gallery.operations.fleet import lock_backends
from gallery.operations.lockfile import write_lock

from .faulty_proxy import Faults, faulty_proxy
from .registry_server import LAYER_GZIP, OCI_INDEX, Registry, digest_of, push_signature, running_registry
from .sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance
from .tarbuild import file, gz, tar_bytes
from .test_install import RUN_SH, Env

GALLERY = Path(sys.executable).parent / "gallery"
SHARED = gz(tar_bytes([RUN_SH, file("lib/common.so", b"c" * 300_000)]))


def own_layer(number: int) -> bytes:
    return gz(
        tar_bytes(
            # Incompressible, so a download through the slow mirror takes many chunks (the kill
            # test needs one in progress).
            [
                file(f"lib/b{number}.so", random.Random(number).randbytes(400_000)),
                file("VERSION", str(number).encode()),
            ]
        )
    )


@pytest.fixture(scope="module")
def mirror(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("mirror"), proxy_of=registry.url) as proxy:
        yield proxy


class Node:
    def __init__(self, tmp: Path, upstream: Registry, mirror_host: str) -> None:
        self.tmp = tmp
        env = Env(tmp, upstream)
        sigstore = SigstoreInstance()
        root = sigstore.write_trusted_root(tmp / "trusted_root.json")
        self.layers: list[bytes] = [SHARED]
        for number in range(5):
            data = own_layer(number)
            self.layers.append(data)
            digest, _ = upstream.push_image(
                env.repo, f"b{number}", [(SHARED, LAYER_GZIP), (data, LAYER_GZIP)]
            )
            push_signature(upstream, env.repo, digest, sigstore.sign_image(digest))
            env.entries.append({"name": f"b{number}", "uri": env.ref(f"b{number}")})
        self.config_path = tmp / "gallery.yaml"
        env.config(verification={"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY}, trusted_root=str(root),
                   require_integrity=True, registry_mirrors={upstream.host: [mirror_host]},
                   insecure_registries=[upstream.host, mirror_host], timeouts={"connect": 2, "read": 20})  # fmt: skip
        self.names = [f"b{n}" for n in range(5)]
        self.lock = tmp / "gallery.lock"
        outcome = lock_backends(load_config(self.config_path), self.names, make_installer=env.installer)
        assert outcome.exit_code == 0, [r.error for r in outcome.batch.results]
        write_lock(self.lock, outcome.lock)

    def worker(self, *extra: str, config: Path | None = None) -> subprocess.Popen[str]:
        config = config or self.config_path
        return subprocess.Popen(
            [str(GALLERY), "--config", str(config), "preload", "--lock", str(self.lock), "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def layer_requests(self, faults: Faults) -> Counter[str]:
        wanted = {digest_of(data) for data in self.layers}
        return Counter(
            path.rsplit("/", 1)[-1] for method, path, _ in faults.seen
            if method == "GET" and "/blobs/" in path and path.rsplit("/", 1)[-1] in wanted
        )  # fmt: skip

    def installed(self) -> dict[str, bool]:
        found = {}
        for name in self.names:
            metadata = json.loads((self.tmp / "backends" / name / "metadata.json").read_text())
            found[name] = metadata["verification"]["verified"]
        return found


def test_four_workers_share_one_cache_and_fetch_each_blob_once(
    tmp_path: Path, registry: Registry, mirror: Registry
) -> None:
    faults = Faults()
    with faulty_proxy(mirror.url, faults) as counted_mirror:
        node = Node(tmp_path, registry, counted_mirror)
        faults.seen.clear()
        workers = [node.worker("--jobs", "2") for _ in range(4)]
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:  # drained at once (see below)
            outputs = list(pool.map(lambda w: w.communicate(timeout=180), workers))
    assert [w.returncode for w in workers] == [0, 0, 0, 0], [err for _, err in outputs]
    statuses = Counter(r["status"] for out, _ in outputs for r in json.loads(out)["results"])
    assert statuses["installed"] == 5 and statuses["unchanged"] == 15, statuses
    requests = node.layer_requests(faults)
    assert set(requests) == {digest_of(d) for d in node.layers} and set(requests.values()) == {1}, requests
    assert node.installed() == dict.fromkeys(node.names, True)
    # The signatures came through the mirror too: it serves the referrers tag-schema index.
    fallback_tags = [p for m, p, _ in faults.seen if "/manifests/sha256-" in p]
    assert fallback_tags
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"{mirror.url}{fallback_tags[0]}", headers={"Accept": OCI_INDEX}).status_code == 200


@pytest.mark.timeout(360)  # four CLI processes and a kill; slow on a loaded 2-core CI machine
def test_a_killed_worker_leaves_nothing_the_others_trip_over(
    tmp_path: Path, registry: Registry, mirror: Registry
) -> None:
    faults, slow = Faults(), Faults(slow_blobs=0.02)
    with faulty_proxy(mirror.url, faults) as counted_mirror, faulty_proxy(mirror.url, slow) as slow_mirror:
        node = Node(tmp_path, registry, counted_mirror)
        # The victim shares the node's cache and backends but pulls through a slow mirror, so it
        # is certainly killed mid-download, holding blob and backend locks and partial files.
        victim_config = tmp_path / "victim.yaml"
        victim_config.write_text(node.config_path.read_text().replace(counted_mirror, slow_mirror))
        victim = node.worker("--jobs", "5", config=victim_config)
        deadline = time.monotonic() + 60
        while not any("/blobs/sha256:" in path and method == "GET" for method, path, _ in slow.seen):
            assert time.monotonic() < deadline and victim.poll() is None
            time.sleep(0.02)
        partial = tmp_path / "cache" / "partial"
        while not (partial.is_dir() and any(p.stat().st_size for p in partial.iterdir())):  # bytes written
            assert time.monotonic() < deadline and victim.poll() is None
            time.sleep(0.02)
        victim.kill()
        victim.wait(timeout=30)
        assert list((tmp_path / "cache" / "partial").iterdir()), "killed with a partial download"
        others = [node.worker("--jobs", "2") for _ in range(3)]
        # All three drained at once: one worker waiting for a lock another holds must not also
        # wait for us to read that other worker's pipes (a sequential communicate could).
        with ThreadPoolExecutor(max_workers=3) as pool:
            outputs = list(pool.map(lambda w: w.communicate(timeout=240), others))
    assert [w.returncode for w in others] == [0, 0, 0], [err for _, err in outputs]
    assert node.installed() == dict.fromkeys(node.names, True)
    again = node.worker()
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and {r["status"] for r in json.loads(out)["results"]} == {"unchanged"}, err
    state = tmp_path / "backends" / ".gallery"
    assert not any((state / "staging").iterdir())
    assert not (state / "journal").exists() or not any((state / "journal").iterdir())


def test_mirror_down_falls_back_to_the_upstream(tmp_path: Path, registry: Registry, mirror: Registry) -> None:
    with faulty_proxy(mirror.url, Faults()) as counted_mirror:
        node = Node(tmp_path, registry, counted_mirror)
    # The counting proxy in front of the mirror is gone: the mirror endpoint refuses connections.
    worker = node.worker()
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err
    results = json.loads(out)["results"]
    assert {r["status"] for r in results} == {"installed"} and all(r["verified"] for r in results)
    assert yaml.safe_load(node.config_path.read_text())["registry_mirrors"]


def test_mirror_stopped_mid_download_falls_back_to_the_upstream(
    tmp_path: Path, registry: Registry, mirror: Registry
) -> None:
    faults = Faults(slow_blobs=0.01)
    with faulty_proxy(mirror.url, faults) as dying_mirror:
        node = Node(tmp_path, registry, dying_mirror)
        faults.seen.clear()
        worker = node.worker("--jobs", "1")
        layers = {digest_of(data) for data in node.layers}
        deadline = time.monotonic() + 60
        while not any(path.rsplit("/", 1)[-1] in layers for _, path, _ in faults.seen):
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.01)
        # The mirror dies as soon as it starts sending a layer (it sleeps before each chunk, so
        # that layer is cut short): on a fast or a loaded machine alike, not every layer came from it.
        faults.stopped = True
        out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err
    results = json.loads(out)["results"]
    assert {r["status"] for r in results} == {"installed"} and all(r["verified"] for r in results)
    served_by_mirror = node.layer_requests(faults)
    assert len(served_by_mirror) < len(node.layers), "the rest came from the upstream"
    assert node.installed() == dict.fromkeys(node.names, True)
