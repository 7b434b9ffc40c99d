"""Entry point of the ``gallery`` command (typer). Each command: parse, build config, call, render.

Exit codes (docs/cli.md): 0 success, 1 operational failure, 2 usage/config/index-format error,
3 integrity refusal. An error is one line on stderr (plus a hint); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from typer.core import TyperGroup

from gallery import __version__
from gallery.catalog.capability import detect_host_facts
from gallery.catalog.index import IndexEntry
from gallery.config.models import Config, Limits, load_config
from gallery.config.reference_doc import config_reference
from gallery.errors import GalleryError
from gallery.files import read_at_most
from gallery.net.client import make_http_client
from gallery.oci.registry import RegistryClient
from gallery.operations.checksum import checksum_index
from gallery.operations.fleet import lock_backends, preload
from gallery.operations.fsck import mark_repaired, prune_cache, scan
from gallery.operations.installer import BatchResult, Installer, ProgressReporter
from gallery.operations.lint import describe_refusal, lint_index, lint_signature
from gallery.operations.lockfile import LockFile, read_lock, write_lock
from gallery.operations.queries import list_entries, run_doctor, show_backend
from gallery.place.metadata import BackendMetadata, read_metadata
from gallery.place.swap import recover_pending
from gallery.verify.policy import VerificationPolicy
from gallery.verify.recheck import verify_installed
from gallery.verify.signatures import SigstoreVerifier, TrustRoots

from .progress import RichProgress
from .render import Output


class _NoEnvironmentGroup(TyperGroup):
    """Click looks up ``_GALLERY_COMPLETE`` in the environment on every run to serve shell
    completion, which this CLI does not offer; skipping it keeps the promise that no command reads
    environment variables (tests/test_no_environment.py proves it at run time)."""

    def _main_shell_completion(self, *args: object, **kwargs: object) -> None:
        return None


app = typer.Typer(
    name="gallery",
    cls=_NoEnvironmentGroup,
    help="Install backends from signed galleries: pinned by digest, verified, swapped atomically.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class _Globals:
    config_path: Path
    debug: bool
    require_integrity: bool | None
    capability: str | None


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"gallery {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Gallery config file (YAML).", dir_okay=False)
    ] = Path("gallery.yaml"),
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    require_integrity: Annotated[
        bool | None,
        typer.Option(
            "--require-integrity/--no-require-integrity",
            help="Strict mode: refuse anything that cannot be verified (overrides the config).",
        ),
    ] = None,
    capability: Annotated[
        str | None,
        typer.Option("--capability", help="Capability key for meta-backends (overrides the config)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = _Globals(config, debug, require_integrity, capability)


def _execute(ctx: typer.Context, out: Output, action: Callable[[Config], int]) -> NoReturn:
    options: _Globals = ctx.obj
    try:
        config = load_config(options.config_path).with_overrides(
            require_integrity=options.require_integrity, capability=options.capability
        )
        # Every command, readers included, first finishes or undoes what a crashed command left
        # (only where no live process holds the backend's lock: readers never wait).
        out.recovery(recover_pending(config.backends_path, keep_generations=config.keep_generations))
        code = action(config)
    except GalleryError as exc:
        if options.debug:
            raise
        out.error(exc.message, exc.hint)
        raise typer.Exit(exc.code()) from None
    raise typer.Exit(code)


@app.command("list")
def list_command(
    ctx: typer.Context,
    installed: Annotated[bool, typer.Option("--installed", help="Installed backends instead.")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="With --installed: do not ask the galleries for newer builds.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the entries of every configured gallery (or, with --installed, what is installed: who
    signed it, when, and whether a newer signed build is on offer)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            if installed:
                installer = _installer(config, client)
                backends = installer.installed()
                out.installed(backends, None if offline else installer.check_updates(backends))
                return 0
            result = list_entries(config, client=client)
        out.list_result(result)
        return result.exit_code

    _execute(ctx, out, action)


def _installer(config: Config, client: httpx.Client, progress: ProgressReporter | None = None) -> Installer:
    return Installer(
        config, client=client, verifier=SigstoreVerifier(), detector=detect_host_facts, progress=progress
    )


FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")]


@app.command("install")
def install_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Backend names, aliases or GALLERY@NAME.")],
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="Install from a bundle written by 'gallery export' (offline)."),
    ] = None,
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Install backends: pinned by digest, verified under the gallery's policy, extracted safely."""
    out = Output(as_json=as_json)

    def run(installer: Installer) -> BatchResult:
        if from_ is not None:
            return installer.install_from(from_, names, fail_fast=fail_fast)
        return installer.install(names, fail_fast=fail_fast)

    _execute(ctx, out, lambda config: _run_batch(config, out, run, progress=True))


