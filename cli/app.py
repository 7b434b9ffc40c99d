"""The typer app and what every command shares: global options, the config, recovery first, one
error line with its hint, the installer and its progress bars. Commands live in ``commands/``.

Exit codes (docs/cli.md): 0 success, 1 operational failure, 2 usage/config/index-format error,
3 integrity refusal. An error is one line on stderr (plus a hint); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import httpx
import typer
from typer.core import TyperGroup

from gallery import (
    BatchResult,
    Config,
    GalleryError,
    Installer,
    InternalError,
    ProgressReporter,
    SigstoreVerifier,
    __version__,
    closest,
    host_detector,
    load_config,
    make_http_client,
    recover_pending,
)

from .argv import with_global_options_first
from .progress import RichProgress
from .render import Output

__all__ = ["FailFast", "JsonFlag", "app", "execute", "installer", "reported_errors", "run_batch"]


class _NoEnvironmentGroup(TyperGroup):
    """Click looks up ``_GALLERY_COMPLETE`` in the environment on every run to serve shell
    completion, which this CLI does not offer; skipping it keeps the promise that no command reads
    environment variables (tests/test_no_environment.py proves it at run time)."""

    def _main_shell_completion(self, *args: object, **kwargs: object) -> None:
        return None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click.Context
        return super().parse_args(ctx, with_global_options_first(self, ctx, args))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            suggestion = closest(name, self.list_commands(ctx))
            if suggestion is not None:
                ctx.fail(f"No such command {name!r}. Did you mean {suggestion!r}?")
        return super().resolve_command(ctx, args)


# sigstore-python logs warnings (e.g. "this bundle contains a root CA"); with no handler, Python's
# last-resort handler would print them as stray lines. Our errors already carry the verdict.
logging.getLogger("sigstore").addHandler(logging.NullHandler())
logging.getLogger("sigstore").propagate = False

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
class Globals:
    config_path: Path
    debug: bool
    require_integrity: bool | None
    capability: str | None


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")]


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
    ctx.obj = Globals(config, debug, require_integrity, capability)


@contextmanager
def reported_errors(ctx: typer.Context, out: Output) -> Iterator[None]:
    """A GalleryError is its message, its hint and its exit code; anything else, the last resort,
    is one line too (where it happened, what to report), never a traceback unless --debug."""
    options: Globals = ctx.obj
    try:
        yield
    except GalleryError as exc:
        if options.debug:
            raise
        out.failure(exc.message, exc.hint, exc.code())
        raise typer.Exit(exc.code()) from None
    except (click.exceptions.Exit, click.exceptions.Abort, click.exceptions.ClickException):
        raise  # a command's own exit (typer.Exit is a RuntimeError): not a bug
    except Exception as exc:
        if options.debug:
            raise
        unexpected = InternalError.wrap(exc)
        out.failure(unexpected.message, unexpected.hint, unexpected.code())
        raise typer.Exit(unexpected.code()) from None


def execute(ctx: typer.Context, out: Output, action: Callable[[Config], int]) -> NoReturn:
    """Load the config (flags override it), recover what a crashed command left, run ``action``
    and exit with its code (errors as ``reported_errors`` says)."""
    options: Globals = ctx.obj
    with reported_errors(ctx, out):
        config = load_config(options.config_path).with_overrides(
            require_integrity=options.require_integrity, capability=options.capability
        )
        # Every command, readers included, first finishes or undoes what a crashed command left
        # (only where no live process holds the backend's lock: readers never wait).
        out.recovery(recover_pending(config.backends_path, keep_generations=config.keep_generations))
        code = action(config)
    raise typer.Exit(code)


def installer(config: Config, client: httpx.Client, progress: ProgressReporter | None = None) -> Installer:
    return Installer(
        config,
        client=client,
        verifier=SigstoreVerifier(),
        detector=host_detector(config.capability_root, config.platform),
        progress=progress,
    )


def run_batch(
    config: Config, out: Output, run: Callable[[Installer], BatchResult], *, progress: bool = False
) -> int:
    """Run one installer batch (``progress``: with progress bars on a terminal, never in JSON
    mode), render it, and return its exit code."""
    with make_http_client(config) as client:
        if progress and out.err.is_terminal and not out.as_json:
            with RichProgress(out.err) as bars:
                batch_installer = installer(config, client, bars)
                batch = run(batch_installer)
        else:
            batch_installer = installer(config, client)
            batch = run(batch_installer)
        batch = batch_installer.notify(batch)
    out.batch_result(batch)
    return batch.exit_code
