"""Configuration models and the config-file loader.

The library is configured only through a ``Config`` object: it never reads environment variables,
the home directory or TMPDIR. ``load_config`` reads a YAML file (bounded, safe), resolves relative
paths against the file's directory, and reports every validation problem at once with its location
(``galleries[0].verification: ...``). Unknown keys are errors, so a typo never silently disables a
check. See docs/config.md for the operator reference.
"""

from __future__ import annotations

import platform as _platform
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gallery.catalog.sources import SourceParseError, parse_index_location
from gallery.config.safe_yaml import YamlLimits, YamlRefused, load_bounded_yaml
from gallery.errors import ConfigError
from gallery.files import read_at_most
from gallery.names import validate_name
from gallery.oci.references import ReferenceParseError, validate_registry_host
from gallery.validation import describe_validation
from gallery.verify.policy import VerificationPolicy

__all__ = [
    "CONFIG_FORMAT_VERSION",
    "Config",
    "GalleryConfig",
    "Limits",
    "Timeouts",
    "host_platform",
    "load_config",
]

CONFIG_FORMAT_VERSION = 1
_MAX_CONFIG_BYTES = 1024 * 1024


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


_HELPER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CAPABILITY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
_MIRROR_RE = re.compile(r"[^/\s]+(?:/[a-z0-9._/-]+)?")

_MACHINE_TO_OCI_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm/v7",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def oci_architecture(machine: str) -> str:
    """What OCI calls a machine's architecture (``x86_64`` -> ``amd64``, ``armv7l`` -> ``arm/v7``)."""
    machine = machine.lower()
    return _MACHINE_TO_OCI_ARCH.get(machine, machine or "amd64")


def host_platform() -> str:
    """The running host as an OCI platform string, e.g. ``linux/amd64``."""
    system = _platform.system().lower() or "linux"
    return f"{system}/{oci_architecture(_platform.machine())}"


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    if isinstance(context, dict):
        base = context.get("base_dir")
        if isinstance(base, Path):
            return base
    return None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    if value.is_absolute():
        return value
    base = _base_dir(info)
    if base is None:
        raise ValueError(
            f"relative path {str(value)!r} needs a config file to be relative to; give it absolute"
        )
    return (base / value).resolve()


