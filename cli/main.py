"""Entry point of the ``gallery`` command: the app of ``cli.app`` with every command registered."""

from __future__ import annotations

from . import commands
from .app import app

__all__ = ["app", "commands", "run"]


def run() -> None:
    """Console-script entry point."""
    app(prog_name="gallery")
