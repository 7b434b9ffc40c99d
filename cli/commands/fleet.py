"""lock, preload: what a fleet of workers runs, pinned once and installed everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gallery import (
    BatchResult,
    Config,
    Installer,
    lock_fleet,
    make_http_client,
    preload,
    read_lock,
    write_lock,
)

from ..app import FailFast, JsonFlag, app, execute, installer, run_batch
from ..render import Output


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
            outcome = lock_fleet(installer(config, client), names, platforms=platforms or (),
                                 capabilities=capabilities or ())  # fmt: skip
        if outcome.exit_code == 0:
            write_lock(output, outcome.lock)
        out.batch_result(outcome.batch)
        if outcome.exit_code == 0 and not as_json:
            out.err.print(f"wrote {len(outcome.lock.backends)} backends to {output}", highlight=False)
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
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        locked = read_lock(lock) if lock is not None else None

        def run(installer: Installer) -> BatchResult:
            return preload(
                installer, names=names or (), lock=locked, jobs=jobs or config.jobs, fail_fast=fail_fast
            )

        return run_batch(config, out, run, progress=True)

    execute(ctx, out, action)
