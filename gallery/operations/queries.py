"""Read-only operations behind ``list``, ``show`` and ``doctor``: each returns a typed result.

The CLI renders these results as text or JSON; nothing here prints, and nothing here writes except
the index fetcher's last-good copies under ``cache_path/indexes``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from gallery.catalog.candidates import registry_endpoints
from gallery.catalog.capability import CapabilityDetector
from gallery.catalog.fetch import LoadedIndex
from gallery.catalog.galleries import Catalog, load_catalog
from gallery.catalog.index import IndexEntry
from gallery.catalog.resolve import CapabilitySelector, check_configured_capability, resolve_backend
from gallery.catalog.sources import OciSource
from gallery.config.discovery import ConfigLocation
from gallery.config.models import Config, GalleryConfig
from gallery.errors import GalleryError
from gallery.operations.disk_usage import disk_usage, hard_links_refused
from gallery.operations.installer import Installer
from gallery.operations.inventory import installed_summary
from gallery.operations.listing import ListResult, ListRow, Notice, catalog_notices, list_entries
from gallery.place.metadata import BackendMetadata
from gallery.place.swap import pending_names
from gallery.results import UpdateCheck
from gallery.units import human_bytes
from gallery.verify.plan import plan_resolution
from gallery.verify.roots import TrustRootError, TrustRoots

__all__ = [
    "Check",
    "DoctorReport",
    "ListResult",
    "ListRow",
    "ShowResult",
    "catalog_notices",
    "list_entries",
    "run_doctor",
    "show_backend",
]


@dataclass(frozen=True, slots=True)
class CandidateView:
    kind: str
    uri: str
    note: str
    endpoints: tuple[str, ...]
    proves: str = ""  # what the trust gate demands of it, or why it refuses it

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "uri": self.uri, "note": self.note, "registries": list(self.endpoints),
                "must_prove": self.proves}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShowResult:
    requested: str
    gallery: str
    entry: IndexEntry
    meta: IndexEntry | None
    capability: dict[str, Any] | None
    via_alias: bool
    shadowed_in: tuple[str, ...]
    candidates: tuple[CandidateView, ...]
    policy: dict[str, Any] | None
    protection: str
    strict_mode: bool
    refusal: str | None
    warning: str | None
    notices: tuple[Notice, ...] = field(default=())
    installed: BackendMetadata | None = None
    update: UpdateCheck | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "gallery": self.gallery,
            "name": self.entry.name,
            "via_alias": self.via_alias,
            "shadowed_in": list(self.shadowed_in),
            "meta_backend": None
            if self.meta is None
            else {"name": self.meta.name, "capabilities": self.meta.capabilities, **(self.capability or {})},
            "entry": self.entry.known_fields(),
            "candidates": [c.to_json() for c in self.candidates],
            "verification": {
                "policy": self.policy,
                "protection": self.protection,
                "require_integrity": self.strict_mode,
                "refused": self.refusal,
                "warning": self.warning,
            },
            "installed": None if self.installed is None else installed_summary(self.installed, self.update),
            "notices": [n.to_json() for n in self.notices],
        }


def show_backend(
    config: Config,
    name: str,
    *,
    client: httpx.Client,
    detector: CapabilityDetector,
    catalog: Catalog | None = None,
) -> ShowResult:
    """Resolve ``name`` and describe what an install would try, and under which policy.
    ``catalog``: the galleries already loaded (else they are loaded here).

    Raises:
        BackendNotFound, AmbiguousName, IndexFormatError: see ``resolve_backend``.
    """
    catalog = catalog or load_catalog(config, client=client)
    selector = CapabilitySelector(config.capability, detector, min_gpu_memory=config.min_gpu_memory)
    resolution = resolve_backend(catalog, name, capabilities=selector)
    entry = resolution.entry
    state = resolution.gallery
    plan = plan_resolution(resolution, config)
    views = []
    for candidate_plan in plan.candidates:
        candidate = candidate_plan.candidate
        endpoints: tuple[str, ...] = ()
        if isinstance(candidate.source, OciSource):
            endpoints = registry_endpoints(candidate.source.reference, config.registry_mirrors)
        views.append(CandidateView(candidate.kind, str(candidate.source), candidate.note, endpoints,
                                   candidate_plan.describe()))  # fmt: skip
    policy = state.config.verification
    first = plan.admitted[0] if plan.admitted else None
    choice = resolution.capability
    return ShowResult(
        requested=name,
        gallery=state.name,
        entry=entry,
        meta=resolution.meta,
        capability=None
        if choice is None
        else {
            "capability": choice.key,
            "capability_source": choice.source,
            "tried": list(choice.tried),
            "passed_over": [
                {"capability": s.key, "entry": s.target, "reason": s.reason} for s in choice.skipped
            ],
        },
        via_alias=resolution.via_alias,
        shadowed_in=resolution.shadowed_in,
        candidates=tuple(views),
        policy=None if policy is None else policy.describe(),
        protection=first.describe() if first is not None else "refused",
        strict_mode=config.require_integrity,
        refusal=plan.refusal,
        warning=first.warning if first is not None else None,
        notices=tuple(n for n in catalog_notices(catalog) if n.level == "error"),
    )


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Literal["ok", "warning", "error"]
    message: str
    code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "message": self.message}


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def exit_code(self) -> int:
        return max((c.code for c in self.checks if c.status == "error"), default=0)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "checks": [c.to_json() for c in self.checks]}


def _check_file_store(config: Config) -> list[Check]:
    if config.file_store.link == "off":
        return [Check("file store", "ok", "off: every backend has its own copies (file_store.link)")]
    checks = []
    refused = hard_links_refused(config.backends_path)
    if refused is not None:
        checks.append(Check("file store", "warning", f"the filesystem of backends_path refuses hard links "
                            f"({refused}): files are cloned (reflink) or copied, not shared"))  # fmt: skip
    usage = disk_usage(config)
    if usage.with_copies:
        saved = human_bytes(usage.with_copies - (usage.on_disk - usage.unused_stored))
        message = (
            f"installed backends and kept generations take {human_bytes(usage.on_disk)} for "
            f"{human_bytes(usage.with_copies)} of files ({saved} shared through the file store)"
        )
        if usage.unused_stored:
            message += f"; {human_bytes(usage.unused_stored)} stored but unused ('gallery cache prune')"
        checks.append(Check("disk usage", "ok", message))
    return checks


def run_doctor(
    config: Config,
    *,
    client: httpx.Client,
    detector: CapabilityDetector,
    location: ConfigLocation | None = None,
) -> DoctorReport:
    """Check the config (``location``: which file, found how), trust roots, directories (free
    space too), capability and every gallery's index."""
    checks: list[Check] = []
    if location is not None:
        checks.append(Check("config", "ok", location.describe()))
    checks.append(_check_trusted_root("trusted_root", config.trusted_root))
    for gallery in config.galleries:
        if gallery.trusted_root is not None:
            checks.append(_check_trusted_root(f"gallery {gallery.name}: trusted_root", gallery.trusted_root))
    if config.docker_config is not None:
        checks.append(_check_json_file("docker_config", config.docker_config))
    if config.proxy is not None:
        proxy = urlsplit(config.proxy)
        direct = f"; direct to {', '.join(config.no_proxy)}" if config.no_proxy else ""
        checks.append(
            Check("proxy", "ok", f"every connection through {proxy.hostname}:{proxy.port or 80}{direct}")
        )
    checks.append(_check_directory("backends_path", config.backends_path))
    checks.append(_check_directory("cache_path", config.cache_path))
    checks += _check_file_store(config)
    pending = pending_names(config.backends_path)
    checks.append(
        Check("pending recovery", "warning", f"interrupted operations on {', '.join(pending)} (their lock is "
              "held, or recovery failed: see the warning above); the next command retries")
        if pending
        else Check("pending recovery", "ok", "no interrupted operation")
    )  # fmt: skip

    if config.capability == "auto":
        facts = detector()
        selector = CapabilitySelector("auto", lambda: facts, min_gpu_memory=config.min_gpu_memory)
        source = "LocalAI's capability file says" if facts.localai_capability else "detected"
        checks.append(
            Check(
                "capability",
                "ok",
                f"{source} {facts.describe()}; preference {', '.join(selector.preferences)}",
            )
        )
    else:
        selector = CapabilitySelector(config.capability, detector)
        checks.append(Check("capability", "ok", f"set in config: {config.capability} "
                            f"(preference {', '.join(selector.preferences)})"))  # fmt: skip
    checks.append(Check("platform", "ok", config.platform))
    checks += [
        Check("insecure_registries", "warning", f"{host} is allowed over plain HTTP")
        for host in config.insecure_registries
    ]

    if not config.galleries:
        checks.append(Check("galleries", "warning", "no galleries are configured"))
    strict = "on" if config.require_integrity else "off"
    checks.append(Check("require_integrity", "ok", f"strict mode is {strict}"))
    consequence = (
        "strict mode refuses its OCI entries"
        if config.require_integrity
        else "its OCI entries install unverified"
    )
    for gallery in config.galleries:
        name = f"gallery {gallery.name}: policy"
        if gallery.verification is None:
            checks.append(Check(name, "warning", f"no verification policy: {consequence}"))
        else:
            checks.append(Check(name, "ok", json.dumps(gallery.verification.describe(), sort_keys=True)))

    catalog = load_catalog(config, client=client)
    try:
        check_configured_capability(config.capability, catalog)
    except GalleryError as exc:
        checks.append(Check("capability", "error", exc.message, exc.code()))
    checks += _index_checks(catalog)
    return DoctorReport(checks=tuple(checks))


