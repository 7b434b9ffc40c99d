"""fsck, cache prune: what is on disk against what was recorded, and the cache kept lean."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gallery import Config, make_http_client, prune_cache

from ..app import JsonFlag, app, execute, installer
from ..render import Output


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
        with make_http_client(config) as client:
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
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        out.prune_result(prune_cache(config, lock_files=locks or ()))
        return 0

    execute(ctx, out, action)
