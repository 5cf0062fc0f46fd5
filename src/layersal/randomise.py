"""Copies of a classifier with some of its learned weights replaced by fresh random ones: the
model side of the randomisation sanity check (Adebayo et al. 2018, cascading model-parameter
randomisation).

The parameters fall into three groups, in the order the model declares them: the
**embeddings** (everything declared before the first block), the **blocks** (the model's one
list of ``num_hidden_layers`` transformer blocks) and the **head** (everything declared after
the last block: a pooler, a final norm, the classifier; DeBERTa's relative-position embeddings,
which every block reads, are declared there too). :func:`cascade` lists the stages from the
top: the head, then the head and the top block, the top two blocks, ... all blocks, then
everything. :func:`randomised` makes a re-initialised copy: the user's model is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ModelLoadError
from .models import LoadedModel

INIT = (
    "the model's own transformers _init_weights (in BERT and most families: linear and "
    "embedding weights drawn from normal(0, initializer_range), biases 0, norms 1 and 0)"
)
"""How :func:`randomised` re-initialises, in words (for the tables)."""


def init_description(model: Any) -> str:
    """:data:`INIT`, with the model's own ``initializer_range`` where its config has one."""
    value = getattr(model.config, "initializer_range", None)
    return INIT + (f", initializer_range {value}" if value is not None else "")


@dataclass(frozen=True)
class Stage:
    """One step of the cascade: ``name`` (short, for tables), what it re-initialises in words,
    and the names of those parameters (cumulative: every earlier stage's too)."""

    name: str
    description: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class Groups:
    """A classifier's parameter names: embeddings, each block (bottom first), head."""

    embeddings: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    head: tuple[str, ...]


def parameter_groups(model: Any) -> Groups:
    """The embeddings, blocks and head of ``model`` (a ``*ForSequenceClassification``); its
    blocks are its one ``ModuleList`` of ``config.num_hidden_layers`` modules."""
    count = int(model.config.num_hidden_layers)
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and name
    ]
    if len(lists) != 1:
        raise ModelLoadError(
            f"cannot tell the transformer blocks of this {type(model).__name__} apart: "
            f"{len(lists)} module lists of {count} modules"
        )
    prefix = lists[0][0] + "."
    blocks: list[list[str]] = [[] for _ in range(count)]
    before: list[str] = []
    after: list[str] = []
    for name, _ in model.named_parameters():
        if name.startswith(prefix):
            index = int(name[len(prefix) :].split(".", 1)[0])
            blocks[index].append(name)
        elif any(blocks):
            after.append(name)
        else:
            before.append(name)
    return Groups(tuple(before), tuple(tuple(b) for b in blocks), tuple(after))


def cascade(model: Any) -> list[Stage]:
    """The stages of cascading randomisation from the top: ``head``; ``head+block L`` (the
    top block, L = the number of blocks), ``head+blocks L-1..L``, ... down to
    ``head+blocks 1..L``; then ``all`` (the embeddings too). Blocks are numbered 1..L from the
    bottom, as the hidden states they produce are."""
    groups = parameter_groups(model)
    count = len(groups.blocks)
    stages = [Stage("head", "the head (all after the last block)", groups.head)]
    chosen = list(groups.head)
    for top in range(count, 0, -1):
        chosen += groups.blocks[top - 1]
        span = f"block {top}" if top == count else f"blocks {top}..{count}"
        stages.append(Stage(f"head+{span}", f"the head and {span}", tuple(chosen)))
    stages.append(
        Stage("all", "every parameter (embeddings too)", tuple(chosen) + groups.embeddings)
    )
    return stages


def randomised(lm: LoadedModel, stage: Stage, seed: int = 0) -> LoadedModel:
    """A copy of ``lm`` whose ``stage.parameters`` are re-initialised by the model's own
    ``_init_weights`` under a seeded random stream (the global one is left as it was).

    The copy shares the tokenizer, labels, task and LM head (the decoder DLS reads layers
    through is the method's, not the classifier's); it has no checkpoint folder and no
    weights hash, so nothing stored for the trained weights (the model card's ``auto``
    calibration, the cache) applies to it. A parameter the initialiser leaves unchanged
    (other than a constant one, as a norm's ones) is an error, not a silent half-randomised
    model.
    """
    model = copy.deepcopy(lm.model)
    init = getattr(model, "_init_weights", None)
    if init is None:
        raise ModelLoadError(
            f"{lm.name}: a {type(model).__name__} has no _init_weights to re-initialise it with"
        )
    chosen = set(stage.parameters)
    params = dict(model.named_parameters())
    unknown = sorted(chosen - set(params))
    if unknown:
        raise ModelLoadError(f"{lm.name} has no parameter {unknown[0]!r} to re-initialise")
    before = {name: params[name].detach().clone() for name in chosen}
    modules = [
        module
        for prefix, module in model.named_modules()
        if (names := _names(prefix, module)) and set(names) <= chosen
    ]
    for module in modules:  # transformers skips what it loaded from a checkpoint
        module.__dict__.pop("_is_hf_initialized", None)
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor is not None and hasattr(tensor, "_is_hf_initialized"):
                del tensor._is_hf_initialized
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            init(module)
    for name in sorted(chosen):
        old, new = before[name], params[name].detach()
        if torch.equal(old, new) and bool((old != old.reshape(-1)[0]).any()):
            raise ModelLoadError(
                f"{lm.name}: the model's _init_weights leaves {name!r} as trained, so the "
                "randomisation check cannot run on this model"
            )
    return dataclasses.replace(
        lm, name=f"{lm.name} ({stage.name} randomised)", path=None, model=model,
        weights_sha256=None,
    )  # fmt: skip


def _names(prefix: str, module: Any) -> list[str]:
    return [f"{prefix}.{name}" if prefix else name for name, _ in module.named_parameters()]