def _index_checks(catalog: Catalog) -> list[Check]:
    """Per gallery: its index (where from, skipped entries), its signature, the copy's age."""
    checks: list[Check] = []
    for state in catalog.galleries:
        if state.error is not None:
            checks.append(
                Check(f"gallery {state.name}: index", "error", state.error.message, state.error.code())
            )
            continue
        loaded = state.loaded
        if loaded is None:  # a gallery has an index or an error; say so rather than crash
            continue
        where = f"last good copy of {loaded.source}" if loaded.from_cache else loaded.source
        status: Literal["ok", "warning"] = "warning" if loaded.from_cache or state.problems else "ok"
        message = f"{len(state.entries)} entries from {where}"
        if state.problems:
            message += f"; {len(state.problems)} skipped (see 'gallery list')"
        checks.append(Check(f"gallery {state.name}: index", status, message))
        checks.append(_index_trust(state.config, loaded))
        age = datetime.now(UTC) - loaded.fetched_at
        checks.append(Check(
            f"gallery {state.name}: index copy",
            "warning" if loaded.from_cache else "ok",
            f"{'last good copy, ' if loaded.from_cache else ''}fetched "
            f"{loaded.fetched_at.isoformat(timespec='seconds')} ({age.total_seconds() / 3600:.1f} h ago)",
        ))  # fmt: skip
    checks += [
        Check(
            "galleries",
            "warning",
            f"{s.name!r} is in {s.used_from!r} and {s.shadowed_in!r}; {s.used_from!r} wins",
        )
        for s in catalog.shadowed()
    ]
    return checks


