"""Shapley values of a game on ``n`` players: exact, from every coalition, and estimated without
bias from a few sampled coalitions with a surrogate as control variate. Pure numpy.

A *game* here is ``v(S)`` for coalitions ``S`` of the players (a text's content tokens: the
ones in ``S`` kept, the rest hidden); a coalition is a boolean row of length ``n``. The
Shapley value of player ``i`` is

    phi_i = sum over S not holding i of w(|S|) (v(S + i) - v(S)),   w(s) = s! (n-s-1)! / n!

which rearranges into one sum over all coalitions, each weighted once (the form the
estimator samples):

    phi_i = sum_{S holding i} w(|S| - 1) v(S)  -  sum_{S not holding i} w(|S|) v(S).

:func:`adjusted_shapley` estimates it from ``v`` of a few coalitions drawn by
:func:`sample_coalitions`, after subtracting a linear surrogate game whose Shapley values are
known (``docs/methods.md``, ``shapley_control_variate``). Definitions and the proof of
unbiasedness are in ``docs/methods.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_EXACT_PLAYERS = 16
"""The most players :func:`all_coalitions` enumerates (2^16 coalitions)."""


def shapley_weights(n: int) -> np.ndarray:
    """``w[s] = s! (n-s-1)! / n! = 1 / (n C(n-1, s))`` for ``s = 0 .. n-1``."""
    if n < 1:
        raise ValueError(f"a game needs at least one player, not {n}")
    return np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])


def all_coalitions(n: int) -> np.ndarray:
    """Every coalition of ``n`` players, ``(2^n, n)`` booleans, the empty one first and the
    full one last (row ``k`` holds player ``i`` when bit ``i`` of ``k`` is set)."""
    if not 1 <= n <= MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact Shapley values enumerate 1 to {MAX_EXACT_PLAYERS} players, not {n}"
        )
    codes = np.arange(2**n)[:, None]
    return ((codes >> np.arange(n)[None, :]) & 1).astype(bool)


def exact_shapley(coalitions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Shapley values ``(n,)`` of the game whose value at every coalition is given.

    ``coalitions`` ``(2^n, n)`` must hold each coalition once (any order); ``values`` ``(2^n,)``.
    """
    masks = np.asarray(coalitions, dtype=bool)
    v = np.asarray(values, dtype=float)
    n = masks.shape[1]
    if masks.shape[0] != 2**n or len(v) != len(masks):
        raise ValueError(f"exact Shapley values need all {2**n} coalitions and their values")
    if len({row.tobytes() for row in masks}) != len(masks):
        raise ValueError("a coalition is given twice")
    w = shapley_weights(n)
    sizes = masks.sum(axis=1)
    inside = np.where(sizes > 0, w[np.clip(sizes - 1, 0, n - 1)], 0.0)
    outside = np.where(sizes < n, w[np.clip(sizes, 0, n - 1)], 0.0)
    return (masks * inside[:, None]).T @ v - ((~masks) * outside[:, None]).T @ v


def size_distribution(n: int) -> np.ndarray:
    """``pi[s]``, the probability of drawing a coalition of size ``s``: proportional to
    ``1 / (s (n - s))`` for ``s = 1 .. n-1`` (the Shapley kernel's), zero for the empty and the
    full coalition (their values are known). Symmetric: ``pi[s] = pi[n - s]``."""
    pi = np.zeros(n + 1)
    if n >= 2:
        s = np.arange(1, n)
        pi[1:n] = 1.0 / (s * (n - s))
        pi /= pi.sum()
    return pi


