"""lock, preload: what a fleet of workers runs, pinned once and installed everywhere."""

from pathlib import Path
from typing import Annotated

import typer

import gallery

from ..app import FailFast, JsonFlag, app, execute, http_client, installer, output_for, run_batch
from ..units import plural


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
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        with http_client(ctx, out, config) as client:
            outcome = gallery.lock_fleet(installer(config, client), names, platforms=platforms or (),
                                 capabilities=capabilities or ())  # fmt: skip
        if outcome.exit_code == 0:
            gallery.write_lock(output, outcome.lock)
        out.batch_result(outcome.batch)
        if outcome.exit_code == 0 and not as_json:
            out.err.print(
                f"wrote {plural(len(outcome.lock.backends), 'backend')} to {output}", highlight=False
            )
        return outcome.exit_code

    execute(ctx, out, action)


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
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        locked = gallery.read_lock(lock) if lock is not None else None

        def run(installer: gallery.Installer) -> gallery.BatchResult:
            return gallery.preload(
                installer, names=names or (), lock=locked, jobs=jobs or config.jobs, fail_fast=fail_fast
            )

        return run_batch(ctx, config, out, run)

    execute(ctx, out, action)
