"""Layer gradients from the single backward pass agree with finite differences."""

from __future__ import annotations

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.passes import forward_backward

from .conftest import FAMILIES


def _block(model, family, layer: int):
    """The module whose output is hidden state ``layer`` (0: the embeddings)."""
    base = getattr(model, family.base)
    if layer == 0:
        return base.embeddings
    blocks = next(m for m in base.modules() if isinstance(m, torch.nn.ModuleList))
    return blocks[layer - 1]


def _target_logit_with_nudge(lm, inputs, layer, position, feature, delta, target) -> float:
    def nudge(module, args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        tensor = tensor.clone()
        tensor[0, position, feature] += delta
        return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

    handle = _block(lm.model, lm.family, layer).register_forward_hook(nudge)
    try:
        with torch.no_grad():
            return float(lm.model(**inputs).logits[0, target])
    finally:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_gradients_match_finite_differences(tiny_dirs, family):
    classifier_dir, mlm_dir = tiny_dirs[family]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    lm.model.double()
    encoded = encode(
        lm.tokenizer, ["the film was not bad at all"], lm.max_length, model_input_names(lm.model)
    )
    inputs = encoded.inputs
    result = forward_backward(lm.model, encoded)
    target = int(result.targets[0])
    generator = torch.Generator().manual_seed(1)
    eps = 1e-6
    checked = 0
    for layer in range(lm.num_layers + 1):
        grad = result.grads[layer][0]
        for _ in range(4):
            position = int(torch.randint(1, grad.shape[0] - 1, (1,), generator=generator))
            feature = int(torch.randint(0, grad.shape[1], (1,), generator=generator))
            plus = _target_logit_with_nudge(lm, inputs, layer, position, feature, eps, target)
            minus = _target_logit_with_nudge(lm, inputs, layer, position, feature, -eps, target)
            numeric = (plus - minus) / (2 * eps)
            analytic = float(grad[position, feature])
            assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-8), (
                layer,
                position,
                feature,
            )
            checked += 1
    assert checked == 4 * (lm.num_layers + 1)


def test_last_layer_of_cls_classifier_has_no_position_gradient(bert_tiny):
    encoded = encode(bert_tiny.tokenizer, ["a quiet, moving film"], bert_tiny.max_length)
    result = forward_backward(bert_tiny.model, encoded)
    last = result.grads[-1][0]
    assert last[0].abs().max() > 0
    assert torch.count_nonzero(last[1:]) == 0
    assert result.grads[-2][0, 1:].abs().max() > 0
