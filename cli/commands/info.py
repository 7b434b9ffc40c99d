"""list, show, doctor, schema: reading the galleries and the machine, changing nothing."""

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer

import gallery

from ..app import JsonFlag, app, execute, http_client, installer, output_for


@app.command("list")
def list_command(
    ctx: typer.Context,
    installed: Annotated[bool, typer.Option("--installed", help="Installed backends instead.")] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="No network: the last good copy of each remote index; with --installed, no update check.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the entries of every configured gallery (or, with --installed, what is installed: who
    signed it, when, and whether a newer signed build is on offer)."""
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        if installed and offline:  # from disk alone: no client, no verifier, no index
            found = gallery.inventory(config)
            out.installed(found.backends, None, sideloaded=found.sideloaded, system=found.system,
                          usage=gallery.disk_usage(config))  # fmt: skip
            return 0
        with http_client(ctx, out, config) as client:
            if installed:
                backends_installer = installer(config, client)
                backends = backends_installer.installed()
                updates = None if offline else backends_installer.check_updates(backends)
                out.installed(backends, updates, sideloaded=backends_installer.sideloaded(),
                              system=backends_installer.system_backends(),
                              usage=gallery.disk_usage(config))  # fmt: skip
                return 0
            result = gallery.list_entries(config, client=client, offline=offline)
        out.list_result(result)
        return result.exit_code

    execute(ctx, out, action)


@app.command("show")
def show_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Backend name, alias, or GALLERY@NAME.")],
    as_json: JsonFlag = False,
) -> None:
    """Show how NAME resolves: meta-backend choice, candidates in order, the policy that applies;
    when installed, who signed it, when, and whether a newer signed build is on offer."""
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        with http_client(ctx, out, config) as client:
            out.show_result(gallery.describe_backend(installer(config, client), name))
        return 0

    execute(ctx, out, action)


@app.command("doctor")
def doctor_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the config, trust roots, directories, capability detection and every gallery."""
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        with http_client(ctx, out, config) as client:
            detector = gallery.host_detector(config.capability_root, config.platform)
            report = gallery.run_doctor(config, client=client, detector=detector, location=ctx.obj.location)
        out.doctor_report(report)
        return report.exit_code

    execute(ctx, out, action)


class SchemaName(StrEnum):
    CONFIG = "config"
    INDEX = "index"
    LOCK = "lock"
    METADATA = "metadata"


@app.command("schema")
def schema_command(
    which: Annotated[SchemaName, typer.Argument(help="config, index, lock or metadata.")] = SchemaName.CONFIG,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The config reference as a Markdown table instead.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the JSON Schema of a file format (always JSON), or with --markdown the config reference."""
    if markdown:
        sys.stdout.write(gallery.config_reference())
        return
    sys.stdout.write(json.dumps(gallery.json_schema(which.value), indent=2, sort_keys=True) + "\n")
