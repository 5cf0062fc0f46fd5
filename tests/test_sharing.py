"""The entities of one text share its forward pass: one forward per distinct input, one
backward per entity, and the same scores as each entity explained alone."""

from __future__ import annotations

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.inputs import Focused
from layersal.passes import forward_backward, on_input_ids
from layersal.sharing import row_batches, shared_rows

from .test_entities import TEXT, token_classifier

OTHER = "Apple opened a store in Paris near Apple"
CASES = [
    ("dls", {"layer": 1, "rule": "cp_id", "decode": False}),
    ("dls", {"layer": 1, "rule": "cp_id", "decode": True}),
    ("dls", {"layer": 2, "rule": "gradient"}),
    ("dls", {"layer": "input", "rule": "cp_id"}),
    ("gradient", {}),
    ("input_x_gradient", {}),
    ("lrp", {}),
]


@pytest.fixture(scope="module")
def tokens(tiny_dirs, tmp_path_factory):
    folder = token_classifier(
        tmp_path_factory.mktemp("shared"), bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1]
    )
    return layersal.load(folder, lm_head=tiny_dirs["bert"][1])


class Rows:
    """Rows through the model forward, and backward from its logits, counted by hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.forward, self.backward, self.backward_calls = model, 0, 0, 0

    def __enter__(self) -> Rows:
        def before(module, args, kwargs):
            self.forward += int(kwargs.get("input_ids", args[0] if args else None).shape[0])

        def after(module, args, kwargs, output):
            if output.logits.requires_grad:
                output.logits.register_hook(self._backward)

        self.handles = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True),
        ]
        return self

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward += int(grad.shape[0])
        self.backward_calls += 1

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(("method", "options"), CASES)
def test_shared_entities_score_as_each_entity_alone(tokens, method, options):
    texts = [TEXT, OTHER, "nothing here at all"]
    with Rows(tokens.model) as rows:
        grouped = layersal.explainer(tokens, method, **options).explain_grouped(texts)
    counts = [len(g) for g in grouped]
    assert min(counts) >= 2 and len(set(counts)) == 3, "the biases make entities"
    # the 3 texts to find their entities; then each text once (a batch each: their numbers
    # of entities differ), and one backward of one row per entity
    assert rows.forward == len(texts) + len(texts)
    assert rows.backward_calls == rows.backward == sum(counts)
    # batch_size=1: every entity its own batch, its own forward and backward
    with Rows(tokens.model) as alone_rows:
        alone = layersal.explainer(tokens, method, batch_size=1, **options).explain_grouped(texts)
    assert alone_rows.forward == len(texts) + sum(counts)
    for own, single in zip(grouped, alone):
        spans = [(e.entity["start"], e.entity["end"], e.entity["label"]) for e in own]
        assert spans == [(e.entity["start"], e.entity["end"], e.entity["label"]) for e in single]
        for e, one in zip(own, single):
            assert e.target == one.target and e.layer == one.layer
            assert e.probabilities == pytest.approx(one.probabilities, rel=1e-5)
            assert e.scores == pytest.approx(one.scores, rel=1e-4, abs=1e-6), (method, e.entity)
            assert e.scores != pytest.approx(own[0].scores) or e is own[0]


def test_each_shared_backward_is_its_entitys_gradient_by_finite_differences(tokens):
    """forward_backward over the entity rows of one text (one forward, a backward each): each
    row's embedding gradient agrees with central differences of that row's own scalar."""
    spans = [(0, 13, "PER"), (18, 23, "ORG"), (27, 33, "LOC")]
    items = [Focused(TEXT, s, e) for s, e, _ in spans]
    encoded = encode(tokens.tokenizer, items, 64, model_input_names(tokens.model))
    targets = torch.tensor([tokens.labels.index(label) for *_, label in spans])
    model = tokens.model.eval()
    with tokens.borrowed(), Rows(model) as rows:
        shared = forward_backward(model, encoded, targets, family=tokens.family, task=tokens.task)
    assert (rows.forward, rows.backward, rows.backward_calls) == (1, 3, 3)
    grads = shared.embedded_grad
    assert not torch.allclose(grads[0], grads[1]), "each row its own gradient"
    torch.manual_seed(0)
    h = 1e-3
    for r in range(len(spans)):
        direction = torch.randn_like(grads[r]) * encoded.content[r].unsqueeze(-1)
        one = {k: v[r : r + 1] for k, v in encoded.inputs.items()}

        def value(shift: float, one=one, direction=direction, r=r) -> float:
            with (
                tokens.borrowed(),
                torch.no_grad(),
                on_input_ids(model, one["input_ids"], lambda out: out + shift * direction),
            ):
                return float(model(**one).logits[0, targets[r]])

        numeric = (value(h) - value(-h)) / (2 * h)
        analytic = float((grads[r] * direction).sum())
        assert analytic == pytest.approx(numeric, rel=3e-2, abs=1e-4), spans[r]


def test_shared_rows_and_their_slots(tokens):
    items = [Focused(TEXT, 0, 6), Focused(OTHER, 0, 5), Focused(TEXT, 18, 23), Focused(TEXT)]
    items += [Focused(TEXT, 27, 33)]
    encoded = encode(tokens.tokenizer, items, 64, model_input_names(tokens.model))
    shared = shared_rows(encoded)
    assert shared.distinct == [0, 1]  # the whole-text row reads TEXT too (its focus aside)
    assert shared.index.tolist() == [0, 1, 0, 0, 0]
    assert shared.slots == [[0, 1], [2], [3], [4]]
    assert not shared.trivial
    plain = shared_rows(encode(tokens.tokenizer, [TEXT, OTHER], 64, {"input_ids"}))
    assert plain.trivial and plain.slots == [[0, 1]]


def test_row_batches_keep_a_texts_rows_together():
    a, b, c = "a text", "another text", "the longest text of the three"
    items = [Focused(c, 0, 3), Focused(a, 0, 1), Focused(c, 4, 11), Focused(b, 0, 7)]
    items += [Focused(c, 12, 16), Focused(a, 2, 6)]
    # by rows per text: b (1 row), a (2), c (3); a batch holds texts of as many rows
    assert row_batches(items, 8) == [[3], [1, 5], [0, 2, 4]]
    assert row_batches(items, 2) == [[3], [1, 5], [0, 2], [4]]  # c split: more than a batch
    twice = [Focused(c, 0, 3), Focused(a, 0, 1), Focused(c, 4, 11), Focused(a, 2, 6)]
    assert row_batches(twice, 4) == [[1, 3, 0, 2]]  # two texts of 2 rows: a (shorter), c
    assert row_batches(twice, 3) == [[1, 3], [0, 2]]
    assert row_batches([c, a, b], 2) == [[1, 2], [0]]  # plain texts: by length
