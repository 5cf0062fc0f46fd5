"""Which class to explain: a target given as a class index or a label name."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

Target = int | str | None


def target_indices(
    target: Target | Sequence[Target], n: int, labels: list[str]
) -> list[int] | None:
    """One class index per text for ``target`` (one for all, or one per text; ``None``: the
    predicted class, so ``None`` back)."""
    if target is None:
        return None
    values: list[Target] = (
        list(target)
        if isinstance(target, Sequence) and not isinstance(target, str)
        else [target] * n
    )
    if len(values) != n:
        raise InputError(f"got {len(values)} targets for {n} texts")
    known = [v for v in values if v is not None]
    if len(known) != len(values):
        raise InputError("a per-text target list cannot contain None")
    return [target_index(v, labels) for v in known]


def target_index(value: int | str, labels: list[str]) -> int:
    """The class index of ``value``: an index (``2``, ``"2"``) or a label name (any case)."""
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        lowered = [label.lower() for label in labels]
        if value.lower() not in lowered:
            raise InputError(f"unknown target {value!r}; labels are: {', '.join(labels)}")
        return lowered.index(value.lower())
    index = int(value)
    if not 0 <= index < len(labels):
        raise InputError(
            f"target {index} is out of range: the model has {len(labels)} classes "
            f"(0..{len(labels) - 1}: {', '.join(labels)})"
        )
    return index


def int_or_text(value: int | str | None) -> int | str | None:
    """``"2"`` -> 2 and ``" -1 "`` -> -1, other text stripped, ints and ``None`` unchanged: how the
    command line and the web API read a layer or a target given as text."""
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped
