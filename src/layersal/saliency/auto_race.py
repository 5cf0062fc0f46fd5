"""Measuring ``auto``'s configurations on a calibration sample, spending the perturbed passes
where they decide something: a screen of every configuration on a few texts, then a race of
the best few of each rule set over the rest (:func:`calibrate`).
"""

from __future__ import annotations

import numpy as np

from ..encoding import encode, model_input_names
from ..errors import InputError
from ..inputs import has_text, item_length
from ..models import LoadedModel
from .auto_configs import Measured, Table, config_key, is_allowed, parse_key, rules_for
from .dls import DLSOptions, candidate_scores

SCREEN_TEXTS = 8
KEEP_PER_RULE = 2
RACE_Z = 2.0


def calibrate(
    lm: LoadedModel,
    texts: list[str],
    options: DLSOptions,
    *,
    max_texts: int = 64,
    batch_size: int = 16,
    screen: int = SCREEN_TEXTS,
    keep: int = KEEP_PER_RULE,
    race_z: float = RACE_Z,
) -> tuple[Table, int]:
    """:data:`CRITERION` of the configurations ``options`` allow, on the first ``max_texts``
    of ``texts``.

    No labels: the target is the model's own prediction. The perturbed passes that score a
    configuration dominate the cost, so the search spends them where they decide something:
    every configuration is scored on ``screen`` texts spread over the sample's length range;
    the ``keep`` best of each rule set go on to the rest, a batch at a time, and after each
    batch a finalist whose criterion is below the leader's by more than ``race_z`` standard
    errors of their paired difference drops out (a race). The table holds every finalist with
    the texts it was measured on; those still running at the end were measured on all of
    them, and the choice is made among those. Returns the table and the number of texts.
    """
    sample = [t for t in texts if has_text(t)][:max_texts]
    if not sample:
        raise InputError("layer='auto' needs at least one non-empty text to calibrate on")
    sample.sort(key=item_length)  # batches of similar length: less padding in every pass
    if len(sample) > screen:
        step = len(sample) / screen
        first = sorted({int(i * step) for i in range(screen)})
    else:
        first = list(range(len(sample)))
    rest = [i for i in range(len(sample)) if i not in set(first)]
    with lm.borrowed():  # eval mode; a model object's own modes restored after
        per_config = score_configs(lm, [sample[i] for i in first], options, None, batch_size)
        screened = means(per_config)
        finalists: set[str] = set()
        for rule in rules_for(options, lm):
            ranked = sorted(
                (k for k in screened if parse_key(k)[0] == rule), key=lambda k: -screened[k].score
            )
            finalists.update(ranked[:keep])
        running = set(finalists)
        for start in range(0, len(rest), batch_size):
            chunk = [sample[i] for i in rest[start : start + batch_size]]
            for key, values in score_configs(lm, chunk, options, running, batch_size).items():
                for metric, column in values.items():
                    per_config[key][metric].extend(column)
            running = race(per_config, running, race_z)
    return means({key: per_config[key] for key in sorted(finalists)}), len(sample)


def race(per_config: dict[str, dict[str, list[float]]], running: set[str], z: float) -> set[str]:
    """The configurations of ``running`` not clearly worse than the leader: a paired
    difference of :data:`CRITERION` over the texts all of them were measured on, below ``z``
    standard errors, stays in the race."""
    if len(running) < 2:
        return set(running)
    criterion = {
        key: np.array(per_config[key]["comprehensiveness"])
        - np.array(per_config[key]["sufficiency"])
        for key in running
    }
    leader = max(sorted(running), key=lambda key: float(criterion[key].mean()))
    if len(criterion[leader]) < 2:
        return set(running)
    staying = {leader}
    for key in running - {leader}:
        gap = criterion[leader] - criterion[key]
        error = float(gap.std(ddof=1)) / np.sqrt(len(gap))
        if float(gap.mean()) <= 0 or float(gap.mean()) <= z * error:
            staying.add(key)
    return staying


def means(per_config: dict[str, dict[str, list[float]]]) -> Table:
    return {
        key: Measured(
            float(np.mean(values["comprehensiveness"])),
            float(np.mean(values["sufficiency"])),
            len(values["comprehensiveness"]),
        )
        for key, values in per_config.items()
    }


def score_configs(
    lm: LoadedModel, texts: list[str], options: DLSOptions, only: set[str] | None, batch_size: int
) -> dict[str, dict[str, list[float]]]:
    """Per configuration that ``options`` allow (all, or those in ``only``): each text's
    comprehensiveness and sufficiency AOPC, ``{key: {metric: [per text]}}``."""
    from ..evaluate import hide_ids, predictor, row_inputs, segment_ids
    from ..metrics import erasure_aopc_many

    predict = predictor(lm)
    inputs = model_input_names(lm.model)
    per_config: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(texts), batch_size):
        encoded = encode(lm.tokenizer, texts[start : start + batch_size], lm.max_length, inputs)
        keys, score_sets = [], []
        targets = None
        for rule in rules_for(options, lm):
            if only is not None and not any(parse_key(key)[0] == rule for key in only):
                continue
            with lm.autocast():
                targets, candidates = candidate_scores(lm, encoded, options, rule)
            for (layer, decode), scores in candidates.items():
                key = config_key(rule, layer, decode)
                if is_allowed(key, options) and (only is None or key in only):
                    keys.append(key)
                    score_sets.append(scores)
        if targets is None or not keys:
            continue
        aopc = erasure_aopc_many(
            predict,
            encoded.input_ids,
            encoded.attention_mask,
            lm.task.hideable(encoded),
            score_sets,
            targets,
            mask_id=hide_ids(lm)[0],
            token_type_ids=segment_ids(encoded),
            row_inputs=row_inputs(encoded),
        )
        for s, key in enumerate(keys):
            into = per_config.setdefault(key, {metric: [] for metric in aopc})
            for metric, values in aopc.items():
                into[metric].extend(values[s].tolist())
    return per_config
