"""install, upgrade, rollback, uninstall, adopt, export, verify: changing and checking installed backends."""

from pathlib import Path
from typing import Annotated

import typer

import gallery

from ..app import FailFast, JsonFlag, app, execute, output_for, run_batch


@app.command("install")
def install_command(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Backend names, aliases or GALLERY@NAME.")] = None,
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="Install from a bundle written by 'gallery export' (offline)."),
    ] = None,
    uri: Annotated[
        str | None,
        typer.Option(
            "--uri",
            help="Install this image reference, ocifile://, tarball or directory "
            "instead of a gallery entry (with --name and --gallery).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="With --uri: the backend's name.")] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="With --uri: an alias LocalAI resolves.")
    ] = None,
    gallery_name: Annotated[
        str | None,
        typer.Option("--gallery", help="With --uri: the gallery whose verification policy applies."),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="With --uri of a tarball: its sha256.")
    ] = None,
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Install backends: pinned by digest, verified under the gallery's policy, extracted safely."""
    out = output_for(ctx, as_json)
    if uri is not None and (names or from_ is not None or name is None or gallery_name is None):
        out.error("--uri takes --name and --gallery, and no backend names or --from",
                  "gallery install --uri REF --name NAME --gallery GALLERY [--alias A]")  # fmt: skip
        raise typer.Exit(2)
    if uri is None and not names:
        out.error("give backend names (or --uri REF --name NAME --gallery GALLERY)", "see 'gallery list'")
        raise typer.Exit(2)

    def run(installer: gallery.Installer) -> gallery.BatchResult:
        if uri is not None and name is not None and gallery_name is not None:
            return installer.install_uri(uri, name, gallery=gallery_name, alias=alias, sha256=sha256)
        if from_ is not None:
            return installer.install_from(from_, names or [], fail_fast=fail_fast)
        return installer.install(names or [], fail_fast=fail_fast)

    execute(ctx, out, lambda config: run_batch(ctx, config, out, run))


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
    out = output_for(ctx, as_json)
    if bool(names) == all_:
        out.error("give backend names or --all", "gallery upgrade NAME... | gallery upgrade --all")
        raise typer.Exit(2)

    def run(installer: gallery.Installer) -> gallery.BatchResult:
        return installer.upgrade(names or [], all_installed=all_, dry_run=dry_run, fail_fast=fail_fast,
                                 allow_downgrade=allow_downgrade)  # fmt: skip

    execute(ctx, out, lambda config: run_batch(ctx, config, out, run))


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Installed backend.")],
    as_json: JsonFlag = False,
) -> None:
    """Put back the previous version of NAME (the newest kept generation), atomically."""
    out = output_for(ctx, as_json)
    execute(
        ctx,
        out,
        lambda config: run_batch(ctx, config, out, lambda i: gallery.BatchResult((i.rollback(name),))),
    )


@app.command("uninstall")
def uninstall_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Installed backend names.")],
    fail_fast: FailFast = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove installed backends (a meta-backend takes its concrete backend with it)."""
    out = output_for(ctx, as_json)
    execute(
        ctx,
        out,
        lambda config: run_batch(ctx, config, out, lambda i: i.uninstall(names, fail_fast=fail_fast)),
    )


@app.command("adopt")
def adopt_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Backends LocalAI installed, or sideloaded ones.")],
    as_json: JsonFlag = False,
) -> None:
    """Take over backends LocalAI installed (or someone sideloaded): the verified build of their
    gallery entry replaces them (LocalAI's recorded digest when it has one), with evidence."""
    out = output_for(ctx, as_json)
    execute(ctx, out, lambda config: run_batch(ctx, config, out, lambda i: i.adopt(names)))


@app.command("export")
def export_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Backend names, aliases or GALLERY@NAME.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle directory, or FILE.tar.")],
    as_json: JsonFlag = False,
) -> None:
    """Write pinned, verified backends with their signatures into a bundle for air-gapped
    'gallery install --from' (written only when every backend could be exported)."""
    out = output_for(ctx, as_json)
    execute(ctx, out, lambda config: run_batch(ctx, config, out, lambda i: i.export(names, output)))


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Installed backends (default: all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every installed backend.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-check installed backends against the current policy, offline (exit 3 if any fails)."""
    out = output_for(ctx, as_json)
    if names and all_:
        out.error("give backend names or --all, not both", None)
        raise typer.Exit(2)

    def action(config: gallery.Config) -> int:
        batch = gallery.verify_backends(
            config, names or [], verifier=gallery.SigstoreVerifier()
        )  # offline: no client
        out.batch_result(batch)
        return batch.exit_code

    execute(ctx, out, action)