def sample_coalitions(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` coalitions ``(count, n)``, in complementary pairs: a size ``s`` drawn from
    :func:`size_distribution`, ``s`` players drawn uniformly, then the other ``n - s``
    players (an odd ``count`` ends with one unpaired draw). Every row on its own is drawn from
    ``q(S) = pi(|S|) / C(n, |S|)``; the pairing only correlates them, which lowers the
    variance (a token's inside and outside terms see the same split). ``n < 2``: none."""
    if n < 2 or count <= 0:
        return np.zeros((0, n), dtype=bool)
    pi = size_distribution(n)
    rows: list[np.ndarray] = []
    while len(rows) < count:
        size = int(rng.choice(n + 1, p=pi))
        row = np.zeros(n, dtype=bool)
        row[rng.choice(n, size=size, replace=False)] = True
        rows.append(row)
        if len(rows) < count:
            rows.append(~row)
    return np.stack(rows)


@dataclass(frozen=True)
class Estimate:
    """An estimate of a game's Shapley values: ``values`` ``(n,)``; ``surrogates``, the
    linear game's per-player values ``beta`` fitted in each fold (the game
    ``v(empty) + sum of beta_i over S``); ``exact``: every coalition was evaluated, so the
    values are exact."""

    values: np.ndarray
    surrogates: tuple[np.ndarray, ...]
    exact: bool = False


def surrogate_scale(
    surrogate: np.ndarray, gain: float, coalitions: np.ndarray, changes: np.ndarray
) -> float:
    """Least-squares ``c`` of ``v(S) - v(empty) ~ c * sum_{i in S} a_i`` over the given
    coalitions and the full one (``gain = v(full) - v(empty)``). Without sampled coalitions
    the full coalition alone fixes it; a scale that is not positive there (the surrogate's
    total disagrees with the gain in sign) becomes ``|gain| / sum |a_i|``, so the surrogate's
    order is kept."""
    a = np.asarray(surrogate, dtype=float)
    sums = np.concatenate([coalitions.astype(float) @ a, [a.sum()]])
    targets = np.concatenate([np.asarray(changes, dtype=float), [gain]])
    denominator = float(sums @ sums)
    c = float(sums @ targets) / denominator if denominator > 0 else 0.0
    if len(coalitions) == 0 and not c > 0:
        total = float(np.abs(a).sum())
        c = abs(gain) / total if total > 0 else 0.0
    return c


def surrogate_fit(
    surrogate: np.ndarray,
    gain: float,
    coalitions: np.ndarray,
    changes: np.ndarray,
    ridge: float | None,
) -> np.ndarray:
    """The linear game's per-player values ``beta`` fitted to the given coalitions:
    ``c a`` (:func:`surrogate_scale`), then, with ``ridge``, ``c a + delta`` where ``delta``
    minimises the squared residuals plus ``ridge * |delta|^2`` (shrunk towards the
    surrogate's own values)."""
    a = np.asarray(surrogate, dtype=float)
    c = surrogate_scale(a, gain, coalitions, changes)
    beta = c * a
    if ridge is None or len(coalitions) == 0:
        return beta
    z = np.concatenate([coalitions.astype(float), np.ones((1, len(a)))])
    y = np.concatenate([np.asarray(changes, dtype=float), [gain]]) - z @ beta
    delta = np.linalg.solve(z.T @ z + ridge * np.eye(len(a)), z.T @ y)
    return beta + delta


def _base(beta: np.ndarray, gain: float) -> np.ndarray:
    """The fitted linear game's Shapley values plus the exact full-minus-empty residual
    term, ``beta + (r(full) - r(empty)) / n``."""
    return beta + (gain - float(beta.sum())) / len(beta)


def _contributions(
    beta: np.ndarray, coalitions: np.ndarray, changes: np.ndarray, pi: np.ndarray
) -> np.ndarray:
    """Each sampled coalition's importance-weighted residual, spread to every player
    ``(m, n)``: ``r(S) / (|S| pi(|S|))`` to the players in ``S``, ``-r(S) / ((n - |S|)
    pi(|S|))`` to the others. Their mean is unbiased for the residual game's Shapley values
    less the full-minus-empty term."""
    n = len(beta)
    masks = coalitions.astype(bool)
    sizes = masks.sum(axis=1)
    residual = changes - masks.astype(float) @ beta
    inside = residual / (sizes * pi[sizes])
    outside = residual / ((n - sizes) * pi[sizes])
    return np.where(masks, inside[:, None], -outside[:, None])


def adjusted_shapley(
    surrogate: np.ndarray,
    empty: float,
    full: float,
    coalitions: np.ndarray,
    values: np.ndarray,
    ridge: float | None = None,
    shrink: bool = False,
) -> Estimate:
    """Shapley values of a game on ``n`` players from its value at the empty and the full
    coalition and at ``coalitions`` drawn by :func:`sample_coalitions` (``values``), with a
    linear game fitted to the surrogate scores ``a`` as control variate.

    phi = phi(g) + phi(v - g), and ``phi(g) = beta`` exactly for the linear game
    ``g(S) = v(empty) + sum_{i in S} beta_i``; ``phi(v - g)`` is estimated by
    importance-weighting each sampled coalition's residual into every player (each sample
    informs all ``n`` values), plus the exact full-minus-empty term. ``beta`` is ``c a`` fitted
    by least squares (:func:`surrogate_scale`), and with ``ridge`` refined per player
    (:func:`surrogate_fit`), *cross-fitted*: the samples are split into two folds
    (complementary pairs kept together), each fold's residuals use the ``beta`` fitted on
    the other fold. Each fold's estimate is then unbiased given the other fold, so their
    average (by fold size) is unbiased for the Shapley values whatever the surrogate; a good
    surrogate only makes the residuals, and so the variance, small. With fewer than two
    pairs, ``beta`` comes from the full coalition alone.

    ``shrink`` trades that unbiasedness for variance: each player's sampled correction
    ``k_i`` (the mean contribution) is multiplied by ``k_i^2 / (k_i^2 + s_i^2)``, ``s_i^2``
    its estimated variance (over complementary pairs): a correction the samples cannot tell
    from noise is mostly dropped, and the fitted surrogate stays. Consistent (the factor
    tends to 1 as samples grow), not unbiased.
    """
    a = np.asarray(surrogate, dtype=float)
    n = len(a)
    masks = np.asarray(coalitions, dtype=bool).reshape(-1, n)
    changes = np.asarray(values, dtype=float).reshape(-1) - empty
    if len(changes) != len(masks):
        raise ValueError(f"got {len(changes)} values for {len(masks)} coalitions")
    gain = float(full - empty)
    if n == 1:
        return Estimate(np.array([gain]), (np.array([gain]),), exact=True)
    pi = size_distribution(n)
    pairs = np.arange(len(masks)) // 2
    if pairs.max(initial=-1) < 1:  # fewer than two pairs: no fold to fit on
        beta = surrogate_fit(a, gain, masks[:0], changes[:0], ridge)
        folds: list[tuple[np.ndarray, np.ndarray]] = [(np.ones(len(masks), bool), beta)]
    else:
        halves = [pairs % 2 == 0, pairs % 2 == 1]
        folds = [
            (fold, surrogate_fit(a, gain, masks[other], changes[other], ridge))
            for fold, other in (halves, halves[::-1])
        ]
    m = max(1, len(masks))
    base = sum(max(1, int(f.sum())) * _base(beta, gain) for f, beta in folds) / sum(
        max(1, int(f.sum())) for f, _ in folds
    )
    contributions = np.zeros((len(masks), n))
    for fold, beta in folds:
        if fold.any():
            contributions[fold] = _contributions(beta, masks[fold], changes[fold], pi)
    correction = contributions.sum(axis=0) / m
    if shrink and len(masks) >= 4:
        units = np.stack([contributions[pairs == p].mean(axis=0) for p in np.unique(pairs)])
        variance = units.var(axis=0, ddof=1) / len(units)
        factor = correction**2 / np.maximum(correction**2 + variance, 1e-300)
        correction = factor * correction
    return Estimate(base + correction, tuple(beta for _, beta in folds))


def _fit_constrained(
    a: np.ndarray, gain: float, masks: np.ndarray, changes: np.ndarray, ridge: float
) -> np.ndarray:
    """``beta`` minimising ``|z beta - changes|^2 + ridge |beta - c a|^2`` subject to
    ``sum beta = gain`` (``z``: the coalitions as 0/1 rows; ``c``: :func:`surrogate_scale`),
    in closed form with one Lagrange multiplier."""
    n = len(a)
    prior = surrogate_scale(a, gain, masks, changes) * a
    z = masks.astype(float)
    y = changes - z @ prior
    system = z.T @ z + ridge * np.eye(n)
    free = np.linalg.solve(system, z.T @ y)
    ones = np.linalg.solve(system, np.ones(n))
    slack = gain - float(prior.sum()) - float(free.sum())
    return prior + free + ones * (slack / float(ones.sum()))


def _checked(
    surrogate: np.ndarray, coalitions: np.ndarray, values: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(surrogate, dtype=float)
    masks = np.asarray(coalitions, dtype=bool).reshape(-1, len(a))
    v = np.asarray(values, dtype=float).reshape(-1)
    if len(v) != len(masks):
        raise ValueError(f"got {len(v)} values for {len(masks)} coalitions")
    if not ridge > 0:
        raise ValueError(f"the ridge must be positive, not {ridge}")
    return a, masks, v


def regression_shapley(
    surrogate: np.ndarray,
    empty: float,
    full: float,
    coalitions: np.ndarray,
    values: np.ndarray,
    ridge: float,
) -> Estimate:
    """Shapley values of a game estimated as those of the linear game fitted to all the
    sampled coalitions, with the surrogate as prior: KernelSHAP's least squares (coalitions
    drawn from the Shapley kernel, so unweighted) under the efficiency constraint
    ``sum beta = v(full) - v(empty)``, plus ``ridge * |beta - c a|^2`` holding the values to
    the rescaled surrogate ``c a`` (:func:`surrogate_scale`).

    No sampled correction follows, so it is biased towards the surrogate at small budgets,
    and consistent: as the samples grow the ridge term fades and the fit tends to
    KernelSHAP's, whose limit is the Shapley values. Its variance is far below
    :func:`adjusted_shapley`'s, whose importance-weighted residuals each reach every player.
    """
    a, masks, v = _checked(surrogate, coalitions, values, ridge)
    beta = _fit_constrained(a, float(full - empty), masks, v - empty, ridge)
    return Estimate(beta, (beta,), exact=False)


def logistic_game_shapley(
    logits: np.ndarray, permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Shapley values of the game ``g(S) = sigmoid(logits[0] + sum_{i in S} logits[1 + i])``:
    exact over every coalition for up to 12 players, else from ``permutations`` random
    orders, each with its reverse (no model is read: each is a cumulative sum)."""
    base, beta = float(logits[0]), np.asarray(logits[1:], dtype=float)
    n = len(beta)
    if n <= 12:
        masks = all_coalitions(n)
        return exact_shapley(masks, _sigmoid(base + masks @ beta))
    orders = np.stack([rng.permutation(n) for _ in range(max(1, permutations))])
    orders = np.concatenate([orders, orders[:, ::-1]])
    path = _sigmoid(base + np.cumsum(beta[orders], axis=1))
    steps = np.diff(np.concatenate([np.full((len(orders), 1), _sigmoid(base)), path], 1), axis=1)
    phi = np.zeros(n)
    np.add.at(phi, orders.reshape(-1), steps.reshape(-1))
    return phi / len(orders)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


LOGIT_FLOOR = 1e-6
"""Probabilities are held within ``[LOGIT_FLOOR, 1 - LOGIT_FLOOR]`` before their log-odds."""


def logistic_shapley(
    surrogate: np.ndarray,
    empty: float,
    full: float,
    coalitions: np.ndarray,
    values: np.ndarray,
    ridge: float,
    rng: np.random.Generator,
    permutations: int = 256,
) -> Estimate:
    """As :func:`regression_shapley`, with the surrogate game fitted in log-odds: for a game
    of probabilities, ``g(S) = sigmoid(l(empty) + sum_{i in S} beta_i)`` with ``beta`` the
    constrained ridge fit of the coalitions' log-odds (so ``g`` equals ``v`` at the empty and
    the full coalition), and the estimate is ``g``'s own Shapley values
    (:func:`logistic_game_shapley`). A classifier's probability is far closer to additive in
    log-odds than in probability (a confident text barely moves when one word goes, and
    collapses when many do), so the fit leaves less to noise. Biased towards ``g``; values in
    probability units, adding up to ``v(full) - v(empty)``."""
    a, masks, v = _checked(surrogate, coalitions, values, ridge)
    every = np.concatenate([v, [empty, full]])
    if not ((every >= 0) & (every <= 1)).all():
        raise ValueError("log-odds need a game of probabilities (values in [0, 1])")
    logit = np.log(np.clip(every, LOGIT_FLOOR, 1 - LOGIT_FLOOR)) - np.log(
        np.clip(1 - every, LOGIT_FLOOR, 1 - LOGIT_FLOOR)
    )
    l_masks, l_empty, l_full = logit[:-2], logit[-2], logit[-1]
    beta = _fit_constrained(a, float(l_full - l_empty), masks, l_masks - l_empty, ridge)
    phi = logistic_game_shapley(np.concatenate([[l_empty], beta]), permutations, rng)
    return Estimate(phi, (beta,), exact=False)


def permutation_shapley(
    n: int, value_of: dict[bytes, float], permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Plain permutation sampling (Castro et al. 2009) on a game given as a lookup from a
    coalition's bytes (``row.tobytes()`` of a boolean row) to its value: ``permutations``
    random orders, each player credited with its marginal contribution. Returns the estimate
    and the number of distinct coalitions it read (its cost in model passes). For measuring
    estimators against each other on a game whose every value is known (``bench/``)."""
    phi = np.zeros(n)
    seen: set[bytes] = set()
    for _ in range(permutations):
        row = np.zeros(n, dtype=bool)
        before = value_of[row.tobytes()]
        seen.add(row.tobytes())
        for player in rng.permutation(n):
            row[player] = True
            key = row.tobytes()
            after = value_of[key]
            seen.add(key)
            phi[player] += after - before
            before = after
    return phi / max(1, permutations), len(seen)
