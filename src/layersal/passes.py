"""One forward pass that keeps every hidden state, one backward pass from the target logit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .encoding import Encoded
from .families import Family
from .rules import propagation_rules


@dataclass
class Pass:
    """Outputs of one forward + backward over a batch.

    ``hidden[l]`` and ``grads[l]`` are ``(B, n, K)`` for layer ``l`` (0 = embedding output);
    ``grads[l] = d y_target / d hidden[l]``, all from the same backward pass, under the
    propagation rule ``rule`` (then they are modified gradients, see :mod:`layersal.rules`).
    ``embedded`` and ``embedded_grad`` are the same at the word-embedding module's output,
    before position embeddings and the embedding LayerNorm.
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
) -> Pass:
    """Run the classifier keeping all hidden states, then differentiate the target logit.

    ``targets`` holds one class index per text; ``None`` explains the predicted class. Samples
    are independent, so one backward of the summed target logits gives each its own gradient.
    ``rule`` names the propagation rule set applied to this one backward pass (``family``
    says where its modules are).
    """
    captured: list[torch.Tensor] = []

    def capture(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_()
        captured.append(leaf)
        return leaf

    last: list[torch.Tensor] = []
    handles = [model.get_input_embeddings().register_forward_hook(capture)]
    if family is not None and family.final_norm is not None:
        # the last hidden state Hugging Face reports is taken after the final norm; the last
        # layer's residual stream is its input
        handles.append(
            model.get_submodule(family.final_norm).register_forward_pre_hook(
                lambda module, args: last.append(args[0])
            )
        )
    try:
        with torch.enable_grad(), propagation_rules(model, family, rule):
            out = model(**_on_device(encoded, model), output_hidden_states=True)
            hidden = list(out.hidden_states)
            if last:
                hidden[-1] = last[-1]
            logits = out.logits
            if targets is None:
                targets = logits.detach().argmax(-1)
            targets = targets.to(logits.device)
            target_logit = logits.gather(1, targets.unsqueeze(1)).sum()
            grads = torch.autograd.grad(target_logit, [captured[0], *hidden], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    grads32 = [
        torch.zeros_like(h, dtype=torch.float32) if g is None else g.detach().float()
        for h, g in zip([captured[0], *hidden], grads)
    ]
    return Pass(
        logits=logits.detach().float(),
        targets=targets,
        hidden=[h.detach().float() for h in hidden],
        grads=grads32[1:],
        embedded=captured[0].detach().float(),
        embedded_grad=grads32[0],
    )


def _on_device(encoded: Encoded, model: Any) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in encoded.inputs.items()}
