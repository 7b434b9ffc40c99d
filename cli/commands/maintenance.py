"""fsck, cache prune: what is on disk against what was recorded, and the cache kept lean."""

from pathlib import Path
from typing import Annotated

import typer

import gallery

from ..app import JsonFlag, app, execute, http_client, installer, output_for


@app.command("fsck")
def fsck_command(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed safely.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check installed backends against their recorded files, leftovers and the blob cache
    (exit 3 when damage remains)."""
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        with http_client(ctx, out, config) as client:
            outcome = installer(config, client).fsck(repair=repair)
        out.fsck_report(outcome.report, outcome.repaired)
        return outcome.exit_code

    execute(ctx, out, action)


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
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        out.prune_result(gallery.prune_cache(config, lock_files=locks or ()))
        return 0

    execute(ctx, out, action)
