"""Long documents: overlapping windows merged into one explanation."""

from __future__ import annotations

import warnings

import pytest

import layersal
from layersal.errors import InputError
from layersal.explanation import Explanation, LayerReport, Token, Word
from layersal.saliency import Settled
from layersal.windows import merge_windows, window_overlap

LONG = " ".join(
    ["An unexpectedly moving, gorgeously shot drama."] * 30
    + ["The dialogue, sadly, is clumsy."] * 30
)


def test_window_and_stride_are_checked(bert_tiny):
    assert window_overlap(bert_tiny.tokenizer, 128, None, None) == (128, 63, 63)
    assert window_overlap(bert_tiny.tokenizer, 128, 32, 10) == (32, 10, 20)
    for window, stride in ((200, None), (2, None), (32, 31), (32, 0)):
        with pytest.raises(InputError):
            window_overlap(bert_tiny.tokenizer, 128, window, stride)


def test_long_text_gets_one_explanation_over_every_word(bert_tiny, monkeypatch):
    calls = []
    real = Settled.run

    def spy(self, lm, encoded, targets):
        calls.append(len(encoded))
        return real(self, lm, encoded, targets)

    monkeypatch.setattr(Settled, "run", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", layersal.TruncationWarning)
        explanation = layersal.explain(
            LONG, bert_tiny, window=64, stride=32, batch_size=4, layer=1, decode=False
        )
    full = bert_tiny.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert [t.text for t in explanation.tokens] == bert_tiny.tokenizer.convert_ids_to_tokens(full)
    assert len(explanation.words) == len(LONG.replace(",", " ,").replace(".", " .").split())
    assert all(w.text == LONG[w.start : w.end] for w in explanation.words)
    assert not explanation.truncated and explanation.options["windows"] > 4
    assert max(calls) <= 4, "window batches stay within batch_size rows"
    assert sum(calls) == explanation.options["windows"]
    assert sum(explanation.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(len(r.scores) == len(explanation.tokens) for r in explanation.layers)
    assert explanation.forward_passes == 2 * explanation.options["windows"]


def test_windows_explain_the_document_prediction(bert_tiny):
    windows = layersal.explain(LONG, bert_tiny, window=64, stride=48, layer=1, decode=False)
    assert (
        windows.target
        == windows.prediction
        == max(windows.probabilities, key=windows.probabilities.get)
    )
    forced = layersal.explain(
        LONG, bert_tiny, window=64, stride=48, layer=1, decode=False, target="neutral"
    )
    assert forced.target == "neutral"


def _part(tokens: list[tuple[str, int, int, float]], layer_scores: list[float]) -> Explanation:
    toks = [Token(text=t, start=s, end=e, score=v, word=i) for i, (t, s, e, v) in enumerate(tokens)]
    return Explanation(
        text="",
        model="m",
        method="dls",
        prediction="pos",
        target="pos",
        probabilities={},
        tokens=toks,
        words=[Word(t.text, t.start, t.end, t.score, [i]) for i, t in enumerate(toks)],
        layer=1,
        decoder="mlm_head",
        word_aggregation="sum",
        options={},
        layers=[
            LayerReport(layer=1, coherence=0.5, has_position_gradient=True, scores=layer_scores)
        ],
    )


def test_overlapping_tokens_get_the_mean_of_their_windows(bert_tiny):
    text = "good bad ugly"
    first = _part([("good", 0, 4, 1.0), ("bad", 5, 8, 3.0)], [1.0, 1.0])
    second = _part([("bad", 5, 8, 5.0), ("ugly", 9, 13, -2.0)], [3.0, 0.0])
    merged = merge_windows(text, bert_tiny.tokenizer, [first, second], {"pos": 1.0}, "pos", 4, 1)
    assert [(t.text, t.score) for t in merged.tokens] == [
        ("good", 1.0),
        ("bad", 4.0),
        ("ugly", -2.0),
    ]
    assert [w.text for w in merged.words] == ["good", "bad", "ugly"]
    assert merged.layers[0].scores == [1.0, 2.0, 0.0]
    assert merged.layers[0].coherence == pytest.approx(0.5)
    assert merged.options["windows"] == 2


def test_short_texts_are_unchanged_by_the_window_machinery(bert_tiny):
    text = "a short and sweet film"
    a = layersal.explain(text, bert_tiny, layer=1)
    b = layersal.explain(text, bert_tiny, layer=1, long_texts="truncate")
    assert a.to_dict() == b.to_dict()
    with pytest.raises(InputError, match="long_texts"):
        layersal.explain(text, bert_tiny, long_texts="split")


def test_progress_reports_every_window_of_a_long_text(sst2_tiny):
    from layersal.windows import window_count, window_overlap

    text = "the film is long and slow but the cast is good " * 40
    size, step, _ = window_overlap(sst2_tiny.tokenizer, sst2_tiny.max_length, 64, None)
    seen: list[tuple[int, int]] = []
    layersal.explain(
        [text, "short"],
        sst2_tiny,
        window=64,
        batch_size=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    total = window_count(sst2_tiny.tokenizer, text, size, step) + 1
    assert total > 3 and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 1
