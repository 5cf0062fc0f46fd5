"""Result dataclasses: what an explanation holds, and its JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

from .words import Token, Word

__all__ = ["Explanation", "LayerReport", "Token", "Word"]


@dataclass
class LayerReport:
    """What one layer says about the input.

    ``coherence``: mean share of each position's decoded probability that lands on the input's
    own tokens. ``own_rank[i]``: rank of token i in its own position's decoded distribution
    (for a causal head: of token i + 1; -1 where that is not an input token).
    ``top_tokens[i]`` / ``top_probs[i]``: that position's top decoded tokens. ``scores``: token
    saliency had this layer been chosen.
    """

    layer: int
    coherence: float | None
    has_position_gradient: bool
    scores: list[float]
    own_rank: list[int] | None = None
    top_tokens: list[list[str]] | None = None
    top_probs: list[list[float]] | None = None
    note: str = ""


@dataclass
class Explanation:
    """Which tokens and words of ``text`` the classifier relied on for ``target``.

    Scores cover input tokens only: special tokens ([CLS], [SEP], padding) are never reported.
    For a pair of texts, ``text`` is the first and ``text_pair`` the second; each token and
    word says which (``segment`` 0 or 1) and its offsets index into that text.
    """

    text: str
    model: str
    method: str
    prediction: str
    target: str
    probabilities: dict[str, float]
    tokens: list[Token]
    words: list[Word]
    layer: int | None
    decoder: str
    word_aggregation: str
    truncated: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    forward_passes: int = 1
    backward_passes: int = 1
    text_pair: str | None = None
    task: str = "single_label"
    """What was explained (:mod:`layersal.tasks`): ``single_label``, ``multi_label`` or
    ``regression``."""
    score: float | None = None
    """The number the model predicted, for a task that predicts one (``regression``); then
    ``probabilities`` is empty and word scores are in the score's units."""
    entity: dict[str, Any] | None = None
    """For a token classifier, the entity explained: ``start``, ``end`` (characters of
    ``text``), ``label`` (its type), ``word`` (``text[start:end]``) and ``probability``."""
    focus: dict[str, Any] | None = None
    """What the explained row looked at, for a task with a view: an entity's span (``start``,
    ``end``) or a zero-shot label's whole pair, and its ``weight``; ``None`` otherwise."""

    @property
    def row_item(self) -> Any:
        """What the model read for this explanation: :attr:`item`, focused as it was
        (:class:`layersal.inputs.Focused`) for a task with a view; re-encoding it gives the
        explained row back (the metrics of :func:`layersal.evaluate.faithfulness_of`)."""
        if self.focus is None:
            return self.item
        from .inputs import Focused

        return Focused(self.item, self.focus.get("start"), self.focus.get("end"),
                       float(self.focus.get("weight", 1.0)))  # fmt: skip

    @property
    def item(self) -> str | tuple[str, str]:
        """What was explained, as :func:`layersal.explain` takes it: the text, or the pair."""
        return self.text if self.text_pair is None else (self.text, self.text_pair)

    @property
    def texts(self) -> list[str]:
        """The segments explained: ``[text]``, or ``[text, text_pair]`` for a pair."""
        return [self.text] if self.text_pair is None else [self.text, self.text_pair]

    @property
    def scores(self) -> list[float]:
        """Token scores, in token order."""
        return [t.score for t in self.tokens]

    def _repr_html_(self) -> str:
        """The explanation as an HTML card (what Jupyter shows)."""
        from .report.html import render_card

        return render_card(self)

    def top_words(self, k: int = 5) -> list[Word]:
        """The ``k`` highest-scoring words."""
        return sorted(self.words, key=lambda w: w.score, reverse=True)[:k]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        """The explanation of a :meth:`to_dict`; keys it does not know (the ``id`` that the
        command line's ``--json`` adds) are left out."""
        known = {f.name for f in dataclass_fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        fields["tokens"] = [Token(**t) for t in data["tokens"]]
        fields["words"] = [Word(**w) for w in data["words"]]
        fields["layers"] = [LayerReport(**r) for r in data.get("layers", [])]
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        return cls.from_dict(json.loads(text))
