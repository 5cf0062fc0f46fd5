"""Which class: a target or a gold label given as a class index or a label name."""

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


def target_index(value: int | str, labels: list[str], what: str = "target") -> int:
    """The class index of ``value``: an index (``2``), or text naming a label (any case) or an
    index (``"2"``).

    In text a name wins over an index, so a model whose labels are ``"1".."5"`` reads the gold
    label ``"1"`` as its first class. ``what`` names the value in errors.
    """
    text = str(value).strip()
    lowered = [label.lower() for label in labels]
    if isinstance(value, str) and text.lower() in lowered:
        return lowered.index(text.lower())
    if not text.lstrip("-").isdigit():
        raise InputError(f"unknown {what} {value!r}; labels are: {', '.join(labels)}")
    index = int(text)
    if not 0 <= index < len(labels):
        raise InputError(
            f"{what} {index} is out of range: the model has {len(labels)} classes "
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
