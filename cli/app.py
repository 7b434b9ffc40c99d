"""The typer app and what every command shares: global options, the config, recovery first, one
error line with its hint, the installer and its progress display. Commands live in ``commands/``.

Exit codes (docs/cli.md): 0 success, 1 operational failure, 2 usage/config/index-format error,
3 integrity refusal, 130 interrupted. An error is one line on stderr (plus a hint); ``--debug``
shows the traceback.

Start-up matters (``gallery --version`` in a script, ``--help`` while typing): this module and
the commands import only typer at load time; the library (``gallery`` resolves its names on first
use), httpx, rich and sigstore load when a command runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

import gallery

from .argv import with_global_options_first
from .memory import collect_after_start_up
from .render import Output

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EXIT_CODES",
    "FailFast",
    "JsonFlag",
    "app",
    "execute",
    "http_client",
    "installer",
    "output_for",
    "reported_errors",
    "run_batch",
]

EXIT_CODES = (
    "Exit codes: 0 success; 1 operational failure (network, disk, a backend failed); "
    "2 usage, config or index error; 3 integrity refusal (signature, digest, strict mode); "
    "130 interrupted (Ctrl-C)."
)


class _NoEnvironmentGroup(TyperGroup):
    """Click looks up ``_GALLERY_COMPLETE`` in the environment on every run to serve shell
    completion, which this CLI does not offer; skipping it keeps the promise that no command reads
    environment variables (tests/test_no_environment.py proves it at run time)."""

    def _main_shell_completion(self, *args: object, **kwargs: object) -> None:
        return None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click.Context
        return super().parse_args(ctx, with_global_options_first(self, ctx, args))

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            _readable_metavars(command)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            suggestion = gallery.closest(name, self.list_commands(ctx))
            if suggestion is not None:
                ctx.fail(f"No such command {name!r}. Did you mean {suggestion!r}?")
        return super().resolve_command(ctx, args)


def _readable_metavars(command: Any) -> None:
    """``--jobs JOBS`` and ``NAMES...`` in --help, not typer's Python types (``<int range>``,
    ``<list[str]>``); options that set their own metavar keep it. Sub-groups too (``cache``)."""
    for param in getattr(command, "params", ()):
        if param.metavar is not None or getattr(param, "is_flag", False) or param.name is None:
            continue
        if param.param_type_name == "option":
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = longest.upper().replace("-", "_")
        else:  # typer would still print the argument's Python type after it
            param.metavar = param.name.upper().rstrip("_")
            param.display_type_rich = lambda ctx: None
    for sub in getattr(command, "commands", {}).values():
        _readable_metavars(sub)


# sigstore-python logs warnings (e.g. "this bundle contains a root CA"); with no handler, Python's
# last-resort handler would print them as stray lines. Our errors already carry the verdict.
logging.getLogger("sigstore").addHandler(logging.NullHandler())
logging.getLogger("sigstore").propagate = False

app = typer.Typer(
    name="gallery",
    cls=_NoEnvironmentGroup,
    help="Install backends from signed galleries: pinned by digest, verified, swapped atomically.",
    epilog=EXIT_CODES,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Globals:
    config_path: Path | None
    debug: bool
    require_integrity: bool | None
    capability: str | None
    quiet: bool = False
    verbose: bool = False
    no_color: bool = False
    location: gallery.ConfigLocation | None = None  # the config file used, once found


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"gallery {gallery.__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="Gallery config (YAML). Default: ./gallery.yaml, then /etc/gallery/gallery.yaml.",
            dir_okay=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only errors and results: no progress, notices or warnings.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every HTTP request (method, URL, status) to stderr.")
    ] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text, no colours or styles.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (implies --verbose).")] = False,
    require_integrity: Annotated[
        bool | None,
        typer.Option(
            "--require-integrity/--no-require-integrity",
            help="Strict mode: refuse anything that cannot be verified (overrides the config).",
        ),
    ] = None,
    capability: Annotated[
        str | None,
        typer.Option(
            "--capability", metavar="KEY", help="Capability key for meta-backends (overrides the config)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = Globals(config, debug, require_integrity, capability, quiet, verbose or debug, no_color)


def output_for(ctx: typer.Context, as_json: bool) -> Output:
    """The command's output, shaped by the global options (``-q``, ``--no-color``)."""
    options: Globals | None = ctx.obj
    if options is None:
        return Output(as_json=as_json)
    return Output(as_json=as_json, quiet=options.quiet, color=not options.no_color)


