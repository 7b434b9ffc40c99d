"""The sigstore-conformance ``bundle-verify`` cases, driven through ``gallery verify-bundle``.

Source: https://github.com/sigstore/sigstore-conformance (``test/assets/bundle-verify``, commit
a73de49, Apache-2.0), vendored under ``tests/assets/sigstore-conformance`` with its licence. Each
case runs twice, as the suite itself does: with the artifact's path and with its digest. A case
whose name ends in ``_fail`` must be refused (exit 3), every other one must verify (exit 0).

The conformance protocol fixes no in-toto predicate, so DSSE cases run with
``--predicate-type any``; the installer itself accepts only cosign's signature predicate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

CASES = Path(__file__).parent / "assets" / "sigstore-conformance" / "bundle-verify"
IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"
SIGSTORE_PYTHON_XFAIL = (
    "https://github.com/sigstore/sigstore-conformance/blob/a73de49/.github/workflows/conformance.yml#L44"
)

# Cases whose verdict differs from the suite's, each with the reason; the test asserts today's
# (wrong) verdict, so a fixed sigstore-python or a new feature shows up as a failure to update.
KNOWN_DIFFERENCES: dict[str, str] = {
    "managed-key-happy-path": "key-based verification (key.pub): gallery policies name an identity",
    "managed-key-and-trusted-root": "key-based verification (key.pub): gallery policies name an identity",
    "intoto-with-custom-trust-root": (
        "sigstore-python 4.5 does not verify Rekor v1 intoto/0.0.2 entries "
        "(https://github.com/sigstore/sigstore-python/issues/1384; xfail in the suite's own run of "
        f"sigstore-python, {SIGSTORE_PYTHON_XFAIL})"
    ),
    "trust-root-tsa-validity-end-inclusive": (
        "sigstore-python 4.5 treats a TSA's validFor.end as exclusive; the suite says TimeRange is "
        "closed (https://github.com/sigstore/sigstore-conformance/pull/406, xfail for sigstore-python)"
    ),
}


# A case whose trusted root itself is unusable: refused before any bundle is read, as an
# operational error (exit 1: the operator's trust configuration is broken, not the signature).
UNUSABLE_ROOT = {"trust-root-tlog-missing-validity-start_fail"}


def _cases() -> list[Path]:
    return sorted(path for path in CASES.iterdir() if path.is_dir())


def _materials(case: Path) -> tuple[Path, str, str, str]:
    artifact = case / "artifact" if (case / "artifact").exists() else CASES / "a.txt"
    identity = (case / "identity").read_text().strip() if (case / "identity").exists() else IDENTITY
    issuer = (case / "issuer").read_text().strip() if (case / "issuer").exists() else ISSUER
    root = case / "trusted_root.json"
    return artifact, identity, issuer, str(root) if root.exists() else "production"


def _verify(case: Path, *, by_digest: bool) -> tuple[int, str]:
    artifact, identity, issuer, root = _materials(case)
    target = ["--digest", "sha256:" + _sha256(artifact)] if by_digest else [str(artifact)]
    result = CliRunner().invoke(app, [
        "verify-bundle", *target, "--bundle", str(case / "bundle.sigstore.json"),
        "--certificate-identity", identity, "--certificate-oidc-issuer", issuer,
        "--trusted-root", root, "--predicate-type", "any", "--json",
    ])  # fmt: skip
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("by_digest", [False, True], ids=["path", "digest"])
@pytest.mark.parametrize("case", _cases(), ids=lambda case: case.name)
def test_conformance_case(case: Path, by_digest: bool) -> None:
    expected = 3 if case.name.endswith("_fail") else 0
    if case.name in KNOWN_DIFFERENCES:
        expected = 0 if expected == 3 else 3
    if case.name in UNUSABLE_ROOT:
        expected = 1
    code, output = _verify(case, by_digest=by_digest)
    assert code == expected, f"{case.name}: exit {code}, expected {expected}\n{output}"
    if code == 0:
        evidence = json.loads(output)
        assert evidence["verified"] is True
        assert evidence["digest"] == "sha256:" + _sha256(_materials(case)[0])
        # Rekor v2 entries have no log time: a timestamp authority vouches for the signing time.
        kinds = {
            entry["kindVersion"]["version"] for entry in _bundle(case)["verificationMaterial"]["tlogEntries"]
        }
        if kinds == {"0.0.2"}:
            assert evidence["time_source"] == "timestamp-authority"
            assert evidence["timestamp_authority"]


def _bundle(case: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((case / "bundle.sigstore.json").read_text())


def test_the_suite_is_all_there() -> None:
    """70 cases at the vendored commit; the known differences are real case names."""
    names = {case.name for case in _cases()}
    assert len(names) == 70
    assert set(KNOWN_DIFFERENCES) | UNUSABLE_ROOT <= names
