"""Errors raised for user mistakes (the CLI prints them as one line, without a traceback), and
the warnings layersal gives."""


class LayersalError(Exception):
    """A problem with the user's input, model or options (not a bug in layersal)."""


class ModelLoadError(LayersalError):
    """The model or its LM head could not be found, read or trusted."""


class InputError(LayersalError):
    """A text, file or option that layersal cannot explain."""


def foreign_message(exc: BaseException) -> str:
    """The first line of another library's error, fit to be part of one of ours.

    Its backticks become quotes, so that the command line does not read the other library's
    parameter names as layersal's own flags.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first.replace("`", "'")


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum and lost its tail; ``index`` is its
    position in the list given to ``explain``."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