@app.command("export")
def export_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Backend names, aliases or GALLERY@NAME.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle directory, or FILE.tar.")],
    as_json: JsonFlag = False,
) -> None:
    """Write pinned, verified backends with their signatures into a bundle for air-gapped
    'gallery install --from' (written only when every backend could be exported)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            batch = _installer(config, client).export(names, output)
        out.batch_result(batch)
        return batch.exit_code

    _execute(ctx, out, action)


def _run_batch(
    config: Config, out: Output, run: Callable[[Installer], BatchResult], *, progress: bool = False
) -> int:
    """Run one installer batch (``progress``: with progress bars on a terminal, never in JSON
    mode), render it, and return its exit code."""
    with make_http_client(config) as client:
        if progress and out.err.is_terminal and not out.as_json:
            with RichProgress(out.err) as bars:
                batch = run(_installer(config, client, bars))
        else:
            batch = run(_installer(config, client))
    out.batch_result(batch)
    return batch.exit_code


@app.command("upgrade")
def upgrade_command(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Installed backends.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every installed backend.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Pin and verify; change nothing.")] = False,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade", help="Accept a build signed before the installed one (refused otherwise)."
        ),
    ] = False,
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Upgrade installed backends to what their gallery offers now (by digest, verified, swapped
    atomically; the previous version is kept for 'gallery rollback'). A build signed before the
    installed one is refused (exit 3) unless --allow-downgrade."""
    out = Output(as_json=as_json)
    if bool(names) == all_:
        out.error("give backend names or --all", "gallery upgrade NAME... | gallery upgrade --all")
        raise typer.Exit(2)

    def action(config: Config) -> int:
        def run(installer: Installer) -> BatchResult:
            return installer.upgrade(
                names or [],
                all_installed=all_,
                dry_run=dry_run,
                fail_fast=fail_fast,
                allow_downgrade=allow_downgrade,
            )

        return _run_batch(config, out, run, progress=True)

    _execute(ctx, out, action)


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Installed backend.")],
    as_json: JsonFlag = False,
) -> None:
    """Put back the previous version of NAME (the newest kept generation), atomically."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        return _run_batch(config, out, lambda installer: BatchResult((installer.rollback(name),)))

    _execute(ctx, out, action)


@app.command("fsck")
def fsck_command(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed safely.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check installed backends against their recorded files, leftovers and the blob cache
    (exit 3 when damage remains)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        report = scan(config, repair=repair)
        repaired = None
        if repair and report.damaged_backends():
            with make_http_client(config) as client:
                repaired = _installer(config, client).repair(report.damaged_backends())
            report = mark_repaired(report, repaired)
        out.fsck_report(report, repaired)
        return max(report.exit_code, repaired.exit_code if repaired else 0)

    _execute(ctx, out, action)


cache_app = typer.Typer(help="The blob cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("prune")
def cache_prune_command(
    ctx: typer.Context,
    locks: Annotated[
        list[Path] | None,
        typer.Option("--lock", help="Also keep the layers this lock file pins (repeatable).", dir_okay=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove cached blobs no installed backend, kept generation or given lock file references."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        keep = {digest for path in locks or () for digest in read_lock(path).blob_digests()}
        out.prune_result(prune_cache(config, keep=keep))
        return 0

    _execute(ctx, out, action)


@app.command("lock")
def lock_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Backend names, aliases or GALLERY@NAME.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Lock file to write.", dir_okay=False)],
    platforms: Annotated[
        list[str] | None, typer.Option("--platform", help="Lock for this platform too (repeatable).")
    ] = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capability", help="Lock meta-backends for this capability too (repeatable)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pin and verify backends and write a lock file for 'gallery preload --lock' (written only
    when every backend could be locked)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            shared = _installer(config, client)

            def make(variant: Config) -> Installer:
                return Installer(variant, client=client, verifier=shared.verifier, detector=detect_host_facts,
                                 registry=shared.registry, catalog=shared.catalog)  # fmt: skip

            outcome = lock_backends(config, names, make_installer=make, platforms=platforms or (),
                                    capabilities=capabilities or ())  # fmt: skip
        if outcome.exit_code == 0:
            write_lock(output, outcome.lock)
        out.batch_result(outcome.batch)
        if outcome.exit_code == 0 and not as_json:
            out.err.print(f"wrote {len(outcome.lock.backends)} backends to {output}", highlight=False)
        return outcome.exit_code

    _execute(ctx, out, action)


@app.command("preload")
def preload_command(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Backends (default with --lock: all locked).")
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option("--lock", help="Install exactly the digests of this lock file.", dir_okay=False),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, max=256, help="Backends at a time.")
    ] = None,
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Make these backends present on this worker: exactly the locked digests (--lock), or what the
    galleries offer now; parallel, idempotent, verified under the current policy."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        locked = read_lock(lock) if lock is not None else None

        def run(installer: Installer) -> BatchResult:
            return preload(
                installer, names=names or (), lock=locked, jobs=jobs or config.jobs, fail_fast=fail_fast
            )

        return _run_batch(config, out, run, progress=True)

    _execute(ctx, out, action)


@app.command("lint")
def lint_command(
    ctx: typer.Context,
    index: Annotated[Path, typer.Argument(help="A gallery index file (YAML).", dir_okay=False)],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Its cosign sign-blob bundle: must sign these bytes.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="With --signature: the signer's issuer.")
    ] = None,
    issuer_regex: Annotated[str | None, typer.Option("--issuer-regex")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="With --signature: the signer.")] = None,
    identity_regex: Annotated[str | None, typer.Option("--identity-regex")] = None,
    trusted_root: Annotated[
        str, typer.Option("--trusted-root", help="'production' or a trusted_root.json.")
    ] = "production",
    as_json: JsonFlag = False,
) -> None:
    """Check a gallery index before publishing it: every entry as the installer reads it, plus
    meta-backend targets, alias clashes and hashes; with --signature, that the index's signature
    is over these exact bytes (and by the given signer). Exit 2 on errors, 3 on a bad signature;
    needs no config."""
    out = Output(as_json=as_json)
    options: _Globals = ctx.obj
    limit = Limits().max_index_bytes
    policy = None
    if any((issuer, issuer_regex, identity, identity_regex)):
        try:
            policy = VerificationPolicy(issuer=issuer, issuer_regex=issuer_regex, identity=identity,
                                        identity_regex=identity_regex)  # fmt: skip
        except ValueError as exc:
            out.error(f"the signer options do not make a policy: {exc}", "give --issuer and --identity")
            raise typer.Exit(2) from None
    try:
        with index.open("rb") as handle:
            data = read_at_most(handle, limit)
        report = lint_index(data, max_bytes=limit)
        if signature is not None:
            with signature.open("rb") as handle:
                bundle = read_at_most(handle, Limits().max_bundle_bytes)
            found = lint_signature(data, bundle, policy=policy, trusted_root=trusted_root,
                                   verifier=SigstoreVerifier())  # fmt: skip
            report = replace(report, findings=report.findings + tuple(found))
            if any(f.level == "error" for f in found):
                out.lint_report(report)
                raise typer.Exit(3)
    except OSError as exc:
        out.error(f"cannot read {exc.filename or index}: {exc.strerror or exc}", None)
        raise typer.Exit(2) from None
    except GalleryError as exc:
        if options.debug:
            raise
        report = describe_refusal(exc)
    out.lint_report(report)
    raise typer.Exit(report.exit_code)


@app.command("checksum")
def checksum_command(
    ctx: typer.Context,
    index: Annotated[Path, typer.Argument(help="A gallery index file (YAML).", dir_okay=False)],
    write: Annotated[
        bool, typer.Option("--write", help="Edit the index in place (only those values).")
    ] = False,
    pin: Annotated[
        bool, typer.Option("--pin", help="Also pin OCI uris to the digest their tag has now.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check or fill in tarball sha256s (and with --pin, pin OCI uris to digests) so a gallery can
    be published fully pinned (exit 3 on a sha256 mismatch)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            registry = RegistryClient.from_config(config, client)
            report = checksum_index(
                index, config=config, client=client, registry=registry, write=write, pin=pin
            )
        out.checksum_report(report)
        return report.exit_code

    _execute(ctx, out, action)


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Installed backends (default: all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every installed backend.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-check installed backends against the current policy, offline (exit 3 if any fails)."""
    out = Output(as_json=as_json)
    if names and all_:
        out.error("give backend names or --all, not both", None)
        raise typer.Exit(2)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            installed = _installer(config, client).installed()
        batch = verify_installed(config, installed, names or [], roots=TrustRoots())
        out.batch_result(batch)
        return batch.exit_code

    _execute(ctx, out, action)


