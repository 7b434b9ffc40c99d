"""``gallery lint INDEX``: what a gallery publisher should fix before publishing an index (pure).

Every entry is validated exactly as the installer reads it (the same models, so the same JSON
Schema ``gallery schema index`` prints), then the rules that span entries are checked:

- errors (the installer skips or refuses): entries that do not validate (bad names, URIs, hash
  formats), duplicate names, meta-backends without capabilities or whose capabilities name missing
  or meta entries, an alias that several entries share with no entry of that name (ambiguous), a
  ``#sha256=`` fragment that disagrees with the entry's ``sha256``;
- warnings (the installer copes, an operator may be surprised): an alias equal to a concrete
  entry's name (the name wins; an alias naming a meta-backend is LocalAI's usual pattern), a
  tarball without ``sha256`` (strict mode refuses it), a capability key mapped to a build that
  cannot run on a host with that capability (LocalAI's name/URI rule, ``incompatibility``).

With ``--signature``, the index's ``sign-blob`` bundle must be over these exact bytes and, given
a policy, signed under it (``lint_signature``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gallery.catalog.capability import incompatibility
from gallery.catalog.index import IndexEntry, parse_index
from gallery.catalog.sources import TarballSource
from gallery.config.models import Limits
from gallery.config.safe_yaml import YamlLimits
from gallery.errors import GalleryError, SignatureError, UsageError
from gallery.files import read_at_most
from gallery.verify.bundles import signed_sha256
from gallery.verify.evidence import Verifier
from gallery.verify.policy import VerificationPolicy

__all__ = ["LintFinding", "LintReport", "describe_refusal", "lint_files", "lint_index", "lint_signature"]

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class LintFinding:
    level: Level
    entry: str | None  # the entry's name, or its position when it has none
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "entry": self.entry, "message": self.message}


@dataclass(frozen=True)
class LintReport:
    entries: int
    findings: tuple[LintFinding, ...]
    signature_refused: bool = False  # the index's signature does not hold: exit 3

    @property
    def exit_code(self) -> int:
        """3 for a signature that does not hold; 2 (index-format error) when anything would be
        skipped or refused; warnings pass."""
        if self.signature_refused:
            return 3
        return 2 if any(f.level == "error" for f in self.findings) else 0

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "findings": [f.to_json() for f in self.findings],
                "exit_code": self.exit_code}  # fmt: skip


def lint_index(data: bytes, *, max_bytes: int) -> LintReport:
    """Lint an index document.

    Raises:
        IndexFormatError: the document as a whole is unusable (not YAML, over a limit, not a list).
    """
    parsed = parse_index(data, limits=YamlLimits(max_bytes=max_bytes), local=True)
    findings = [
        LintFinding("error", problem.name or f"#{problem.position + 1}", str(problem))
        for problem in parsed.problems
    ]
    entries = {entry.name: entry for entry in parsed.entries}
    findings += _meta_backends(parsed.entries, entries)
    findings += _aliases(parsed.entries, entries)
    findings += _hashes(parsed.entries)
    return LintReport(len(parsed.entries), tuple(findings))


def _meta_backends(ordered: tuple[IndexEntry, ...], entries: dict[str, IndexEntry]) -> list[LintFinding]:
    found = []
    for entry in ordered:
        if entry.source is not None:
            continue
        if not entry.capabilities:
            found.append(
                LintFinding("error", entry.name, "neither a uri nor capabilities: nothing to install")
            )
        for capability, target in sorted(entry.capabilities.items()):
            concrete = entries.get(target)
            if concrete is None:
                found.append(LintFinding("error", entry.name, f"capability {capability!r} names {target!r}, "
                                         "which is not an entry of this index"))  # fmt: skip
            elif concrete.source is None:
                found.append(LintFinding("error", entry.name, f"capability {capability!r} names {target!r}, "
                                         "another meta-backend (only one level is resolved)"))  # fmt: skip
            elif (reason := incompatibility(concrete.name, concrete.uri or "", capability)) is not None:
                found.append(LintFinding("warning", entry.name, f"capability {capability!r} names "
                                         f"{target!r}, {reason}, which cannot run on a {capability!r} host: "
                                         "the installer passes it over there"))  # fmt: skip
    return found


def _aliases(ordered: tuple[IndexEntry, ...], entries: dict[str, IndexEntry]) -> list[LintFinding]:
    found = []
    shared = Counter(entry.alias for entry in ordered if entry.alias)
    for alias, count in sorted(shared.items()):
        named = entries.get(alias)
        if named is not None:
            # LocalAI's pattern: the builds of a backend carry its meta-backend's name as alias.
            if named.source is not None:
                found.append(LintFinding("warning", alias, f"alias {alias!r} is also a backend's name; "
                                         "the name wins"))  # fmt: skip
        elif count > 1:
            owners = ", ".join(e.name for e in ordered if e.alias == alias)
            found.append(LintFinding("error", alias, f"alias {alias!r} is shared by {owners}: installing it "
                                     "is ambiguous"))  # fmt: skip
    return found


def _hashes(ordered: tuple[IndexEntry, ...]) -> list[LintFinding]:
    found = []
    for entry in ordered:
        for source in (entry.source, *entry.mirror_sources):
            if not isinstance(source, TarballSource):
                continue
            if source.sha256 and entry.sha256 and source.sha256 != entry.sha256:
                found.append(LintFinding("error", entry.name, f"{source.url}: its #sha256 fragment disagrees "
                                         "with the entry's sha256"))  # fmt: skip
        if isinstance(entry.source, TarballSource) and not entry.expected_sha256:
            found.append(LintFinding("warning", entry.name, "tarball without sha256: strict mode refuses it"))
    return found


def lint_signature(
    data: bytes,
    bundle: bytes,
    *,
    policy: VerificationPolicy | None,
    trusted_root: str,
    verifier: Verifier,
) -> list[LintFinding]:
    """Does ``bundle`` (a ``cosign sign-blob --bundle``) sign exactly ``data``, under ``policy``?

    Without a policy only the digest is compared (a warning says the signer was not checked).
    """
    actual = hashlib.sha256(data).hexdigest()
    try:
        signed = signed_sha256(bundle)
    except SignatureError as exc:
        return [LintFinding("error", None, f"signature: {exc.message}")]
    if signed != actual:
        message = f"the signature is over sha256:{signed}, not this index (sha256:{actual}): sign it again"
        return [LintFinding("error", None, message)]
    if policy is None:
        message = "the signature matches the index; its signer was not checked (give --issuer and --identity)"
        return [LintFinding("warning", None, message)]
    try:
        verifier.verify_blob(sha256_hex=actual, bundle=bundle, policy=policy, trusted_root=trusted_root,
                             gallery="(lint)")  # fmt: skip
    except SignatureError as exc:
        return [LintFinding("error", None, f"signature: {exc.message}")]
    return []


def lint_files(
    index: Path,
    signature: Path | None = None,
    *,
    policy: VerificationPolicy | None,
    trusted_root: str,
    verifier: Verifier,
    limits: Limits | None = None,
) -> LintReport:
    """``lint_index`` of the file ``index`` (and ``lint_signature`` of its bundle), read with the
    default caps; a document refused as a whole is a report with one error.

    Raises:
        UsageError: a file cannot be read.
    """
    limits = limits or Limits()
    data = _read(index, limits.max_index_bytes)
    try:
        report = lint_index(data, max_bytes=limits.max_index_bytes)
    except GalleryError as exc:
        return describe_refusal(exc)
    if signature is None:
        return report
    found = lint_signature(data, _read(signature, limits.max_bundle_bytes), policy=policy,
                           trusted_root=trusted_root, verifier=verifier)  # fmt: skip
    refused = any(f.level == "error" for f in found)
    return LintReport(report.entries, report.findings + tuple(found), signature_refused=refused)


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return read_at_most(handle, limit)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def describe_refusal(exc: GalleryError) -> LintReport:
    """A whole-document refusal as a report with one error (for ``--json`` output)."""
    return LintReport(0, (LintFinding("error", None, exc.message),))
