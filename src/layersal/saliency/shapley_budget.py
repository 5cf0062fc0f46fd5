"""``shapley_control_variate``: Shapley values of the explained output at a budget of passes.

The game is the one the faithfulness metrics play: ``v(S)`` is what the task shows for the
explained class (a probability; a regression head's score) when the content tokens outside
``S`` are hidden as the metrics hide them ([MASK]). The one-pass default (DLS, or another
``surrogate``) gives a linear surrogate game whose Shapley values are its own scores;
``budget`` masked forward passes, run as one batch, correct it without bias
(:func:`layersal.shapley.adjusted_shapley`). ``budget=0`` is the surrogate itself. Texts
whose every coalition fits in the budget get exact Shapley values. Definitions:
``docs/methods.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..encoding import Encoded
from ..errors import InputError
from ..evaluate import hide_ids, predictor, row_inputs, segment_ids
from ..metrics import predict_variants
from ..models import LoadedModel
from ..shapley import (
    MAX_EXACT_PLAYERS,
    adjusted_shapley,
    all_coalitions,
    exact_shapley,
    logistic_shapley,
    regression_shapley,
    sample_coalitions,
)
from ._common import PassCounter, non_negative_float, positive_int, seed_value, text_seed
from .base import Attribution, Prepared, checked, method_cost, register, run_method, settle

LINKS = ("identity", "logit")


@dataclass(frozen=True)
class ControlVariateOptions:
    """Options of ``shapley_control_variate``.

    - ``budget``: masked forward passes per text (0: the surrogate's scores, unchanged; 1:
      the surrogate rescaled to the game; from 2: sampled coalitions correct it).
    - ``surrogate``: the registered method whose scores are the control variate (the one-pass
      default, ``dls``); ``surrogate_options``: its options (``None``: its defaults, settled
      for the job as that method settles them: DLS's ``layer="auto"`` from the model card).
    - ``ridge``: how strongly the fitted surrogate game's per-token values are held to the
      rescaled surrogate scores (``None``: only rescaled, one scale per fold).
    - ``shrink``: shrink each token's sampled correction by how far it stands out of its
      own noise (:func:`layersal.shapley.adjusted_shapley`): lower error at small budgets,
      no longer unbiased (consistent). ``False``: the unbiased estimate.
    - ``correction``: ``True``, the sampled coalitions correct the fitted surrogate game
      (unbiased, :func:`layersal.shapley.adjusted_shapley`); ``False``, the estimate is the
      Shapley values of the linear game fitted to all of them with the surrogate as prior
      (KernelSHAP's constrained least squares plus ``ridge``,
      :func:`layersal.shapley.regression_shapley`): biased towards the surrogate at small
      budgets, consistent, and of far lower variance.
    - ``link``: with ``correction=False``, the scale the surrogate game is fitted in:
      ``"identity"`` (the game's own values) or ``"logit"`` (log-odds, for a game of
      probabilities: :func:`layersal.shapley.logistic_shapley`, the Shapley values of the
      fitted logistic game).
    - ``seed``: the coalitions' draw (mixed with each text's token ids: a text gets the same
      draw in any batch).
    - ``perturbations_per_eval``: masked rows per model call (texts of a batch mixed).
    """

    budget: int = 32
    surrogate: str = "dls"
    surrogate_options: dict[str, Any] | None = None
    ridge: float | None = 4.0
    shrink: bool = False
    correction: bool = True
    link: str = "identity"
    seed: int = 0
    perturbations_per_eval: int = 64

    def __post_init__(self) -> None:
        positive_int("budget", self.budget, minimum=0)
        if self.surrogate == "shapley_control_variate":
            raise InputError("the surrogate of shapley_control_variate must be another method")
        if self.surrogate_options is not None and not isinstance(self.surrogate_options, dict):
            raise InputError(
                f"surrogate_options must be a dict of the surrogate's options, "
                f"not {self.surrogate_options!r}"
            )
        checked(self.surrogate, self.surrogate_options or {})  # unknown method or option
        if self.ridge is not None:
            non_negative_float("ridge", self.ridge, strict=True)
        if not isinstance(self.shrink, bool):
            raise InputError(f"shrink must be true or false, not {self.shrink!r}")
        if not isinstance(self.correction, bool):
            raise InputError(f"correction must be true or false, not {self.correction!r}")
        if not self.correction and (self.shrink or self.ridge is None):
            raise InputError(
                "correction=false fits the surrogate game with a ridge and has no sampled "
                "correction to shrink: give a ridge, and leave shrink false"
            )
        if self.link not in LINKS:
            raise InputError(f"link must be one of {', '.join(LINKS)}, not {self.link!r}")
        if self.link != "identity" and self.correction:
            raise InputError(
                f"link={self.link!r} fits the game without correction: set correction=false"
            )
        seed_value(self.seed)
        positive_int("perturbations_per_eval", self.perturbations_per_eval)


def _prepare(
    model: Callable[[], Any],
    texts: Callable[[], list[Any]],
    options: dict[str, Any],
    typed: ControlVariateOptions,
    batch_size: int,
    fresh: bool,
) -> Prepared:
    """Settle the surrogate once for the job (DLS's ``auto`` from the card): its concrete
    options become ``surrogate_options``, and what it records is recorded."""
    inner = settle(
        checked(typed.surrogate, typed.surrogate_options or {}),
        model,
        texts,
        batch_size,
        fresh=fresh,
    )
    return Prepared(
        options={**options, "surrogate_options": dict(inner.options)},
        recorded=dict(inner.prepared.recorded),
        settings=dict(inner.prepared.settings),
        evidence=inner.prepared.evidence,
    )


def _cost(options: dict[str, Any], n_tokens: int) -> int:
    surrogate = method_cost(options["surrogate"], options.get("surrogate_options") or {}, n_tokens)
    return surrogate + int(options["budget"])


@dataclass
class _Game:
    """One text's game: its players (batch positions), surrogate scores, the coalitions sent
    to the model (row ``k`` of the variants from ``first``), and whether they are all."""

    row: int
    positions: np.ndarray
    surrogate: np.ndarray
    coalitions: np.ndarray
    first: int
    exact: bool
    seed: int  # the text's own draw (its token ids mixed in): the same in any batch


def _plan(
    players: np.ndarray, ids: np.ndarray, scores: np.ndarray, budget: int, seed: int
) -> list[_Game]:
    """Each text's coalitions: every one but the full when they fit in the budget (exact
    values), else the empty coalition and ``budget - 1`` sampled ones."""
    games: list[_Game] = []
    first = 0
    for row in range(len(players)):
        positions = np.flatnonzero(players[row])
        k = len(positions)
        if k == 0:
            continue
        exact = k <= MAX_EXACT_PLAYERS and 2**k - 1 <= budget
        own_seed = text_seed(seed, ids[row, positions].tolist())
        if exact:
            coalitions = all_coalitions(k)[:-1]
        else:
            rng = np.random.default_rng(own_seed)
            sampled = sample_coalitions(k, budget - 1, rng)
            coalitions = np.concatenate([np.zeros((1, k), dtype=bool), sampled])
        games.append(
            _Game(row, positions, scores[row, positions], coalitions, first, exact, own_seed)
        )
        first += len(coalitions)
    return games


def _hidden(games: list[_Game], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The variants' rows and hidden positions: a coalition's players kept, the rest hidden."""
    rows, hide = [], []
    for game in games:
        for coalition in game.coalitions:
            mask = np.zeros(n, dtype=bool)
            mask[game.positions[~coalition]] = True
            rows.append(game.row)
            hide.append(mask)
    return np.array(rows, dtype=np.int64), np.stack(hide) if hide else np.zeros((0, n), bool)