def _index_trust(gallery: GalleryConfig, loaded: LoadedIndex) -> Check:
    """Whether the index itself is signed, by whom and when, and what the config demands."""
    name = f"gallery {gallery.name}: index signature"
    if gallery.index_policy is None:
        return Check(name, "warning", "not checked: the gallery has no policy (the index could be repointed)")
    if not gallery.index_signed:
        return Check(name, "warning", "not checked: index_signature is none (the index could be repointed)")
    signature = loaded.signature
    if signature is None:
        return Check(name, "warning", "unsigned; set require_signed_index once the publisher signs it")
    signed_at = signature.signing_time.isoformat() if signature.signing_time else "unknown time"
    demands = []
    if gallery.require_signed_index:
        demands.append("required")
    if gallery.max_index_age is not None:
        demands.append(f"max age {gallery.max_index_age}")
    warnings = list(loaded.warnings)
    if gallery.index_policy.identity is None:
        # A regex (LocalAI's covers master and every tag) accepts any index the publisher signs:
        # another channel's (nightly for stable) as well. Only an exact identity binds the channel.
        warnings.append(
            f"the index policy accepts any identity matching /{gallery.index_policy.identity_regex}/, so "
            "another channel's index signed by the same publisher is accepted too; bind "
            "index_verification.identity to the workflow@ref that signs this one (docs/trust-model.md)"
        )
    status: Literal["ok", "warning"] = "warning" if warnings else "ok"
    detail = f"; {'; '.join(warnings)}" if warnings else ""
    return Check(name, status, f"signed by {signature.identity} at {signed_at}"
                 + (f" ({', '.join(demands)})" if demands else "") + detail)  # fmt: skip


def _check_trusted_root(name: str, value: str) -> Check:
    """Load the root exactly as verification will (sigstore parses and checks it)."""
    try:
        loaded = TrustRoots().get(value)
    except TrustRootError as exc:
        return Check(name, "error", exc.message, 2)
    where = "the Sigstore public-good root embedded in sigstore-python" if value == "production" else value
    return Check(name, "ok", f"{where} ({loaded.digest[:19]})")


def _check_json_file(name: str, path: Path) -> Check:
    try:
        with path.open("rb") as handle:
            json.loads(handle.read(4 * 1024 * 1024))
    except OSError as exc:
        return Check(name, "error", f"cannot read {path}: {exc.strerror or exc}", 2)
    except ValueError as exc:
        return Check(name, "error", f"{path} is not JSON: {exc}", 2)
    return Check(name, "ok", str(path))


_LOW_SPACE = 2 * 1000**3  # a CUDA backend alone is several GB


def _check_directory(name: str, path: Path) -> Check:
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            return Check(name, "error", f"{path} is not writable", 1)
        return _with_free_space(name, path, f"{path} (writable", path)
    if path.exists():
        return Check(name, "error", f"{path} exists but is not a directory", 1)
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and os.access(parent, os.W_OK | os.X_OK):
        return _with_free_space(name, path, f"{path} (will be created", parent)
    return Check(name, "error", f"{path} does not exist and cannot be created", 1)


def _with_free_space(name: str, path: Path, text: str, existing: Path) -> Check:
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return Check(name, "ok", f"{text})")
    if free < _LOW_SPACE:
        return Check(name, "warning", f"{text}; only {human_bytes(free)} free: backends may not fit)")
    return Check(name, "ok", f"{text}; {human_bytes(free)} free)")


def describe_backend(installer: Installer, name: str) -> ShowResult:
    """``show_backend`` over the installer's galleries (read once), with the installed state:
    its signer and whether a newer signed build is on offer (pinned and verified like
    ``upgrade --dry-run``)."""
    session = installer.session
    result = show_backend(session.config, name, client=session.client, detector=session.detector,
                          catalog=installer.catalog)  # fmt: skip
    installed = session.store.get(result.entry.name)
    if installed is None:
        return result
    update = installer.check_updates([installed]).get(installed.name)
    return replace(result, installed=installed, update=update)
