"""Shared plumbing of the baseline methods (see ``docs/methods.md``).

Counting passes, seeding Captum without leaving global state changed, replacement tokens,
option checks, one text of a batch without its padding, and the forward functions that
Captum differentiates or perturbs. Special tokens and padding are never perturbed: the
gradient forward pins them to their own embeddings, the perturbation forward only ever
replaces content tokens.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..encoding import Encoded
from ..errors import InputError
from ..models import LoadedModel
from ..passes import forward as predict_logits
from ..passes import on_input_ids
from .base import Attribution

REPLACEMENTS = ("mask", "pad", "unk")


# ----------------------------------------------------------------------------- pass counting


class PassCounter:
    """Counts the rows (texts) that go through ``model`` forward, and backward from its logits.

    Honest by construction: whatever Captum does internally is seen here. Per text means
    rows divided by the batch size, rounded up (methods that loop over texts with a cost that
    depends on the text's length report the batch mean).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward_rows = 0
        self.backward_rows = 0
        self._handles: list[Any] = []

    def __enter__(self) -> PassCounter:
        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"]
            self.forward_rows += int(ids.shape[0])

        def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            logits = output.logits if hasattr(output, "logits") else output[0]
            if isinstance(logits, torch.Tensor) and logits.requires_grad:
                logits.register_hook(self._backward)

        self._handles = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True),
        ]
        return self

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += int(grad.shape[0])

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def per_text(self, batch_size: int) -> tuple[int, int]:
        """(forward, backward) passes per text."""
        return (
            math.ceil(self.forward_rows / batch_size),
            math.ceil(self.backward_rows / batch_size),
        )

    def result(
        self,
        encoded: Encoded,
        scores: torch.Tensor,
        logits: torch.Tensor,
        targets: torch.Tensor,
        layers: list[int | None] | None = None,
    ) -> Attribution:
        """The method's :class:`Attribution`, with the passes counted here per text of ``encoded``.

        ``layers`` defaults to ``None`` for every text (an input-level method).
        """
        fwd, bwd = self.per_text(len(encoded))
        return Attribution(
            scores=scores.float(),
            logits=logits,
            targets=targets,
            forward_passes=fwd,
            backward_passes=bwd,
            layers=[None] * len(encoded) if layers is None else layers,
        )


# ------------------------------------------------------------------------------ randomness


