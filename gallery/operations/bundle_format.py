"""Air-gapped bundles: ``gallery export`` writes one, ``gallery install --from`` reads one (edge module).

A bundle is a directory (or a tar of one) holding:

    index.yaml               gallery index entries, ``uri: ocifile://layouts/<name>``, each with the
                             ``gallery`` it came from (whose policy applies on install)
    layouts/<name>/          an OCI image layout: the exact pinned documents (index and platform
                             manifest, byte for byte, so signatures still bind), config, layers,
                             and the verifying Sigstore bundle as a referrer listed in index.json

Nothing in a bundle is trusted: every blob is hashed against the digest that names it, the
signature is verified under the *installing* machine's policy and trusted root, strict mode
applies, and a tar is unpacked with the safe extractor into the cache before anything is read.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gallery.catalog.index import IndexEntry, parse_index
from gallery.catalog.resolve import Resolution
from gallery.catalog.sources import OciLayoutSource
from gallery.config.safe_yaml import YamlLimits
from gallery.digests import sha256_file
from gallery.errors import ConfigError, IndexFormatError, OperationalError, TrustRefusal
from gallery.files import read_at_most
from gallery.oci.models import (
    BUNDLE_MEDIA_TYPE,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageIndex,
    parse_document,
)
from gallery.place.extract import ExtractLimits, TreeBuilder
from gallery.prepare.blobcache import BlobCache
from gallery.prepare.compression import decompressing, sniff_compression
from gallery.prepare.pin import PinnedImage
from gallery.trees import remove_tree
from gallery.verify.evidence import Evidence

__all__ = ["BUNDLE_INDEX", "ExportItem", "bundle_entries", "open_bundle", "read_bundle_index", "write_bundle"]

BUNDLE_INDEX = "index.yaml"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ExportItem:
    """One backend, pinned and verified, with its blobs in the cache."""

    resolution: Resolution
    pinned: PinnedImage
    evidence: Evidence


def write_bundle(items: Sequence[ExportItem], output: Path, *, cache: BlobCache) -> None:
    """Write the bundle to ``output`` (a directory, or a tar when it ends in ``.tar``), atomically.

    Raises:
        OperationalError: ``output`` exists or cannot be written.
    """
    if output.exists():
        raise OperationalError(f"{output} exists; not overwriting it", hint="choose another -o path")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{secrets.token_hex(6)}")
    tmp.mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        for item in items:
            name = item.resolution.entry.name
            _write_layout(tmp / "layouts" / name, item, cache)
            entry = item.resolution.entry.known_fields()
            for dropped in ("mirrors", "sha256", "signature"):
                entry.pop(dropped, None)
            entries[name] = {
                **entry,
                "uri": f"ocifile://layouts/{name}",
                "gallery": item.resolution.gallery.name,
            }
            meta = item.resolution.meta
            if meta is not None and meta.name != name and item.resolution.capability is not None:
                record = entries.setdefault(meta.name, {"name": meta.name, "capabilities": {},
                                                        "gallery": item.resolution.gallery.name})  # fmt: skip
                record["capabilities"][item.resolution.capability.key] = name
        (tmp / BUNDLE_INDEX).write_text(yaml.safe_dump(list(entries.values()), sort_keys=True))
        if output.suffix == ".tar":
            partial = output.with_name(f".{output.name}.partial-{secrets.token_hex(6)}")
            with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
                for path in sorted(tmp.rglob("*")):
                    archive.add(path, arcname=str(path.relative_to(tmp)), recursive=False)
            partial.rename(output)
        else:
            tmp.rename(output)
    except OSError as exc:
        raise OperationalError(f"cannot write {output}: {exc.strerror or exc}") from exc
    finally:
        remove_tree(tmp)


def _write_layout(root: Path, item: ExportItem, cache: BlobCache) -> None:
    pinned = item.pinned
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    for data in pinned.documents.values():
        put(data)
    for descriptor in (pinned.manifest.config, *pinned.manifest.layers):
        shutil.copyfile(cache.path(descriptor.digest), blobs / descriptor.digest.removeprefix("sha256:"))
    resolved = pinned.documents[pinned.resolved_digest]
    top_type = OCI_INDEX if isinstance(parse_document(resolved, where="export"), ImageIndex) else OCI_MANIFEST
    top = {"mediaType": top_type, "digest": pinned.resolved_digest, "size": len(resolved)}
    manifests: list[dict[str, Any]] = [
        {**top, "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    ]
    if item.evidence.bundle is not None:
        referrer = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": OCI_EMPTY, **put(b"{}")},
            "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, **put(json.dumps(item.evidence.bundle).encode())}],
            "subject": top,
        }
        manifests.append({"mediaType": OCI_MANIFEST, "artifactType": BUNDLE_MEDIA_TYPE,
                          **put(json.dumps(referrer, sort_keys=True).encode())})  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps(index, sort_keys=True))


def open_bundle(path: Path, *, work: Path, limits: ExtractLimits) -> Path:
    """The bundle's directory: ``path`` itself, or a tar unpacked (safely, once per content) under
    ``work/<sha256 of the tar>``.

    Raises:
        ConfigError: not a bundle. UnsafeArchiveError: a hostile tar.
    """
    if path.is_dir():
        root = path
    elif path.is_file():
        root = work / sha256_file(path)
        if not root.is_dir():
            work.mkdir(parents=True, exist_ok=True)
            staging = work / f".tmp-{secrets.token_hex(6)}"
            staging.mkdir()
            try:
                with path.open("rb") as handle:
                    compression = sniff_compression(handle.read(4))
                    handle.seek(0)
                    builder = TreeBuilder(staging, limits)
                    with decompressing(handle, compression) as stream:
                        builder.apply_layer(stream, layer=f"bundle {path.name}")
                    builder.finish()
                staging.rename(root)
            finally:
                remove_tree(staging)
    else:
        raise ConfigError(f"{path}: no such bundle", hint="give the directory or .tar 'gallery export' wrote")
    if not (root / BUNDLE_INDEX).is_file():
        raise ConfigError(f"{path} is not a gallery bundle (no {BUNDLE_INDEX})")
    return root


def read_bundle_index(path: Path, *, max_bytes: int) -> list[IndexEntry]:
    """The bundle's entries as it lists them (layouts relative to it), read without unpacking
    anything: a tar is scanned for its ``index.yaml``, so what the entries need can be decided
    before a byte is written. An entry pointing outside the bundle, or anywhere but a layout in it,
    is refused.

    Raises:
        ConfigError: not a bundle. IndexFormatError: the index is unusable or an entry escapes.
    """
    if path.is_dir():
        try:
            with (path / BUNDLE_INDEX).open("rb") as handle:
                data = read_at_most(handle, max_bytes + 1)
        except FileNotFoundError:
            raise ConfigError(f"{path} is not a gallery bundle (no {BUNDLE_INDEX})") from None
    elif path.is_file():
        data = _index_from_tar(path, max_bytes)
    else:
        raise ConfigError(f"{path}: no such bundle", hint="give the directory or .tar 'gallery export' wrote")
    if len(data) > max_bytes:
        raise IndexFormatError(f"{path}: {BUNDLE_INDEX} is larger than limits.max_index_bytes ({max_bytes})")
    parsed = parse_index(data, limits=YamlLimits(max_bytes=max_bytes), local=True)
    for entry in parsed.entries:
        source = entry.source
        relative = Path(source.path) if isinstance(source, OciLayoutSource) else None
        if source is not None and (relative is None or relative.is_absolute() or ".." in relative.parts):
            # 'gallery export' writes only layouts inside the bundle: this one was tampered with.
            raise TrustRefusal(
                f"bundle entry {entry.name!r}: {entry.uri!r} is not a layout inside the bundle"
            )
    return list(parsed.entries)


def _index_from_tar(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as handle:
            compression = sniff_compression(handle.read(4))
            handle.seek(0)
            with (
                decompressing(handle, compression) as stream,
                tarfile.open(fileobj=stream, mode="r|") as archive,
            ):
                for member in archive:
                    if member.name.removeprefix("./") == BUNDLE_INDEX and member.isreg():
                        extracted = archive.extractfile(member)
                        if extracted is not None:
                            return read_at_most(extracted, max_bytes + 1)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable bundle tar: {type(exc).__name__}") from exc
    raise ConfigError(f"{path} is not a gallery bundle (no {BUNDLE_INDEX})")


def bundle_entries(root: Path, entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    """``entries`` with their layouts made absolute under the bundle's directory ``root``."""
    placed = []
    for entry in entries:
        source = entry.source
        if isinstance(source, OciLayoutSource):
            entry = entry.model_copy(
                update={"uri": f"ocifile://{root.resolve() / source.path}", "mirrors": ()}
            )
        placed.append(entry)
    return placed
