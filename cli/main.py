"""Entry point of the ``gallery`` command: the app of ``cli.app`` with every command registered."""

from __future__ import annotations

import sys

import click

from gallery import InternalError

from . import commands
from .app import app
from .render import Output

__all__ = ["app", "commands", "run"]


def run() -> None:
    """Console-script entry point; anything no command caught is still one line (``--debug``
    shows the traceback)."""
    try:
        app(prog_name="gallery")
    except (click.exceptions.Exit, click.exceptions.Abort, click.exceptions.ClickException):
        raise
    except Exception as exc:
        if "--debug" in sys.argv[1:]:
            raise
        unexpected = InternalError.wrap(exc)
        Output(as_json=False).error(unexpected.message, unexpected.hint)
        sys.exit(unexpected.code())
