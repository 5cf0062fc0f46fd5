"""``python -m layersal`` runs the command line."""

from .cli import main

main()
