"""The config's sections (pure models): timeouts, limits and one gallery, with the path helpers
they share with ``Config``. ``gallery.config.models`` re-exports them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gallery.catalog.sources import SourceParseError, parse_index_location
from gallery.names import validate_name
from gallery.verify.policy import VerificationPolicy

__all__ = ["INDEX_NOT_SIGNED", "FileStoreConfig", "GalleryConfig", "Limits", "Timeouts"]


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    if isinstance(context, dict):
        base = context.get("base_dir")
        if isinstance(base, Path):
            return base
    return None


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    if value.is_absolute():
        return value
    base = _base_dir(info)
    if base is None:
        raise ValueError(
            f"relative path {str(value)!r} needs a config file to be relative to; give it absolute"
        )
    return (base / value).resolve()


class ConfigModel(BaseModel):
    # The config reference is generated from the fields' descriptions (docs/config-reference.md,
    # kept current by a test). They are Field(description=...), not attribute docstrings:
    # pydantic reads those from the source at import, 60 ms of every command's start-up.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(ConfigModel):
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


class FileStoreConfig(ConfigModel):
    """Identical files stored once: installed regular files are links into a content-addressed
    store under ``backends_path/.gallery/store`` (docs/operations.md)."""

    link: Literal["auto", "hardlink", "reflink", "off"] = Field(
        "auto",
        description=(
            "How installed files share the store's copy: `hardlink`; `reflink` (copy-on-write "
            "clones, btrfs/XFS); `auto`: hard links, or reflinks (then copies) where the "
            "filesystem refuses them; `off`: every backend has its own copies."
        ),
    )
    read_only_files: bool = Field(
        True,
        description=(
            "Install regular files without write bits, so that they can be shared. `false` keeps "
            "the image's modes: files with a write bit are then copied, never linked (a backend "
            "that changes its files in place would change every tree sharing them)."
        ),
    )


class Limits(ConfigModel):
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


class GalleryConfig(ConfigModel):
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
        return None if value is None else checked_trusted_root(value, info)

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


def checked_trusted_root(value: str, info: ValidationInfo) -> str:
    if value == "production":
        return value
    return str(resolve_path(Path(value), info))
