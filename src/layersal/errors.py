"""Errors raised for user mistakes (the CLI prints them as one line, without a traceback; the
web API answers them with their HTTP status), and the warnings layersal gives.

The tree::

    LayersalError              the user's input, model, options or environment, not a bug
    +-- ModelLoadError         a model or LM head that cannot be found, read or trusted
    +-- InputError             a text, file, option or target layersal cannot explain
    +-- OutputError            a result that cannot be written where asked
    |   +-- NoSpaceError       the device of a dataset run's output is full
    +-- ServeError             the web server cannot serve a request now (``status``)
        +-- ServerBusy         503: the model stayed busy for the whole time budget
        +-- QueueFull          503 with Retry-After: refused at once, the queue is too long
        +-- ExplanationTimeout 504: the explanation ran past its time budget

    TruncationWarning          a text longer than the model's maximum lost its tail

Anything else raised is a bug. Other libraries' errors are mapped into the tree where layersal
calls them, with :func:`foreign_message` keeping their first line: loading
(``checkpoints``, ``models``, ``lm_heads``: transformers, safetensors, torch's weights-only
pickle reader), output (``engines.store``: the file system), input (``inputs``: files and
their formats). The server's ``Cancelled`` is not an error but its worker's signal to drop a
batch whose requests all gave up.
"""


class LayersalError(Exception):
    """A problem with the user's input, model or options (not a bug in layersal)."""


class ModelLoadError(LayersalError):
    """The model or its LM head could not be found, read or trusted."""


class InputError(LayersalError):
    """A text, file or option that layersal cannot explain."""


class OutputError(LayersalError):
    """A result could not be written where the user asked (a full disk, say)."""


class NoSpaceError(OutputError):
    """The device holding a dataset run's output is full.

    ``folder``: the output as the user named it; ``attempted``: bytes of the write that failed;
    ``free``: bytes free at that moment (``None`` where unknown); ``needed``: an estimate of
    what the rest of the run needs, once the engine has one.
    """

    def __init__(
        self, folder: str, attempted: int, free: int | None, needed: int | None = None
    ) -> None:
        self.folder, self.attempted, self.free, self.needed = folder, attempted, free, needed
        free_text = "" if free is None else f" ({size_text(free)} free)"
        need_text = (
            f"about {size_text(needed)} more for the rest of the run"
            if needed is not None
            else f"at least {size_text(attempted)} more"
        )
        super().__init__(
            f"no space left for {folder}{free_text}: it needs {need_text}; free some space and "
            "rerun the same command to continue (finished shards are kept), or choose another "
            "`out`"
        )


def size_text(count: int) -> str:
    """``count`` bytes for people: ``812 B``, ``3.4 MB``."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def foreign_message(exc: BaseException) -> str:
    """The first line of another library's error, fit to be part of one of ours.

    Its backticks become quotes, so that the command line does not read the other library's
    parameter names as layersal's own flags.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first.replace("`", "'")


class ServeError(LayersalError):
    """The web server cannot serve a request now; ``status`` is the HTTP status it answers."""

    status = 503


class ServerBusy(ServeError):
    """The model stayed busy for the whole time budget: the request never reached it."""


class ExplanationTimeout(ServeError):
    """The request's explanation ran past its time budget."""

    status = 504


class QueueFull(ServeError):
    """The queue ahead would keep the request waiting past its budget: refused at once."""

    def __init__(self, wait_s: float, retry_after_s: int) -> None:
        super().__init__(f"about {wait_s:.0f} s of work queued")
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum and lost its tail; ``index`` is its
    position in the list given to ``explain``."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
