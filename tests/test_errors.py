"""The documented error tree is the one in the code."""

from __future__ import annotations

import inspect

from layersal import errors


def _classes() -> dict[str, type]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and value.__module__ == errors.__name__
    }


def test_every_error_is_a_layersal_error_and_in_the_documented_tree():
    tree = errors.__doc__ or ""
    for name, cls in _classes().items():
        assert issubclass(cls, (errors.LayersalError, Warning)), name
        assert f" {name} " in tree or f"{name}\n" in tree, f"{name} is missing from the tree"
        for parent in cls.__bases__:
            if parent.__module__ == errors.__name__:
                # drawn under its parent: the parent's line comes first
                assert tree.index(parent.__name__) < tree.index(name), name


def test_the_servers_errors_carry_their_http_status():
    assert errors.ServerBusy("busy").status == 503
    assert errors.QueueFull(12.0, 5).status == 503
    assert errors.ExplanationTimeout("late").status == 504
    assert not hasattr(errors.InputError("bad"), "status")
