"""The ``layersal`` command line: ``explain``, ``layers``, ``methods``, ``bench``, ``report``,
``plot``, ``serve`` and ``explain-dataset``.

Heavy imports (torch, transformers) happen inside the commands so ``--help`` stays fast.
User mistakes end with a one-line ``error:`` message and exit status 2, never a traceback.
"""

from typing import Annotated

import typer

from . import bench, dataset, explain, serve  # noqa: F401  (each registers its commands)
from .common import app, out


def main() -> None:
    """Entry point of the ``layersal`` script."""
    app()


def _print_version(value: bool) -> None:
    if value:
        from ..version import __version__

        out.print(f"layersal {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Which words did a transformer text classifier rely on? Decoded Layer Saliency."""


__all__ = ["app", "main"]
