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
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gallery.config.safe_yaml import YamlLimits, YamlRefused, load_bounded_yaml
from gallery.config.sections import (
    ConfigModel,
    FileStoreConfig,
    GalleryConfig,
    Limits,
    Timeouts,
    checked_trusted_root,
    resolve_path,
)
from gallery.errors import ConfigError
from gallery.files import read_at_most
from gallery.oci.references import ReferenceParseError, validate_registry_host
from gallery.validation import describe_validation

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


class Config(ConfigModel):
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
    file_store: FileStoreConfig = Field(
        default_factory=FileStoreConfig, description="Identical installed files stored once."
    )
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
        return resolve_path(value, info)

    @field_validator("docker_config", "tls_ca_bundle", "system_backends_path")
    @classmethod
    def _docker_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @field_validator("trusted_root")
    @classmethod
    def _root(cls, value: str, info: ValidationInfo) -> str:
        return checked_trusted_root(value, info)

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
