"""Errors raised for user mistakes (the CLI prints them as one line, without a traceback), and
the warnings layersal gives."""


class LayersalError(Exception):
    """A problem with the user's input, model or options (not a bug in layersal)."""


class ModelLoadError(LayersalError):
    """The model or its LM head could not be found, read or trusted."""


class InputError(LayersalError):
    """A text, file or option that layersal cannot explain."""


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum and lost its tail; ``index`` is its
    position in the list given to ``explain``."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