def text_seed(seed: int, ids: Sequence[int]) -> int:
    """A seed for one text: ``seed`` mixed with a checksum of its token ids.

    The same text gets the same draw whatever batch it is in; different texts get
    different draws.
    """
    digest = zlib.crc32(torch.as_tensor(list(ids), dtype=torch.int64).numpy().tobytes())
    return (int(seed) * 1_000_003 + digest) % (2**63 - 1)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators for code we do not control (Captum draws
    from both: GradientShap's alphas and baseline picks come from ``numpy.random``).

    Both states are saved before and restored after (``torch.random.fork_rng``,
    ``numpy.random.get_state``), so the caller's random streams are left exactly as they were.
    """
    cuda = device.type == "cuda"
    index = device.index if device.index is not None else 0
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[index] if cuda else []):
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(numpy_state)


# --------------------------------------------------------------------------------- options


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def non_negative_float(name: str, value: Any, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise InputError(f"{name} must be a number {bound}, not {value!r}")
    return float(value)


def seed_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"seed must be an integer, not {value!r}")
    return value


def replacement_id(tokenizer: Any, baseline: Any) -> int:
    """Token id that replaces content tokens: ``"mask"``, ``"pad"`` or ``"unk"``.

    ``"mask"`` on a tokenizer without [MASK] (decoder-only models) is its unknown token, else
    its padding token, as when metrics hide tokens (:func:`layersal.evaluate.hide_ids`).
    """
    if baseline not in REPLACEMENTS:
        raise InputError(f"baseline must be one of {', '.join(REPLACEMENTS)}, not {baseline!r}")
    fallbacks = ("mask", "unk", "pad") if baseline == "mask" else (baseline,)
    found = (getattr(tokenizer, f"{name}_token_id", None) for name in fallbacks)
    token_id = next((i for i in found if i is not None), None)
    if token_id is None:
        raise InputError(f"this model's tokenizer has no {baseline} token; choose another baseline")
    return int(token_id)


def replacement_ids(tokenizer: Any, baseline: Any) -> list[int]:
    """One or several replacement ids (a distribution of baselines for the SHAP methods)."""
    names = [baseline] if isinstance(baseline, str) else list(baseline or [])
    if not names:
        raise InputError("baseline must name at least one of " + ", ".join(REPLACEMENTS))
    return [replacement_id(tokenizer, name) for name in names]


# ------------------------------------------------------------------------ batch and texts


def prediction(
    lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the unperturbed batch (one no-grad forward) and the classes to explain."""
    logits = predict_logits(lm.model, encoded)
    chosen = (
        lm.task.default_targets(logits) if targets is None else targets.to(logits.device).long()
    )
    return logits, chosen


def on_device(encoded: Encoded, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in encoded.inputs.items()}


@dataclass
class OneText:
    """Row ``row`` of a batch without its padding: ``columns`` index the batch's positions."""

    row: int
    columns: torch.Tensor  # (L,) positions of the batch row that are not padding
    inputs: dict[str, torch.Tensor]  # each (1, L)
    content: torch.Tensor  # (L,) bool

    @property
    def content_positions(self) -> torch.Tensor:
        return self.content.nonzero().flatten()


def one_text(encoded: Encoded, row: int, device: torch.device) -> OneText:
    columns = encoded.attention_mask[row].nonzero().flatten()
    inputs = {k: v[row : row + 1, columns].to(device) for k, v in encoded.inputs.items()}
    content = encoded.content[row, columns].to(device)
    return OneText(row=row, columns=columns.to(device), inputs=inputs, content=content)


def word_embeddings(lm: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Output of the model's word-embedding module for ``input_ids`` (no gradient)."""
    with torch.no_grad():
        return lm.model.get_input_embeddings()(input_ids).detach().float()


# ------------------------------------------------------------------------ forward functions


class EmbeddingForward(nn.Module):
    """``f(word_embeddings, *model_inputs, content) -> logits`` for Captum's gradient methods.

    Runs the classifier on its usual inputs (so position ids, token types and masks are the
    model's own) and replaces the output of its word-embedding module on the batch's
    ``input_ids`` (:func:`layersal.passes.on_input_ids`: not GPT-2's second call, on its token
    types) by the given tensor at content positions; special tokens and padding keep their own
    embeddings, so no baseline, interpolation or noise ever reaches them and they get zero
    gradient.
    """

    def __init__(self, lm: LoadedModel, names: Sequence[str]) -> None:
        super().__init__()
        self.model = lm.model
        self.names = list(names)
        self.last_logits: torch.Tensor | None = None

    def forward(self, embeddings: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        *model_inputs, content = tensors
        inputs = dict(zip(self.names, model_inputs))

        def swap(output: torch.Tensor) -> torch.Tensor:
            return torch.where(content.unsqueeze(-1), embeddings.to(output.dtype), output)

        with on_input_ids(self.model, inputs["input_ids"], swap):
            logits = self.model(**inputs).logits.float()
        self.last_logits = logits
        return logits


def embedding_arguments(
    encoded: Encoded, device: torch.device
) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Input names, and the additional forward arguments of :class:`EmbeddingForward`."""
    inputs = on_device(encoded, device)
    names = sorted(inputs)
    return names, tuple(inputs[n] for n in names) + (encoded.content.to(device),)


class TokenForward:
    """``f(content_ids (R, k)) -> logits (R, C)`` for Captum's perturbation methods on one text.

    ``content_ids`` are the text's content tokens (possibly replaced); they are written into
    the text's own sequence, so [CLS]/[SEP] are never touched and there is no padding.
    """

    def __init__(self, lm: LoadedModel, text: OneText) -> None:
        self.model = lm.model
        self.text = text
        self.positions = text.content_positions

    def __call__(self, content_ids: torch.Tensor) -> torch.Tensor:
        rows = content_ids.shape[0]
        inputs = {k: v.expand(rows, -1).clone() for k, v in self.text.inputs.items()}
        inputs["input_ids"][:, self.positions] = content_ids.to(inputs["input_ids"].dtype)
        with torch.no_grad():
            return self.model(**inputs).logits.float()


def scatter_rows(
    encoded: Encoded, per_text: list[tuple[OneText, torch.Tensor]], device: torch.device
) -> torch.Tensor:
    """``(B, n)`` scores from each text's content-token scores; zero elsewhere."""
    scores = torch.zeros(encoded.input_ids.shape, dtype=torch.float32, device=device)
    for text, values in per_text:
        scores[text.row, text.columns[text.content_positions]] = values.float().to(device)
    return scores
