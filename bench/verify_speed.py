"""Signature verification time: cold (discovery on a local registry + verification) and cached.

    .venv/bin/python bench/verify_speed.py [--rounds 50]

Starts Debian's docker-registry on 127.0.0.1, pushes an image signed by the local test Sigstore
instance (tests/sigstore_instance.py) the way cosign publishes it, then measures in one run,
interleaved: a cold verification (a fresh verifier: referrers lookup with the tag-schema fallback,
referrer manifest and bundle fetch, sigstore-python verification, policy checks), a cached one
(the same verifier again), and the peer: sigstore-python's verify_dsse alone on the same bundle.
Goals (issue 5): cached under 1 ms, cold under 100 ms. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import LAYER_GZIP, push_signature, running_registry  # noqa: E402
from sigstore.models import Bundle  # noqa: E402
from sigstore_instance import DEFAULT_IDENTITY, GITHUB_ISSUER, SigstoreInstance  # noqa: E402

from gallery.oci.references import parse_reference  # noqa: E402
from gallery.oci.registry import RegistryClient  # noqa: E402
from gallery.verify.bundles import _CertificatePolicy  # noqa: E402
from gallery.verify.discovery import RegistrySignatures  # noqa: E402
from gallery.verify.policy import VerificationPolicy  # noqa: E402
from gallery.verify.roots import TrustRoots  # noqa: E402
from gallery.verify.signatures import SigstoreVerifier  # noqa: E402


def tiny_layer() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"#!/bin/sh\n"
        info = tarfile.TarInfo("run.sh")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    args = parser.parse_args()
    instance = SigstoreInstance()
    policy = VerificationPolicy.model_validate({"issuer": GITHUB_ISSUER, "identity": DEFAULT_IDENTITY})
    with tempfile.TemporaryDirectory() as work, running_registry(Path(work) / "registry") as registry:
        root_path = instance.write_trusted_root(Path(work) / "trusted_root.json")
        digest, _ = registry.push_image("bench/signed", "v1", [(tiny_layer(), LAYER_GZIP)])
        bundle = instance.sign_image(digest)
        push_signature(registry, "bench/signed", digest, bundle)
        client = RegistryClient(httpx.Client(trust_env=False), insecure_registries=frozenset({registry.host}))
        reference = parse_reference(f"{registry.host}/bench/signed:v1")
        source = RegistrySignatures(client, client.endpoint(registry.host), reference, 64, 2 * 1024 * 1024)
        roots = TrustRoots()
        loaded = roots.get(str(root_path))
        cached_verifier = SigstoreVerifier(roots=roots)
        kwargs = {
            "digest": digest,
            "sources": [source],
            "policy": policy,
            "trusted_root": str(root_path),
            "gallery": "b",
        }
        cached_verifier.verify_image(**kwargs)  # type: ignore[arg-type]
        cold, cached, peer = [], [], []
        for _ in range(args.rounds):
            fresh = SigstoreVerifier(roots=roots)  # the trust root stays loaded once per process
            started = time.perf_counter()
            fresh.verify_image(**kwargs)  # type: ignore[arg-type]
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            cached_verifier.verify_image(**kwargs)  # type: ignore[arg-type]
            cached.append(time.perf_counter() - started)
            started = time.perf_counter()
            loaded.verifier.verify_dsse(Bundle.from_json(bundle), _CertificatePolicy(policy))
            peer.append(time.perf_counter() - started)

    def ms(samples: list[float]) -> float:
        return statistics.median(samples) * 1000

    sys.stdout.write(f"rounds: {args.rounds}, median milliseconds\n")
    sys.stdout.write(f"cold (discovery on 127.0.0.1 + verify): {ms(cold):8.3f}   goal < 100\n")
    sys.stdout.write(f"cached:                                  {ms(cached):8.3f}   goal < 1\n")
    sys.stdout.write(f"peer: sigstore-python verify_dsse alone: {ms(peer):8.3f}\n")
    sys.stdout.write(
        f"cold / peer: {ms(cold) / ms(peer):.2f}x   cached / peer: {ms(cached) / ms(peer):.4f}x\n"
    )
    if args.json:
        sys.stdout.write(
            json.dumps({"cold_ms": ms(cold), "cached_ms": ms(cached), "peer_ms": ms(peer)}) + "\n"
        )


if __name__ == "__main__":
    main()
