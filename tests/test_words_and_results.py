"""Sub-words merged into words with char offsets; Explanation JSON round trip."""

from __future__ import annotations

import pytest

import layersal
from layersal.explanation import Explanation
from layersal.words import aggregate, group_words


def test_group_words_merges_pieces_of_one_word():
    spans = group_words([0, 0, 1, 2, 2, 2], [(0, 2), (2, 5), (6, 7), (8, 10), (10, 12), (12, 13)])
    assert [(s.start, s.end, s.tokens) for s in spans] == [
        (0, 5, (0, 1)),
        (6, 7, (2,)),
        (8, 13, (3, 4, 5)),
    ]


@pytest.mark.parametrize("rule, expected", [("sum", -0.5), ("mean", -0.5 / 3), ("max", -2.0)])
def test_word_aggregation_rules(rule, expected):
    assert aggregate([0.5, -2.0, 1.0], rule) == pytest.approx(expected)


def test_words_cover_their_pieces_in_the_original_text(bert_tiny):
    text = "Unbelievably, the screenwriters' choices feel   effortless!"
    explanation = layersal.explain(text, bert_tiny, layer=0, word_aggregation="sum")
    assert [w.text for w in explanation.words] == [
        "Unbelievably",
        ",",
        "the",
        "screenwriters",
        "'",
        "choices",
        "feel",
        "effortless",
        "!",
    ]
    multi = [w for w in explanation.words if len(w.tokens) > 1]
    assert multi, "some word should be split into several pieces"
    for word in explanation.words:
        assert word.text == text[word.start : word.end]
        pieces = [explanation.tokens[t] for t in word.tokens]
        assert word.score == pytest.approx(sum(p.score for p in pieces))
        assert all(explanation.tokens[t].word == explanation.words.index(word) for t in word.tokens)


def test_json_round_trip(bert_tiny):
    explanation = layersal.explain("a clumsy yet charming remake", bert_tiny, layer_report=True)
    again = Explanation.from_json(explanation.to_json())
    assert again == explanation
    data = explanation.to_dict()
    assert {"text", "tokens", "words", "prediction", "probabilities", "layer", "layers"} <= set(
        data
    )
    assert data["layers"][0]["coherence"] == explanation.layers[0].coherence
