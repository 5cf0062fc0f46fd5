"""One forward pass that keeps every hidden state, one backward pass from the target logit
(one per row, where rows share an input: :mod:`layersal.sharing`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .encoding import Encoded
from .families import Family
from .rules import propagation_rules
from .sharing import distinct_batch, row_gradients, row_logits, shared_rows
from .tasks import SINGLE_LABEL, Task


@dataclass
class Pass:
    """Outputs of one forward + backward over a batch.

    ``hidden[l]`` and ``grads[l]`` are ``(B, n, K)`` for layer ``l`` (0 = embedding output);
    ``grads[l] = d y_target / d hidden[l]``, all from the same backward pass, under the
    propagation rule ``rule`` (then they are modified gradients, see :mod:`layersal.rules`).
    ``embedded`` and ``embedded_grad`` are the same at the word-embedding module's output on the
    batch's ``input_ids`` (not on GPT-2's token types, which go through the same module), before
    position embeddings and the embedding LayerNorm.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    hidden: list[torch.Tensor]
    grads: list[torch.Tensor]
    embedded: torch.Tensor
    embedded_grad: torch.Tensor


def forward(model: Any, encoded: Encoded) -> torch.Tensor:
    """Class logits, no gradients (for predictions only)."""
    with torch.no_grad():
        return model(**_on_device(encoded, model)).logits.float()


def forward_backward(
    model: Any,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    family: Family | None = None,
    rule: str = "gradient",
    task: Task = SINGLE_LABEL,
) -> Pass:
    """Run the classifier keeping all hidden states, then differentiate the target logit.

    ``targets`` holds one label index per text; ``None`` explains the ``task``'s default (the
    predicted class), and the differentiated scalar is the task's objective. Samples
    are independent, so one backward of the summed target logits gives each its own gradient.
    Rows that read the same input (the entities of one text) share one forward, and get one
    backward each (:mod:`layersal.sharing`); their logits are the task's view with each row's
    focus. ``rule`` names the propagation rule set applied to the backward passes (``family``
    says where its modules are).
    """
    captured: list[torch.Tensor] = []

    def capture(output: torch.Tensor) -> torch.Tensor:
        captured.append(output.detach().requires_grad_())
        return captured[-1]

    shared = shared_rows(encoded)
    distinct, focus = distinct_batch(encoded, shared)
    inputs = _on_device(distinct, model)
    last: list[torch.Tensor] = []
    handles: list[Any] = []
    if family is not None and family.final_norm is not None:
        # the last hidden state Hugging Face reports is taken after the final norm; the last
        # layer's residual stream is its input
        handles.append(
            model.get_submodule(family.final_norm).register_forward_pre_hook(
                lambda module, args: last.append(args[0])
            )
        )
    try:
        with (
            torch.enable_grad(),
            propagation_rules(model, family, rule),
            on_input_ids(model, inputs["input_ids"], capture),
        ):
            out = model(**inputs, output_hidden_states=True)
            hidden = list(out.hidden_states)
            if last:
                hidden[-1] = last[-1]
            logits = row_logits(task, out.logits, shared, focus)
            if targets is None:
                targets = task.default_targets(logits)
            targets = targets.to(logits.device)
            objectives = task.objective(logits, targets)
            grads = row_gradients(objectives, shared, [captured[0], *hidden])
    finally:
        for handle in handles:
            handle.remove()
    states = [shared.expand(h.detach()) for h in [captured[0], *hidden]]
    grads32 = [
        torch.zeros_like(h, dtype=torch.float32) if g is None else g.detach().float()
        for h, g in zip(states, grads)
    ]
    return Pass(
        logits=logits.detach().float(),
        targets=targets,
        hidden=[h.float() for h in states[1:]],
        grads=grads32[1:],
        embedded=states[0].float(),
        embedded_grad=grads32[0],
    )


@contextlib.contextmanager
def on_input_ids(
    model: Any, input_ids: torch.Tensor, change: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the output of ``model``'s word-embedding module by ``change(output)`` on the one
    call that embeds ``input_ids``, for the forward pass run inside the block.

    The module may run more than once per forward: GPT-2 embeds its token types through it
    too (``wte(token_type_ids)``), and those calls are left as they are. The call on the
    batch's ids is recognised by :func:`embeds`; only the first call that matches is changed
    (one forward per block), and a block whose forward never embedded ``input_ids`` raises,
    since what ran would not be the forward the caller meant to change.
    """
    done: list[bool] = []

    def hook(module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if done or not args or not embeds(args[0], input_ids):
            return None
        done.append(True)
        return change(output)

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if not done:
        raise RuntimeError("the model's word-embedding module never embedded the batch's input_ids")


def embeds(ids: Any, input_ids: torch.Tensor) -> bool:
    """Whether ``ids``, the argument of one call of the word-embedding module, are the batch's
    ``input_ids``.

    Identity of the tensor object cannot be relied on: GPT-2 embeds ``input_ids.view(-1, n)``,
    a new tensor over the same memory. So: the same dtype, device and number of elements, the
    same length along the last (sequence) dimension, and either the same memory (``data_ptr``:
    ``input_ids`` or a view of it; a tensor of token types never shares it) or, for a model
    that copies its ids before embedding them, the same values. Equal values alone could also
    be a token-type tensor that happens to equal the ids (every id 0 or 1, e.g. all padding),
    which is why :func:`on_input_ids` takes only the first matching call: every family embeds
    its words before its token types.
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype != input_ids.dtype:
        return False
    same_shape = ids.numel() == input_ids.numel() and ids.shape[-1:] == input_ids.shape[-1:]
    if ids.device != input_ids.device or not same_shape:
        return False
    if ids.data_ptr() == input_ids.data_ptr():
        return True
    return torch.equal(ids.reshape(input_ids.shape), input_ids)


def _on_device(encoded: Encoded, model: Any) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in encoded.inputs.items()}
