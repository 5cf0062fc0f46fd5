"""Baseline saliency methods (Captum): shapes, definitions by hand, passes, seeds, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.saliency import methods, run_method
from layersal.saliency.attention import rollout_matrix
from layersal.saliency.gradients import GAUSS_LEGENDRE_MAX_STEPS
from layersal.saliency.perturbation import weighted_linear_model

from .conftest import FAMILIES

TEXTS = [
    "a gripping, beautifully acted film",
    "dull",
    "the plot meanders for two hours and the dialogue is clumsy , yet the cast shines",
]
# methods whose surrogate or layer must be settled for a job first are tested on their own
BASELINES = sorted(set(methods()) - {"dls", "deeplift_shap", "shapley_control_variate"})
DETERMINISTIC = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 8},
    "occlusion": {},
    "attention": {},
    "rollout": {},
    "gradcam": {},
}
SEEDED = {
    "gradient_shap": {"n_samples": 4, "stdevs": 0.05},
    "lime": {"n_samples": 12},
    "kernel_shap": {"n_samples": 12},
    "shapley_sampling": {"n_permutations": 3},
    "random": {},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(lm, texts=TEXTS):
    return encode(lm.tokenizer, texts, lm.max_length, model_input_names(lm.model))


def logits_of(lm, encoded, input_ids=None):
    inputs = dict(encoded.inputs)
    if input_ids is not None:
        inputs["input_ids"] = input_ids
    with torch.no_grad():
        return lm.model(**inputs).logits.float()


def assert_rel_close(actual, expected, rel=1e-4):
    """|actual - expected| <= rel * max|expected|, and expected is not all zero."""
    actual, expected = torch.as_tensor(actual).float(), torch.as_tensor(expected).float()
    scale = float(expected.abs().max())
    assert scale > 0
    assert actual.shape == expected.shape
    err = float((actual - expected).abs().max())
    assert err <= rel * scale, f"max error {err:.3g} vs scale {scale:.3g}"


class RowSpy:
    """Records the input ids and embedding outputs of every forward of a model."""

    def __init__(self, lm):
        self.lm, self.ids, self.embedded = lm, [], []

    def __enter__(self):
        def before(module, args, kwargs):
            self.ids.append(kwargs["input_ids"].detach().clone())

        def embedded(module, args, output):
            self.embedded.append(output.detach().clone())

        self.handles = [
            self.lm.model.register_forward_pre_hook(before, with_kwargs=True),
            self.lm.model.base_model.embeddings.register_forward_hook(embedded),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    @property
    def rows(self):
        return sum(ids.shape[0] for ids in self.ids)


# ------------------------------------------------------------------------------------ all


@pytest.mark.parametrize("name", BASELINES)
def test_every_method_scores_exactly_the_content_tokens(bert_tiny, name):
    explanations = layersal.explain(TEXTS, bert_tiny, method=name)
    encoded = batch(bert_tiny)
    for row, e in enumerate(explanations):
        assert e.method == name and e.text == TEXTS[row]
        assert len(e.tokens) == int(encoded.content[row].sum())
        assert all(math.isfinite(t.score) for t in e.tokens)
    attribution = run_method(name, bert_tiny, encoded, None, {})
    assert attribution.scores.shape == encoded.input_ids.shape
    assert torch.isfinite(attribution.scores).all()
    assert (attribution.scores[~encoded.content] == 0).all()
    assert attribution.scores[encoded.content].abs().sum() > 0
    torch.testing.assert_close(attribution.logits, logits_of(bert_tiny, encoded))
    assert attribution.targets.tolist() == attribution.logits.argmax(-1).tolist()
    assert len(attribution.layers) == len(TEXTS)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC) + sorted(SEEDED))
def test_batch_equals_one_text_at_a_time(sharp_bert, name):
    options = {**DETERMINISTIC, **SEEDED}[name]
    together = layersal.explain(TEXTS, sharp_bert, method=name, **options)
    for text, e in zip(TEXTS, together):
        alone = layersal.explain(text, sharp_bert, method=name, **options)
        assert_rel_close([t.score for t in e.tokens], [t.score for t in alone.tokens])


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seeded_methods_repeat_and_change_with_the_seed(sharp_bert, name):
    options = SEEDED[name]
    encoded = batch(sharp_bert)
    state = torch.get_rng_state()
    first = run_method(name, sharp_bert, encoded, None, {**options, "seed": 3}).scores
    torch.rand(5), np.random.rand(5)  # moving the global streams must not matter
    again = run_method(name, sharp_bert, encoded, None, {**options, "seed": 3}).scores
    other = run_method(name, sharp_bert, encoded, None, {**options, "seed": 4}).scores
    assert torch.equal(first, again)
    long_text = encoded.content[2]
    assert not torch.allclose(first[2, long_text], other[2, long_text])
    torch.set_rng_state(state)
    before, numpy_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    run_method(name, sharp_bert, encoded, None, options)
    assert torch.equal(torch.get_rng_state(), before), "torch's global RNG state changed"
    assert (np.random.get_state()[1] == numpy_before).all(), "numpy's global RNG state changed"


def _expected_passes(name, k, words):
    """Documented passes per text for content lengths ``k`` and word counts ``words``
    (docs/methods.md)."""
    mean = lambda values: math.ceil(sum(values) / len(values))  # noqa: E731
    return {
        "gradient": (1, 1),
        "input_x_gradient": (1, 1),
        "lrp": (1, 1),
        "integrated_gradients": (51, 50),
        "sequential_integrated_gradients": (
            1 + mean([16 * w for w in words]),
            mean([16 * w for w in words]),
        ),
        "gradient_shap": (6, 5),
        "occlusion": (1 + mean([2 + n - min(3, n) for n in k]), 0),
        "lime": (26, 0),
        "kernel_shap": (1 + mean([25 if n > 1 else 2 for n in k]), 0),
        "shapley_sampling": (1 + mean([1 + 25 * n for n in k]), 0),
        "attention": (1, 0),
        "rollout": (1, 0),
        "gradcam": (1, 1),
        "random": (1, 0),
    }[name]


@pytest.mark.parametrize("name", BASELINES)
def test_pass_counts_are_as_documented_and_match_the_forwards_run(bert_tiny, name):
    encoded = batch(bert_tiny)
    k = encoded.content.sum(-1).tolist()
    words = [
        len({ids[p] for p in range(len(ids)) if encoded.content[row, p]})
        for row, ids in enumerate(encoded.word_ids)
    ]
    with RowSpy(bert_tiny) as spy:
        attribution = run_method(name, bert_tiny, encoded, None, {})
    expected = _expected_passes(name, k, words)
    assert (attribution.forward_passes, attribution.backward_passes) == expected
    assert math.ceil(spy.rows / len(TEXTS)) == attribution.forward_passes


def test_integrated_gradients_passes_with_internal_batches(bert_tiny):
    encoded = batch(bert_tiny)
    whole = run_method("integrated_gradients", bert_tiny, encoded, None, {"n_steps": 7})
    split = run_method(
        "integrated_gradients", bert_tiny, encoded, None, {"n_steps": 7, "internal_batch_size": 6}
    )
    assert (split.forward_passes, split.backward_passes) == (8, 7)
    assert_rel_close(split.scores, whole.scores)


def test_integrated_gradients_bounds_its_internal_batch_by_default(bert_tiny, monkeypatch):
    from layersal.saliency import gradients

    encoded = batch(bert_tiny)
    whole = run_method(
        "integrated_gradients",
        bert_tiny,
        encoded,
        None,
        {"n_steps": 20, "internal_batch_size": 10_000},
    )
    width = encoded.input_ids.shape[1]
    monkeypatch.setattr(gradients, "IG_TOKEN_BUDGET", 3 * width * len(encoded))
    rows_seen: list[int] = []
    layer = bert_tiny.model.bert.encoder.layer[0]
    hook = layer.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[0])
    )
    try:
        bounded = run_method("integrated_gradients", bert_tiny, encoded, None, {"n_steps": 20})
    finally:
        hook.remove()
    assert max(rows_seen) <= 3 * len(encoded)  # at most 3 steps' rows per model pass
    assert sum(rows_seen) == 21 * len(encoded)  # the prediction, then 20 steps
    assert_rel_close(bounded.scores, whole.scores)


FAMILY_METHODS = {
    "gradient": {},
    "integrated_gradients": {"n_steps": 4},
    "occlusion": {},
    "lime": {"n_samples": 6},
    "attention": {},
    "rollout": {},
}


@pytest.fixture(scope="module")
def family_models(tiny_dirs):
    return {
        family: layersal.load(classifier_dir, lm_head=mlm_dir)
        for family, (classifier_dir, mlm_dir) in tiny_dirs.items()
        if family != "bert"
    }


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])
def test_other_families_batch_equals_single_and_model_is_left_as_it_was(family_models, family):
    lm = family_models[family]
    implementation = lm.model.config._attn_implementation
    encoded = batch(lm)
    for name, options in FAMILY_METHODS.items():
        together = run_method(name, lm, encoded, None, options).scores
        assert (together[~encoded.content] == 0).all() and torch.isfinite(together).all()
        for row, text in enumerate(TEXTS):
            alone = run_method(name, lm, batch(lm, [text]), None, options).scores[0]
            assert_rel_close(together[row, : alone.shape[0]], alone)
    assert lm.model.config._attn_implementation == implementation


# ------------------------------------------------------------------- definitions by hand


def _embedding_gradient(lm, encoded, targets):
    """d y_c / d e by plain autograd, feeding word embeddings through ``inputs_embeds``."""
    embeddings = lm.model.get_input_embeddings()(encoded.input_ids).detach().requires_grad_()
    inputs = {k: v for k, v in encoded.inputs.items() if k != "input_ids"}
    logits = lm.model(inputs_embeds=embeddings, **inputs).logits
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), embeddings)
    return embeddings.detach(), grad


def test_gradient_and_input_x_gradient_equal_autograd(sharp_bert):
    encoded = batch(sharp_bert)
    targets = logits_of(sharp_bert, encoded).argmax(-1)
    embeddings, grad = _embedding_gradient(sharp_bert, encoded, targets)
    content = encoded.content
    gradient = run_method("gradient", sharp_bert, encoded, None, {})
    assert_rel_close(gradient.scores, grad.norm(dim=-1) * content)
    ixg = run_method("input_x_gradient", sharp_bert, encoded, None, {})
    assert_rel_close(ixg.scores, (grad * embeddings).sum(-1) * content)
    # an explicit target is honoured (and the predicted one equals targets=None)
    other = (targets + 1) % 3
    _, grad_other = _embedding_gradient(sharp_bert, encoded, other)
    explicit = run_method("gradient", sharp_bert, encoded, other, {})
    assert explicit.targets.tolist() == other.tolist()
    assert_rel_close(explicit.scores, grad_other.norm(dim=-1) * content)
    assert not torch.allclose(explicit.scores, gradient.scores)


@pytest.mark.parametrize(
    ("baseline", "n_steps"),
    [("pad", 50), ("mask", 50), ("pad", GAUSS_LEGENDRE_MAX_STEPS + 1)],  # last: trapezoid rule
)
def test_integrated_gradients_completeness(sharp_bert, baseline, n_steps):
    encoded = batch(sharp_bert)
    token = getattr(sharp_bert.tokenizer, f"{baseline}_token_id")
    reference = torch.where(
        encoded.content, torch.full_like(encoded.input_ids, token), encoded.input_ids
    )
    targets = logits_of(sharp_bert, encoded).argmax(-1)
    difference = logits_of(sharp_bert, encoded) - logits_of(sharp_bert, encoded, reference)
    difference = difference.gather(1, targets[:, None])[:, 0]
    scores = run_method(
        "integrated_gradients",
        sharp_bert,
        encoded,
        None,
        {"baseline": baseline, "n_steps": n_steps},
    ).scores
    assert difference.abs().min() > 1e-3
    assert ((scores.sum(-1) - difference).abs() <= 0.03 * difference.abs()).all()


def test_occlusion_is_the_drop_of_the_target_logit(sharp_bert):
    text = TEXTS[0]
    encoded = batch(sharp_bert, [text])
    full = logits_of(sharp_bert, encoded)[0]
    target = int(full.argmax())
    positions = encoded.content[0].nonzero().flatten().tolist()
    mask_id = sharp_bert.tokenizer.mask_token_id

    def drop(window):
        ids = encoded.input_ids.clone()
        ids[0, window] = mask_id
        return float(full[target] - logits_of(sharp_bert, encoded, ids)[0, target])

    one = run_method("occlusion", sharp_bert, encoded, None, {"span": 1}).scores[0, positions]
    assert_rel_close(one, [drop([p]) for p in positions])
    # window 2: each token gets the mean drop of the windows of 2 content tokens covering it
    windows = [positions[i : i + 2] for i in range(len(positions) - 1)]
    drops = [drop(w) for w in windows]
    expected = [
        sum(d for w, d in zip(windows, drops) if p in w) / sum(p in w for w in windows)
        for p in positions
    ]
    two = run_method("occlusion", sharp_bert, encoded, None, {"span": 2}).scores[0, positions]
    assert_rel_close(two, expected)


def test_shapley_sampling_and_kernel_shap_add_up_to_the_logit_difference(sharp_bert):
    encoded = batch(sharp_bert)
    mask = torch.full_like(encoded.input_ids, sharp_bert.tokenizer.mask_token_id)
    reference = torch.where(encoded.content, mask, encoded.input_ids)
    targets = logits_of(sharp_bert, encoded).argmax(-1)
    difference = logits_of(sharp_bert, encoded) - logits_of(sharp_bert, encoded, reference)
    difference = difference.gather(1, targets[:, None])[:, 0]
    shapley = run_method("shapley_sampling", sharp_bert, encoded, None, {"n_permutations": 2})
    assert_rel_close(shapley.scores.sum(-1), difference)  # exact for every permutation
    kernel = run_method("kernel_shap", sharp_bert, encoded, None, {"n_samples": 10})
    assert_rel_close(kernel.scores.sum(-1), difference, rel=1e-2)  # end points weighted 1e6
    # a single token ("dull") gets exactly the difference
    assert float(kernel.scores[1].sum()) == pytest.approx(float(difference[1]), rel=1e-4)


def test_weighted_linear_model_fits_by_hand():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((30, 4), 0.5), generator=g)
    y = 0.5 + x @ torch.tensor([1.0, -2.0, 0.0, 3.0]) + 0.01 * torch.randn(30, generator=g)
    w = torch.rand(30, generator=g) + 0.1
    exact = weighted_linear_model(0.0)
    exact.fit(DataLoader(TensorDataset(x, y, w), batch_size=30))
    design = torch.cat([x, torch.ones(30, 1)], 1).double()
    W = torch.diag(w.double())
    solution = torch.linalg.solve(design.T @ W @ design, design.T @ W @ y.double())
    assert_rel_close(exact.representation()[0], solution[:4], rel=1e-5)
    ridge = weighted_linear_model(2.0)
    ridge.fit(DataLoader(TensorDataset(x, y, w), batch_size=30))
    xm = (w[:, None] * x).sum(0) / w.sum()
    ym = (w * y).sum() / w.sum()
    xc, yc = (x - xm).double(), (y - ym).double()
    beta = torch.linalg.solve(xc.T @ W @ xc + 2.0 * torch.eye(4, dtype=torch.double), xc.T @ W @ yc)
    assert_rel_close(ridge.representation()[0], beta, rel=1e-5)


def _eager_attentions(lm, encoded):
    before = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return lm.model(**encoded.inputs, output_attentions=True).attentions
    finally:
        lm.model.set_attn_implementation(before)


def test_attention_and_rollout_by_hand(sharp_bert):
    encoded = batch(sharp_bert)
    implementation = sharp_bert.model.config._attn_implementation
    attention = run_method("attention", sharp_bert, encoded, None, {})
    rollout = run_method("rollout", sharp_bert, encoded, None, {})
    assert sharp_bert.model.config._attn_implementation == implementation  # restored
    maps = _eager_attentions(sharp_bert, encoded)
    assert_rel_close(attention.scores, maps[-1].mean(1)[:, 0, :] * encoded.content)
    for row, text in enumerate(TEXTS):  # rollout of each text alone, 0.5 A + 0.5 I
        alone = batch(sharp_bert, [text])
        rolled = torch.eye(alone.input_ids.shape[1])
        for layer in _eager_attentions(sharp_bert, alone):
            rolled = (0.5 * layer[0].mean(0) + 0.5 * torch.eye(rolled.shape[0])) @ rolled
        n = alone.input_ids.shape[1]
        assert_rel_close(rollout.scores[row, :n], rolled[0] * alone.content[0])
    rows = rollout_matrix(list(maps)).sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_gradcam_is_the_pooled_gradient_times_activation_at_layer_minus_2(sharp_bert):
    encoded = batch(sharp_bert)
    out = sharp_bert.model(**encoded.inputs, output_hidden_states=True)
    targets = out.logits.argmax(-1)
    hidden = out.hidden_states[1]  # layer -2 of a 2-layer model
    (grad,) = torch.autograd.grad(out.logits.gather(1, targets[:, None]).sum(), hidden)
    real = encoded.attention_mask.unsqueeze(-1).float()
    alpha = (grad * real).sum(1) / real.sum(1)
    expected = torch.einsum("bnk,bk->bn", hidden.detach(), alpha).clamp_min(0) * encoded.content
    result = run_method("gradcam", sharp_bert, encoded, None, {})
    assert result.layers == [1, 1, 1]
    assert_rel_close(result.scores, expected)


def test_random_scores_are_uniform_per_text(bert_tiny):
    encoded = batch(bert_tiny)
    scores = run_method("random", bert_tiny, encoded, None, {"seed": 5}).scores
    values = scores[encoded.content]
    assert ((values > 0) & (values < 1)).all()
    assert len(set(values.tolist())) == len(values)


# --------------------------------------------------------------- inputs kept / perturbed


@pytest.mark.parametrize(
    "name, options",
    [
        ("occlusion", {}),
        ("lime", {"n_samples": 8}),
        ("kernel_shap", {"n_samples": 8}),
        ("shapley_sampling", {"n_permutations": 2}),
    ],
)
def test_perturbations_never_touch_special_tokens(bert_tiny, name, options):
    tokenizer = bert_tiny.tokenizer
    encoded = batch(bert_tiny)
    with RowSpy(bert_tiny) as spy:
        run_method(name, bert_tiny, encoded, None, options)
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    originals = [encoded.input_ids[r][encoded.attention_mask[r].bool()] for r in range(3)]
    perturbed = 0
    for ids in spy.ids[1:]:  # the first forward is the prediction on the batch itself
        for row in ids:
            original = next(o for o in originals if len(o) == len(row))
            keep = torch.tensor([int(t) in special for t in original])
            assert torch.equal(row[keep], original[keep])
            changed = row[~keep] != original[~keep]
            assert (row[~keep][changed] == tokenizer.mask_token_id).all()
            perturbed += int(changed.any())
    assert perturbed > 0


@pytest.mark.parametrize(
    "name, options",
    [
        ("integrated_gradients", {"n_steps": 4, "baseline": "mask"}),
        ("gradient_shap", {"n_samples": 3, "stdevs": 0.5}),
    ],
)
def test_gradient_paths_keep_special_and_padding_embeddings(bert_tiny, name, options):
    encoded = batch(bert_tiny)
    with torch.no_grad():
        clean = bert_tiny.model.base_model.embeddings(
            input_ids=encoded.input_ids, token_type_ids=encoded.inputs.get("token_type_ids")
        )
    with RowSpy(bert_tiny) as spy:
        run_method(name, bert_tiny, encoded, None, options)
    forwards = spy.embedded[1:]  # the first forward is the prediction on the batch itself
    if name == "integrated_gradients":  # whole batch, steps stacked: row j is text j % 3
        pairs = [(j % 3, row) for out in forwards for j, row in enumerate(out)]
    else:  # one forward per text (its samples together), without padding
        assert len(forwards) == 3
        pairs = [(r, row) for r, out in enumerate(forwards) for row in out]
    moved = 0
    for r, row in pairs:
        n = row.shape[0]
        kept = ~encoded.content[r, :n]
        assert torch.allclose(row[kept], clean[r, :n][kept], atol=1e-6), "a special token moved"
        moved += int(not torch.allclose(row, clean[r, :n], atol=1e-6))
    assert moved > 0


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, options",
    [
        ("integrated_gradients", {"n_steps": 0}),
        ("integrated_gradients", {"baseline": "zero"}),
        ("integrated_gradients", {"internal_batch_size": 0}),
        ("gradient_shap", {"n_samples": 0}),
        ("gradient_shap", {"stdevs": -1.0}),
        ("gradient_shap", {"baseline": []}),
        ("occlusion", {"span": 0}),
        ("occlusion", {"perturbations_per_eval": 0}),
        ("lime", {"n_samples": 1}),
        ("lime", {"kernel_width": 0}),
        ("kernel_shap", {"seed": "a"}),
        ("shapley_sampling", {"n_permutations": 0}),
        ("gradcam", {"layer": "top"}),
        ("gradcam", {"layer": 7}),
        ("random", {"seed": 1.5}),
        ("attention", {"layer": 1}),
    ],
)
def test_bad_options_raise_input_error(bert_tiny, name, options):
    with pytest.raises(InputError):
        layersal.explain(TEXTS[:1], bert_tiny, method=name, **options)


def test_deeplift_shap_is_refused_with_the_reason(bert_tiny):
    with pytest.raises(InputError, match=r"LayerNorm.*logit difference"):
        layersal.explain(TEXTS[:1], bert_tiny, method="deeplift_shap")


def test_captum_deeplift_really_breaks_completeness_here(sharp_bert):
    """Why deeplift_shap is refused: Captum's DeepLift on the same embedding forward does not
    add up to the logit difference (it would, up to ~1e-6, if the model were supported)."""
    from captum.attr import DeepLift

    from layersal.saliency._common import EmbeddingForward, embedding_arguments, word_embeddings

    encoded = batch(sharp_bert)
    names, args = embedding_arguments(encoded, torch.device("cpu"))
    forward = EmbeddingForward(sharp_bert, names)
    x = word_embeddings(sharp_bert, encoded.input_ids)
    reference = torch.where(encoded.content, torch.zeros_like(encoded.input_ids), encoded.input_ids)
    base = word_embeddings(sharp_bert, reference)
    targets = logits_of(sharp_bert, encoded).argmax(-1)
    with pytest.warns(UserWarning):
        attributions, delta = DeepLift(forward).attribute(
            x,
            baselines=base,
            target=targets,
            additional_forward_args=args,
            return_convergence_delta=True,
        )
    difference = logits_of(sharp_bert, encoded) - logits_of(sharp_bert, encoded, reference)
    difference = difference.gather(1, targets[:, None])[:, 0]
    total = attributions.sum((1, 2)).detach()
    torch.testing.assert_close(total - delta.detach(), difference, rtol=1e-3, atol=1e-4)
    assert ((total - difference).abs() > 0.05 * difference.abs()).any()
