"""Entry point of the ``gallery`` command: the app of ``cli.app`` with every command registered."""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    """Console-script entry point; anything no command caught is still one line (``--debug``
    shows the traceback). ``gallery --version`` answers before typer is even imported: scripts
    call it to check an installation, and it should cost no more than starting Python."""
    if sys.argv[1:] == ["--version"]:
        from gallery import __version__

        sys.stdout.write(f"gallery {__version__}\n")
        return
    if sys.argv[1:] == ["--help"] and _wide_enough():
        from .help_text import TOP_LEVEL_HELP

        sys.stdout.write(TOP_LEVEL_HELP)
        return
    from .memory import no_collections_at_exit, no_collections_while_starting

    no_collections_while_starting()
    _without_pydantic_plugins()
    import typer

    import gallery

    from . import commands  # noqa: F401  (registers every command on the app)
    from .app import app
    from .render import Output

    try:
        app(prog_name="gallery")
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        if "--debug" in sys.argv[1:]:
            raise
        unexpected = gallery.InternalError.wrap(exc)
        Output(as_json=False).error(unexpected.message, unexpected.hint)
        sys.exit(unexpected.code())
    finally:
        no_collections_at_exit()


def _without_pydantic_plugins() -> None:
    """pydantic looks for plugins when it builds its first validator: it imports
    ``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``: 30-40 ms here) and scans every
    installed distribution's entry points (~85 ms). gallery uses no pydantic plugin, so the
    command stands in an empty loader before pydantic is imported. Private API: should pydantic
    move it, the stand-in is never consulted and start-up is only slower again (bench/operator.py
    shows it). The library itself leaves pydantic alone."""
    import types

    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name)
        loader.get_plugins = tuple  # type: ignore[attr-defined]  # no plugins: an empty iterable
        sys.modules[name] = loader


def _wide_enough() -> bool:
    """The pre-rendered help has click's 80-column layout: right for pipes and terminals at
    least that wide; a narrower terminal gets typer's own rendering."""
    import os

    if not sys.stdout.isatty():
        return True
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns >= 80
    except OSError:
        return True


def __getattr__(name: str) -> object:
    """``cli.main.app``: the typer app with every command registered (tests drive it)."""
    if name == "app":
        from . import commands  # noqa: F401
        from .app import app

        return app
    raise AttributeError(f"module 'cli.main' has no attribute {name!r}")
