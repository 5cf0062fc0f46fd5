"""Layer gradients from the single backward pass agree with finite differences."""

from __future__ import annotations

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.passes import forward_backward

from .conftest import FAMILIES


def _blocks(model) -> torch.nn.ModuleList:
    """The model's transformer blocks (the first module list in it)."""
    return next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))


def _target_logit_with_nudge(lm, inputs, layer, position, feature, delta, target) -> float:
    """The target logit with hidden state ``layer`` nudged: the input of block ``layer``, or
    the output of the last block (the last layer's residual stream, before any final norm)."""

    def nudged(tensor):
        tensor = tensor.clone()
        tensor[0, position, feature] += delta
        return tensor

    def on_input(module, args, kwargs):
        if args:
            return (nudged(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": nudged(kwargs["hidden_states"])}

    def on_output(module, args, output):
        if isinstance(output, tuple):
            return (nudged(output[0]), *output[1:])
        return nudged(output)

    blocks = _blocks(lm.model)
    if layer < len(blocks):
        handle = blocks[layer].register_forward_pre_hook(on_input, with_kwargs=True)
    else:
        handle = blocks[-1].register_forward_hook(on_output)
    try:
        with torch.no_grad():
            return float(lm.model(**inputs).logits[0, target])
    finally:
        handle.remove()


def _float64_throughout(monkeypatch) -> None:
    """Keep float64 tensors float64 where a model upcasts to float32 on purpose (RMSNorm,
    rotary embeddings): float32 rounding of the logit would swamp the 1e-6 step."""
    as_float, as_type = torch.Tensor.float, torch.Tensor.to

    def keep_float(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else as_float(self, *args, **kwargs)

    def keep_to(self, *args, **kwargs):
        if self.dtype == torch.float64:
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
            if kwargs.get("dtype") is torch.float32:
                kwargs["dtype"] = torch.float64
        return as_type(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "float", keep_float)
    monkeypatch.setattr(torch.Tensor, "to", keep_to)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_gradients_match_finite_differences(tiny_dirs, family, monkeypatch):
    _float64_throughout(monkeypatch)
    classifier_dir, mlm_dir = tiny_dirs[family]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    lm.model.double()
    encoded = encode(
        lm.tokenizer, ["the film was not bad at all"], lm.max_length, model_input_names(lm.model)
    )
    inputs = encoded.inputs
    result = forward_backward(lm.model, encoded, family=lm.family)
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