def _fitted(
    options: ControlVariateOptions, game: _Game, values: np.ndarray, full: float, lm: LoadedModel
) -> np.ndarray:
    """``correction=False``: the Shapley values of the surrogate game fitted to all of the
    text's coalitions, in the ``link``'s scale."""
    assert options.ridge is not None  # checked with the options
    args = (game.surrogate, float(values[0]), full, game.coalitions[1:], values[1:])
    if options.link == "identity":
        return regression_shapley(*args, ridge=options.ridge).values
    if not lm.task.probabilistic:
        raise InputError(
            f"link={options.link!r} needs a game of probabilities; this model's task "
            f"({lm.task.name}) gives scores: use link='identity'"
        )
    rng = np.random.default_rng([game.seed, 1])  # not the coalitions' own stream
    try:
        return logistic_shapley(*args, ridge=options.ridge, rng=rng).values
    except ValueError as exc:
        raise InputError(f"text {game.row}: {exc}; use link='identity'") from None


@register(
    "shapley_control_variate",
    options=ControlVariateOptions,
    prepare=_prepare,
    cost=_cost,
)
def shapley_control_variate(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    options: ControlVariateOptions,
) -> Attribution:
    """Unbiased Shapley values of the explained output under [MASK] hiding, from the
    surrogate's one pass and ``budget`` masked passes per text (one batch)."""
    base = run_method(
        options.surrogate, lm, encoded, targets, dict(options.surrogate_options or {})
    )
    if options.budget == 0:
        return base
    chosen = base.targets.detach().cpu().long()
    full = lm.task.outputs(base.logits.detach().float()).cpu().double()
    full_value = full.gather(1, chosen.view(-1, 1)).view(-1).numpy()
    players = lm.task.hideable(encoded).cpu().numpy().astype(bool)
    ids = encoded.input_ids.cpu().numpy()
    scores = base.scores.detach().cpu().double().numpy()
    games = _plan(players, ids, scores, options.budget, options.seed)
    rows, hide = _hidden(games, ids.shape[1])
    mask_id, pad_id = hide_ids(lm)
    with PassCounter(lm.model) as counter:
        probs = (
            predict_variants(
                predictor(lm),
                encoded.input_ids.cpu(),
                encoded.attention_mask.cpu(),
                rows,
                hide,
                "mask",
                mask_id,
                pad_id,
                options.perturbations_per_eval,
                segment_ids(encoded),
                row_inputs(encoded),
            )
            if len(rows)
            else np.zeros((0, full.shape[1]))
        )
    out = torch.zeros(encoded.input_ids.shape, dtype=torch.float32)
    for game in games:
        target = int(chosen[game.row])
        values = probs[game.first : game.first + len(game.coalitions), target]
        if game.exact:
            every = np.concatenate([game.coalitions, np.ones((1, len(game.positions)), bool)])
            phi = exact_shapley(every, np.concatenate([values, [full_value[game.row]]]))
        elif not options.correction:
            phi = _fitted(options, game, values, float(full_value[game.row]), lm)
        else:
            phi = adjusted_shapley(
                game.surrogate, float(values[0]), float(full_value[game.row]),
                game.coalitions[1:], values[1:], ridge=options.ridge,
                shrink=options.shrink,
            ).values  # fmt: skip
        if not np.isfinite(phi).all():
            raise InputError(f"text {game.row}: the model gave a non-finite output when masked")
        out[game.row, torch.from_numpy(game.positions)] = torch.from_numpy(phi).float()
    extra, _ = counter.per_text(len(encoded))
    return Attribution(
        scores=out.to(base.scores.device),
        logits=base.logits,
        targets=base.targets,
        forward_passes=base.forward_passes + extra,
        backward_passes=base.backward_passes,
        layers=[None] * len(encoded),
    )