class _Model(BaseModel):
    # The config reference is generated from the fields' descriptions (docs/config-reference.md,
    # kept current by a test). They are Field(description=...), not attribute docstrings:
    # pydantic reads those from the source at import, 60 ms of every command's start-up.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Seconds; every network operation has both. ``lock``: how long a command waits for another
    process that is changing the same backend before it gives up (exit 1)."""

    connect: Annotated[
        float,
        Field(
            gt=0,
            le=600,
            description="Seconds to establish a connection to a registry, mirror or index server.",
        ),
    ] = 10.0
    read: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description=(
                "Seconds without a byte from the other side before a read gives up (then it is retried)."
            ),
        ),
    ] = 60.0
    min_speed: Annotated[
        int,
        Field(
            ge=0,
            description=(
                "Slowest transfer accepted, bytes per second over each `read` seconds; slower is "
                "a timeout (0: off)."
            ),
        ),
    ] = 1024
    lock: Annotated[
        float,
        Field(
            ge=0,
            le=86400,
            description=(
                "Seconds a change waits for another process changing the same backend (0: none); then exit 1."
            ),
        ),
    ] = 600.0


class Limits(_Model):
    """Caps on everything read from outside. ``max_index_bytes`` caps a gallery index file."""

    max_manifest_bytes: Annotated[
        int,
        Field(
            ge=1024,
            description="Largest manifest, index or referrers document read from a registry or layout.",
        ),
    ] = 4 * 1024 * 1024
    max_bundle_bytes: Annotated[int, Field(ge=1024, description="Largest Sigstore bundle read.")] = (
        2 * 1024 * 1024
    )
    max_referrers: Annotated[
        int, Field(ge=1, description="Most referrers of one digest looked at when searching for signatures.")
    ] = 64
    max_extract_bytes: Annotated[
        int,
        Field(
            ge=1,
            description=(
                "Most bytes one backend may extract to (stops decompression bombs); also caps a "
                "tarball download."
            ),
        ),
    ] = 64 * 1024**3
    max_layers: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description="Most layers one image may have (refused before any layer is fetched).",
        ),
    ] = 512
    max_files: Annotated[int, Field(ge=1, description="Most archive entries one backend may have.")] = (
        1_000_000
    )
    max_path_length: Annotated[
        int, Field(ge=16, le=65536, description="Longest path (and symlink target) inside a backend.")
    ] = 4096
    max_depth: Annotated[
        int,
        Field(
            ge=2,
            le=4096,
            description=(
                "Deepest directory nesting inside a backend; a deeper layer is refused at "
                "extraction (exit 3)."
            ),
        ),
    ] = 256
    max_index_bytes: Annotated[
        int,
        Field(
            ge=1024,
            description=(
                "Largest gallery index file read; a larger one is refused without reading past the cap."
            ),
        ),
    ] = 16 * 1024 * 1024


# ``index_signature: none``: the publisher does not sign its index (LocalAI's does not); nothing is
# looked up and nothing is warned about, and nothing protects against index tampering either.
INDEX_NOT_SIGNED = "none"


class GalleryConfig(_Model):
    name: str = Field(
        description=(
            "The gallery's name: a safe path component, used in `GALLERY@NAME` and recorded in metadata."
        )
    )
    url: str = Field(
        description=(
            "The index: http(s) URL, path (relative to this file), `file://`, or "
            "`github:owner/repo/path@ref`."
        )
    )
    mirrors: tuple[str, ...] = Field(
        (), description="Other locations of the same index, tried in order when `url` fails."
    )
    verification: VerificationPolicy | None = Field(
        None,
        description=(
            "Who must have signed its images and tarballs (without it: unverified; strict mode refuses)."
        ),
    )
    trusted_root: str | None = Field(
        None,
        description=(
            "This gallery's Sigstore trusted root (`production` or a path); overrides the top-level one."
        ),
    )
    require_pinned_digests: bool = Field(
        False,
        description=(
            "Every OCI `uri` must carry `@sha256:` and every tarball a sha256, and only those"
            " bytes install: with a signed index, this closes substitution by a registry or "
            "mirror (docs/trust-model.md)."
        ),
    )
    index_signature: str | None = Field(
        None,
        description=(
            "The index's `sign-blob` bundle (default: index location + `.sigstore.json`); `none`: not signed."
        ),
    )
    require_signed_index: bool = Field(
        False,
        description=(
            "Refuse an unsigned index (exit 3); without it, unsigned is a warning (a bad signature never is)."
        ),
    )
    index_verification: VerificationPolicy | None = Field(
        None,
        description=(
            "Who must have signed the index, when not the `verification` signer (e.g. another workflow)."
        ),
    )
    max_index_age: timedelta | None = Field(
        None,
        description=(
            "Oldest index signature accepted (e.g. `P7D`): refused with "
            "`require_signed_index`, else a warning."
        ),
    )

    @property
    def index_policy(self) -> VerificationPolicy | None:
        """The policy the index's signature is checked against (none: the index is not checked)."""
        return self.index_verification or self.verification

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return validate_name(value, what="gallery name")

    @field_validator("url")
    @classmethod
    def _location(cls, value: str, info: ValidationInfo) -> str:
        return _checked_location(value, info)

    @field_validator("mirrors")
    @classmethod
    def _mirror_locations(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(_checked_location(item, info) for item in value)

    @field_validator("trusted_root")
    @classmethod
    def _root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _checked_trusted_root(value, info)

    @field_validator("index_signature")
    @classmethod
    def _signature_location(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == INDEX_NOT_SIGNED:
            return value
        return _checked_location(value, info)

    @property
    def index_signed(self) -> bool:
        """Whether the index is to be checked: a policy for it, and not declared unsigned."""
        return self.index_policy is not None and self.index_signature != INDEX_NOT_SIGNED

    @model_validator(mode="after")
    def _signed_index_needs_policy(self) -> GalleryConfig:
        if self.index_signature == INDEX_NOT_SIGNED and (self.require_signed_index or self.max_index_age):
            raise ValueError("index_signature: none contradicts require_signed_index and max_index_age")
        if (self.require_signed_index or self.max_index_age is not None) and self.index_policy is None:
            raise ValueError(
                "require_signed_index and max_index_age need a policy for the index: "
                "a verification or index_verification block"
            )
        if self.max_index_age is not None and self.max_index_age.total_seconds() <= 0:
            raise ValueError("max_index_age must be positive")
        return self


def _checked_location(value: str, info: ValidationInfo) -> str:
    base = _base_dir(info)
    try:
        location = parse_index_location(value, base_dir=base or Path("/"))
    except SourceParseError as exc:
        raise ValueError(str(exc)) from exc
    if location.kind == "file" and not value.lower().startswith("file://"):
        if base is None and not Path(value).is_absolute():
            raise ValueError(
                f"relative path {value!r} needs a config file to be relative to; give it absolute"
            )
        return location.target
    return value


def _checked_trusted_root(value: str, info: ValidationInfo) -> str:
    if value == "production":
        return value
    return str(_resolve_path(Path(value), info))


class Config(_Model):
    """Everything the library needs to know, passed explicitly down every call chain."""

    format_version: int = Field(description="Always 1; a newer version is refused with a message.")
    backends_path: Path = Field(
        Path("backends"),
        description=(
            "Where backends are installed (relative to this file); our state lives in its `.gallery/`."
        ),
    )
    system_backends_path: Path | None = Field(
        None,
        description=(
            "LocalAI's read-only system backends (e.g. `/var/lib/local-ai/backends`): listed, never written."
        ),
    )
    cache_path: Path = Field(
        Path("cache"),
        description=(
            "The content-addressed blob cache (verified blobs only), index copies, unpacked bundles."
        ),
    )
    require_integrity: bool = Field(
        False, description="Strict mode: refuse, before anything is written, whatever cannot be verified."
    )
    trusted_root: str = Field(
        "production",
        description=(
            "Sigstore trusted root: `production` (in the sigstore package, offline) or a trusted_root.json."
        ),
    )
    capability: str = Field(
        "auto",
        description=(
            "Capability key choosing a meta-backend's build (`auto`: LocalAI's capability "
            "file, else detected)."
        ),
    )
    capability_root: Path = Field(
        Path("/"),
        description="Where capability detection finds the host's /proc, /sys, /run, /usr/local, /etc.",
    )
    min_gpu_memory: Annotated[
        int,
        Field(
            ge=0,
            description=(
                "Bytes of GPU memory at or below which a GPU counts as none (LocalAI's 4 GiB rule; 0: off)."
            ),
        ),
    ] = 4 * 1024**3
    platform: str = Field(
        default_factory=host_platform,
        description="OS/architecture[/variant] chosen from multi-platform images (default: this host).",
    )
    insecure_registries: tuple[str, ...] = Field(
        (), description="Registries (host:port) reached over plain HTTP."
    )
    registry_mirrors: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Per registry, mirrors tried before it (like containers-registries.conf); the "
            "registry comes last."
        ),
    )
    docker_config: Path | None = Field(
        None, description="A Docker config.json to take registry credentials from (never read from HOME)."
    )
    credential_helpers: dict[str, str] = Field(
        default_factory=dict,
        description="Per registry host, a Docker credential helper (a name such as `pass`, or a path).",
    )
    credential_helper_env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The whole environment credential helpers run with (e.g. `HOME`); nothing is inherited."
        ),
    )
    proxy: str | None = Field(
        None,
        description=(
            "HTTP(S) proxy for every connection, `http://[user:password@]host:port` (never "
            "from the environment)."
        ),
    )
    no_proxy: tuple[str, ...] = Field(
        (),
        description=(
            "Hosts reached directly despite `proxy`: `host`, `host:port`, or `.domain` for its subdomains."
        ),
    )
    tls_ca_bundle: Path | None = Field(
        None,
        description=(
            "PEM file of extra certificate authorities for HTTPS (a private CA), trusted "
            "beside the public ones."
        ),
    )
    keep_generations: Annotated[
        int,
        Field(
            ge=0, le=100, description="How many replaced versions are kept for `gallery rollback` (0: none)."
        ),
    ] = 1
    jobs: Annotated[
        int, Field(ge=1, le=256, description="Default `--jobs` of `preload`: backends installed at a time.")
    ] = 4
    max_parallel_layers: Annotated[
        int, Field(ge=1, le=64, description="Layers of one backend downloaded at a time.")
    ] = 4
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Network and lock timeouts.")
    limits: Limits = Field(default_factory=Limits, description="Caps on everything read from outside.")
    link_fallback: Literal["none", "copy"] = Field(
        "none",
        description=(
            "`copy`: where the filesystem refuses symlinks or hard links (CIFS, SMB), links "
            "to files are copied."
        ),
    )
    refuse_escaping_symlinks: bool = Field(
        False,
        description=(
            "Refuse symlinks that point outside the backend (by default they are data, never followed)."
        ),
    )
    on_change: tuple[str, ...] = Field(
        (),
        description=(
            "Argv (no shell) run after a command changed installed backends, e.g. to restart LocalAI."
        ),
    )
    on_change_timeout: Annotated[
        float,
        Field(gt=0, le=3600, description="Seconds the `on_change` command may run before it is killed."),
    ] = 60.0
    galleries: tuple[GalleryConfig, ...] = Field(
        (), description="The galleries, in priority order (a name in an earlier gallery wins)."
    )

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is not supported by this gallery version "
                f"(it reads format_version {CONFIG_FORMAT_VERSION}); upgrade gallery or fix the file"
            )
        return value

    @field_validator("backends_path", "cache_path", "capability_root")
    @classmethod
    def _roots(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @field_validator("docker_config", "tls_ca_bundle", "system_backends_path")
    @classmethod
    def _docker_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve_path(value, info)

    @field_validator("trusted_root")
    @classmethod
    def _root(cls, value: str, info: ValidationInfo) -> str:
        return _checked_trusted_root(value, info)

    @field_validator("capability")
    @classmethod
    def _capability(cls, value: str) -> str:
        if value != "auto" and not _CAPABILITY_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not 'auto' or a capability key such as nvidia, cpu, default")
        return value

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str) -> str:
        if not _PLATFORM_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an OCI platform such as linux/amd64 or linux/arm/v7")
        return value

    @field_validator("insecure_registries")
    @classmethod
    def _insecure(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(validate_registry_host(host) for host in value)
        except ReferenceParseError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("registry_mirrors")
    @classmethod
    def _mirrors(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        normalised: dict[str, tuple[str, ...]] = {}
        for registry, mirrors in value.items():
            try:
                key = validate_registry_host(registry)
                for mirror in mirrors:
                    if not _MIRROR_RE.fullmatch(mirror):
                        raise ValueError(f"mirror {mirror!r} is not host[:port][/path]")
                    validate_registry_host(mirror.split("/", 1)[0])
            except ReferenceParseError as exc:
                raise ValueError(f"registry_mirrors[{registry!r}]: {exc}") from exc
            if key in normalised:
                raise ValueError(f"registry_mirrors names {key!r} twice (docker.io aliases are one registry)")
            normalised[key] = tuple(mirrors)
        return normalised

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"proxy {_without_password(value)!r} is not http(s)://[user:password@]host:port")
        return value

    @field_validator("credential_helpers")
    @classmethod
    def _helpers(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for host, helper in value.items():
            try:
                key = validate_registry_host(host)
            except ReferenceParseError as exc:
                raise ValueError(f"credential_helpers[{host!r}]: {exc}") from exc
            if not (_HELPER_RE.fullmatch(helper) or (helper.startswith("/") and "\0" not in helper)):
                raise ValueError(
                    f"credential_helpers[{host!r}]: {helper!r} is not a helper name or absolute path"
                )
            checked[key] = helper
        return checked

    @model_validator(mode="after")
    def _unique_galleries(self) -> Config:
        seen: set[str] = set()
        for gallery in self.galleries:
            if gallery.name in seen:
                raise ValueError(f"gallery name {gallery.name!r} is used twice; names must be unique")
            seen.add(gallery.name)
        return self

    def gallery(self, name: str) -> GalleryConfig | None:
        return next((g for g in self.galleries if g.name == name), None)

    def with_overrides(
        self,
        *,
        require_integrity: bool | None = None,
        capability: str | None = None,
        platform: str | None = None,
    ) -> Config:
        """A copy with CLI flags applied (flags win over the file), validated like the file.

        Raises:
            ConfigError: an override value is invalid.
        """
        update: dict[str, Any] = {}
        if require_integrity is not None:
            update["require_integrity"] = require_integrity
        if capability is not None:
            update["capability"] = capability
        if platform is not None:
            update["platform"] = platform
        if not update:
            return self
        return _validate({**self.model_dump(), **update}, source="command line", base_dir=None)


def load_config(path: Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: unreadable, not YAML, not a mapping, or invalid (all problems are listed).
    """
    try:
        with path.open("rb") as handle:
            data = read_at_most(handle, _MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(
            f"cannot read config {path}: {exc.strerror or exc}",
            hint="pass --config FILE to a gallery config, or write one with 'gallery init'",
        ) from exc
    try:
        raw = load_bounded_yaml(
            data, YamlLimits(max_bytes=_MAX_CONFIG_BYTES, max_nodes=100_000, max_depth=16)
        )
    except YamlRefused as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping (key: value)")
    if "format_version" not in raw:
        raise ConfigError(
            f"{path}: format_version is missing",
            hint=f"add 'format_version: {CONFIG_FORMAT_VERSION}' at the top",
        )
    return _validate(raw, source=str(path), base_dir=path.resolve().parent)


def _validate(raw: dict[str, Any], *, source: str, base_dir: Path | None) -> Config:
    try:
        return Config.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid config: " + describe_validation(exc, model=Config),
            hint="every key is listed by 'gallery schema config --markdown' (docs/config.md)",
        ) from exc