@contextmanager
def reported_errors(ctx: typer.Context, out: Output, *, work_begins: bool = True) -> Iterator[None]:
    """A GalleryError is its message, its hint and its exit code; anything else, the last resort,
    is one line too (where it happened, what to report), never a traceback unless --debug.
    The command's work begins here (``collect_after_start_up``) unless the caller says when."""
    options: Globals = ctx.obj
    if work_begins:
        collect_after_start_up()
    try:
        yield
    except gallery.GalleryError as exc:
        if options.debug:
            raise
        out.failure(exc.message, exc.hint, exc.code())
        raise typer.Exit(exc.code()) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # a command's own exit or usage error: not a bug
    except KeyboardInterrupt:
        # A batch says per backend what was left; anything else changes nothing before it ends.
        if options.debug:
            raise
        out.failure("interrupted", None, gallery.Interrupted.exit_code)
        raise typer.Exit(gallery.Interrupted.exit_code) from None
    except Exception as exc:
        if options.debug:
            raise
        unexpected = gallery.InternalError.wrap(exc)
        out.failure(unexpected.message, unexpected.hint, unexpected.code())
        raise typer.Exit(unexpected.code()) from None


def execute(ctx: typer.Context, out: Output, action: Callable[[gallery.Config], int]) -> NoReturn:
    """Find and load the config (flags override it), recover what a crashed command left, run
    ``action`` and exit with its code (errors as ``reported_errors`` says)."""
    options: Globals = ctx.obj
    with reported_errors(ctx, out, work_begins=False), _library_warnings(out):
        location = options.location = gallery.locate_config(options.config_path)
        config = gallery.load_config(location.path).with_overrides(
            require_integrity=options.require_integrity, capability=options.capability
        )
        # Every command, readers included, first finishes or undoes what a crashed command left
        # (only where no live process holds the backend's lock: readers never wait).
        out.recovery(gallery.recover_pending(config.backends_path, keep_generations=config.keep_generations))
        collect_after_start_up()
        with gallery.interrupts_latched():
            code = action(config)
            gallery.raise_if_interrupted()  # one Python lost on the way: the command says so
    raise typer.Exit(code)


class _WarningLine(logging.Handler):
    def __init__(self, out: Output) -> None:
        super().__init__(logging.WARNING)
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        self._out.warning(record.getMessage())


@contextmanager
def _library_warnings(out: Output) -> Iterator[None]:
    """What the library logs (a damaged cached index it skipped, say) is a ``warning:`` line like
    every other, not a bare line from Python's last-resort handler."""
    logger = logging.getLogger("gallery")
    handler = _WarningLine(out)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)


def http_client(ctx: typer.Context, out: Output, config: gallery.Config) -> httpx.Client:
    """The command's HTTP client; with ``-v`` every request is logged to stderr."""
    options: Globals = ctx.obj
    return gallery.make_http_client(config, request_log=out.request if options.verbose else None)


def installer(
    config: gallery.Config, client: httpx.Client, progress: gallery.ProgressReporter | None = None
) -> gallery.Installer:
    from .memory import keep_big_buffers_off_the_heap

    keep_big_buffers_off_the_heap()
    return gallery.Installer(
        config,
        client=client,
        verifier=gallery.SigstoreVerifier(),
        detector=gallery.host_detector(config.capability_root, config.platform),
        progress=progress,
    )


def run_batch(
    ctx: typer.Context,
    config: gallery.Config,
    out: Output,
    run: Callable[[gallery.Installer], gallery.BatchResult],
) -> int:
    """Run one installer batch with its progress display (a live line per backend on a terminal,
    a line per phase otherwise, JSON events with ``--json``, nothing with ``-q``), render it, and
    return its exit code (130 when interrupted: the result says what was left)."""
    from .progress import progress_display

    with http_client(ctx, out, config) as client, progress_display(out) as display:
        batch_installer = installer(config, client, display)
        batch = run(batch_installer)
        batch = batch_installer.notify(batch)
    out.batch_result(batch)
    return batch.exit_code
