"""Output locations checked before the work that fills them, so a long job never ends in an
unwritable folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import InputError


def writable_folder(path: str | Path) -> Path:
    """``path`` as a folder this process can write into (made, with its parents, if missing);
    an :class:`~layersal.errors.InputError` saying why not otherwise."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot write into {folder}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    return folder