@app.command("uninstall")
def uninstall_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Installed backend names.")],
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove installed backends (a meta-backend takes its concrete backend with it)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        return _run_batch(config, out, lambda installer: installer.uninstall(names, fail_fast=fail_fast))

    _execute(ctx, out, action)


@app.command("show")
def show_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Backend name, alias, or GALLERY@NAME.")],
    as_json: JsonFlag = False,
) -> None:
    """Show how NAME resolves: meta-backend choice, candidates in order, the policy that applies;
    when installed, who signed it, when, and whether a newer signed build is on offer."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            installer = _installer(config, client)  # one catalog for the description and the update check
            result = show_backend(
                config, name, client=client, detector=detect_host_facts, catalog=installer.catalog
            )
            installed = read_metadata(config.backends_path / result.entry.name)
            if installed is not None:
                update = installer.check_updates([installed]).get(installed.name)
                result = replace(result, installed=installed, update=update)
        out.show_result(result)
        return 0

    _execute(ctx, out, action)


@app.command("doctor")
def doctor_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the config, trust roots, directories, capability detection and every gallery."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            report = run_doctor(config, client=client, detector=detect_host_facts)
        out.doctor_report(report)
        return report.exit_code

    _execute(ctx, out, action)


class SchemaName(StrEnum):
    CONFIG = "config"
    INDEX = "index"
    LOCK = "lock"
    METADATA = "metadata"


@app.command("schema")
def schema_command(
    which: Annotated[SchemaName, typer.Argument(help="Which format.")] = SchemaName.CONFIG,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The config reference as a Markdown table instead.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the JSON Schema of a file format (always JSON), or with --markdown the config reference."""
    if markdown:
        sys.stdout.write(config_reference())
        return
    if which is SchemaName.CONFIG:
        schema = Config.model_json_schema()
    elif which is SchemaName.LOCK:
        schema = LockFile.model_json_schema()
    elif which is SchemaName.METADATA:
        schema = BackendMetadata.model_json_schema()
    else:
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Gallery index",
            "type": "array",
            "items": IndexEntry.model_json_schema(),
        }
    sys.stdout.write(json.dumps(schema, indent=2, sort_keys=True) + "\n")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="gallery")
