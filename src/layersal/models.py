"""Loading classifiers: ``load()`` turns a bundled model name, a local checkpoint folder, a
Hugging Face hub id or objects in memory into a :class:`LoadedModel`: the classifier in eval
mode, its fast tokenizer, and the :class:`LMHead` that decodes its layers
(:mod:`layersal.lm_heads`). Checkpoint folders are found and read by
:mod:`layersal.checkpoints`.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (
    DEFAULT_MODEL,
    bundled_models,
    check_classifier_config,
    is_object,
    quiet_transformers,
    read_card,
    read_config,
    resolve,
    shape_mismatch,
    unreadable_pickle,
    weight_files,
)
from .decoding import LMHead
from .errors import ModelLoadError, foreign_message
from .families import FAMILIES, Family, family_for
from .lm_heads import resolve_lm_head
from .tasks import SINGLE_LABEL, Task, check_explained, task_of, zero_shot

PIPELINES = ("text-classification", "sentiment-analysis", "token-classification", "ner",
             "zero-shot-classification")  # fmt: skip
DEFAULT_TEMPLATE = "This example is {}."
"""The hypothesis template of a zero-shot classifier, as the transformers pipeline's."""

PRECISIONS = ("fp32", "bf16")


@dataclass
class LoadedModel:
    """A classifier ready to be explained; load once with :func:`load`, pass it everywhere."""

    name: str
    path: Path | None
    """The checkpoint folder; ``None`` for a model object given in memory."""
    model: Any
    tokenizer: Any
    family: Family | None
    lm_head: LMHead
    labels: list[str]
    max_length: int
    precision: str = "fp32"
    weights_sha256: str | None = field(default=None, repr=False, compare=False)
    """SHA-256 of the checkpoint's safetensors files, filled in on first use by ``auto``."""
    pairs: bool | None = None
    """Whether the model reads pairs of texts (``True``), single texts (``False``), or either
    (``None``: not known; see :func:`reads_pairs`)."""
    task: Task = SINGLE_LABEL
    """What is explained: how the outputs become what the user sees (:mod:`layersal.tasks`)."""
    _borrowed: int = field(default=0, init=False, repr=False, compare=False)

    def check_items(self, items: list[Any]) -> None:
        """A clear error when texts go to a pair model, or pairs to a single-text model."""
        from .errors import InputError
        from .inputs import is_pair

        given = is_pair(items[0])
        if self.pairs is None or self.pairs == given:
            return
        if self.pairs:
            raise InputError(
                f"{self.name!r} classifies pairs of texts ({', '.join(self.labels)}): give "
                "(first, second) tuples (on the command line: --pair, or --pair-column with "
                "--file)"
            )
        raise InputError(
            f"{self.name!r} classifies single texts, not pairs: give one text per item"
        )

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks (hidden states are layers 0..num_layers)."""
        return int(self.model.config.num_hidden_layers)

    @property
    def decoder(self) -> str:
        """``"mlm_head"``, ``"lm_head"`` (causal) or ``"embeddings"``: how layers are decoded."""
        return self.lm_head.kind

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[None]:
        """The model in eval mode for the passes inside, every module's own training flag
        restored after: a model object the user holds (maybe mid-training) is left as it was.
        """
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        depth = self._borrowed
        self._borrowed += 1
        try:
            if depth:
                yield
            else:
                with self.task.viewing(self.model):  # a task's view, for these passes only
                    yield
        finally:
            self._borrowed -= 1
            for module, training in modes:
                module.training = training

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around model passes when loaded with ``precision="bf16"``, else nothing.

        Weights stay fp32; saliency, decoding sums and metrics are computed in fp32.
        """
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


_PAIR_LABELS = {"entailment", "contradiction", "not_entailment", "neutral_entailment"}


def reads_pairs(labels: list[str], folder: Path | None, pairs: bool | None) -> bool | None:
    """Whether a classifier reads pairs of texts: ``pairs`` if given, else its model card's
    ``pairs``, else ``True`` for natural-language-inference labels (entailment,
    contradiction), else ``None`` (either is accepted)."""
    if pairs is not None:
        return pairs
    value = read_card(folder).get("pairs")
    if isinstance(value, bool):
        return value
    if any(label.lower() in _PAIR_LABELS for label in labels):
        return True
    return None


def load(
    model: Any = DEFAULT_MODEL,
    lm_head: Any = None,
    *,
    tokenizer: Any = None,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    pairs: bool | None = None,
    task: str | None = None,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
) -> LoadedModel:
    """Load a sequence or token classifier and the LM head that decodes its layers.

    ``model`` is a bundled name (see :func:`bundled_models`), a local folder, a hub id, or an
    object in memory: a ``*ForSequenceClassification`` model (with its ``tokenizer``) or a
    ``transformers`` text-classification pipeline (see :func:`from_objects`).
    ``lm_head`` names the base checkpoint whose masked-LM head to use when the classifier has
    none (e.g. ``bert-base-uncased`` for ``textattack/bert-base-uncased-SST-2``). Weights are
    read from safetensors only; pickle checkpoints need ``allow_pickle=True``. Remote code is
    never executed. ``device``: ``"cpu"``, ``"cuda"`` (``"cuda:1"``, ...) or ``"auto"`` (CUDA
    when torch sees a GPU). ``precision``: ``"fp32"`` or ``"bf16"`` (autocast for the passes).
    ``pairs``: whether the model reads pairs of texts (default: see :func:`reads_pairs`).
    ``task``: what is explained (``single_label``, ``multi_label``, ``regression``,
    ``token_classification``; default: read from the config, :func:`layersal.tasks.task_of`),
    or ``"zero-shot"``: a natural-language-inference model read as a zero-shot classifier of
    ``labels``, each label's hypothesis ``template.format(label)``, scored as
    ``pipeline("zero-shot-classification")`` scores it (``multi_label`` as there; see
    :class:`layersal.tasks.ZeroShot`).
    """
    if is_object(model) or is_object(lm_head) or tokenizer is not None:
        return from_objects(
            model,
            tokenizer,
            lm_head,
            allow_pickle=allow_pickle,
            precision=precision,
            pairs=pairs,
            task=task,
            labels=labels,
            template=template,
            multi_label=multi_label,
        )
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    path = resolve(model, allow_pickle=allow_pickle)
    config = read_config(path)
    check_classifier_config(config, model)
    classifier = _load_classifier(path, config, allow_pickle=allow_pickle, name=str(model))
    what = chosen_task(classifier.config, task, labels, template, multi_label)
    check_explained(what, str(model))
    family = known_family(classifier.config)
    tokenizer = padded_right(_load_tokenizer(path, name=str(model)), classifier.config, family)
    head = resolve_lm_head(classifier, family, path, lm_head, allow_pickle=allow_pickle)
    classifier.to(device)
    head.to(device)
    own = label_names(classifier.config)
    return LoadedModel(
        name=path.name if str(model) in bundled_models() else str(model),
        path=path,
        model=classifier,
        tokenizer=tokenizer,
        family=family,
        lm_head=head,
        labels=what.labels_of(own),
        max_length=_max_length(tokenizer, classifier.config),
        precision=precision,
        pairs=False if what.hypotheses or what.focused else reads_pairs(own, path, pairs),
        task=what,
    )


def chosen_task(
    config: Any,
    task: str | None,
    labels: Sequence[str] | None,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
) -> Task:
    """The task a model is explained as: ``task`` (``"zero-shot"`` with its ``labels``), or the
    config's (:func:`layersal.tasks.task_of`); ``labels`` without zero-shot is an error."""
    if task is not None and task.replace("-", "_") == "zero_shot":
        return zero_shot(label_names(config), labels or [], template, multi_label)
    if labels is not None:
        raise ModelLoadError(
            "labels= names the candidate labels of a zero-shot classifier: pass "
            "task='zero-shot' with them"
        )
    return task_of(config, task)


def from_objects(
    model: Any,
    tokenizer: Any = None,
    lm_head: Any = None,
    *,
    allow_pickle: bool = False,
    precision: str = "fp32",
    pairs: bool | None = None,
    task: str | None = None,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
) -> LoadedModel:
    """A :class:`LoadedModel` around objects the user already holds, on their device and dtype.

    ``model``: a ``*ForSequenceClassification`` or ``*ForTokenClassification`` module, or a
    text-classification, token-classification or zero-shot-classification pipeline (its
    model and tokenizer are used; a zero-shot pipeline needs ``labels``). ``tokenizer``: the
    model's fast tokenizer (default: the pipeline's, or the one saved in the model's
    ``name_or_path`` folder). The LM head is resolved as for a folder: ``lm_head`` (a
    ``*ForMaskedLM`` or ``*ForCausalLM`` object, or a checkpoint name or folder), else the
    LM head saved in the model's ``name_or_path`` folder, else the tied input embeddings.
    The model is not copied and nothing about the objects is changed: each pass puts the
    model in eval mode and restores every module's mode after it
    (:meth:`LoadedModel.borrowed`); hooks are removed after each pass. A decoder-only
    model's tokenizer is copied when it pads on the left or with another token (see
    :func:`padded_right`).
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if hasattr(model, "task") and hasattr(model, "model"):  # a transformers pipeline
        if model.task not in PIPELINES:
            raise ModelLoadError(
                f"a {model.task!r} pipeline: layersal explains {', '.join(PIPELINES)} pipelines"
            )
        if model.task == "zero-shot-classification":
            task = "zero-shot"
            if labels is None:
                raise ModelLoadError(
                    "a zero-shot-classification pipeline needs its candidate labels: labels=[...]"
                )
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.model
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ModelLoadError(
            f"cannot explain a {type(model).__name__}: give a bundled name, a checkpoint folder, "
            "a hub id, a *ForSequenceClassification model object or a text-classification "
            "pipeline"
        )
    name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    folder = Path(name) if name and Path(name).is_dir() else None
    if not type(model).__name__.endswith(("ForSequenceClassification", "ForTokenClassification")):
        raise ModelLoadError(
            f"a {type(model).__name__} is not a sequence or token classifier (pass a "
            "*ForSequenceClassification or *ForTokenClassification model, or this one as "
            "`lm_head`?)"
        )
    if type(model).__name__.endswith("ForTokenClassification") and task is None:
        task = "token_classification"
    what = chosen_task(model.config, task, labels, template, multi_label)
    check_explained(what, name)
    if tokenizer is None:
        if folder is None:
            raise ModelLoadError(
                f"no tokenizer for the {type(model).__name__} object: pass `tokenizer=` (the "
                "model's fast tokenizer)"
            )
        tokenizer = _load_tokenizer(folder, name=name)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {name!r} is not a fast (Rust) tokenizer; layersal needs its "
            "character offsets"
        )
    family = known_family(model.config)
    tokenizer = padded_right(tokenizer, model.config, family)
    saved = folder if folder is not None and weight_files(folder) != ([], []) else None
    head = resolve_lm_head(model, family, saved, lm_head, allow_pickle=allow_pickle)
    device = next(model.parameters()).device
    return LoadedModel(
        name=name,
        path=None,
        model=model,
        tokenizer=tokenizer,
        family=family,
        lm_head=head.to(device),
        labels=what.labels_of(label_names(model.config)),
        max_length=_max_length(tokenizer, model.config),
        precision=precision,
        pairs=False
        if what.hypotheses or what.focused
        else reads_pairs(label_names(model.config), folder, pairs),
        task=what,
    )


def known_family(config: Any) -> Family | None:
    """The family of ``config`` (``None``: an encoder layersal has no adapter for, which still
    works); a decoder-only model type without one is refused: explained as an encoder it
    would be padded, pooled and decoded wrongly, without any error."""
    family = family_for(config)
    if family is not None:
        return family
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        causal = ", ".join(name for name, f in FAMILIES.items() if f.causal)
        raise ModelLoadError(
            f"model type {kind!r} is a decoder-only model layersal has no adapter for yet "
            f"(decoder-only families: {causal}); see DEVELOPERS.md to add one"
        )
    return None


def padded_right(tokenizer: Any, config: Any, family: Family | None) -> Any:
    """The tokenizer a decoder-only classifier is explained with: padding on the right with
    the model's own padding token, so that causal attention keeps padding out of every real
    token's state (with left padding, positions would shift with the batch) and the model's
    pooling at the last non-padding token finds the last real one. The caller's tokenizer is
    left as it is (a copy is changed when it pads otherwise)."""
    if family is None or not family.causal:
        return tokenizer
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        raise ModelLoadError(
            f"this {family.name} classifier has no padding token (config.pad_token_id is None): "
            "it pools at the last token that is not padding, so it cannot be run on a batch; "
            "set model.config.pad_token_id (often to tokenizer.eos_token_id)"
        )
    if tokenizer.padding_side == "right" and tokenizer.pad_token_id == pad:
        return tokenizer
    token = tokenizer.convert_ids_to_tokens(int(pad))
    if token is None:
        raise ModelLoadError(
            f"this {family.name} classifier pads with token id {pad} (config.pad_token_id), which "
            "its tokenizer does not have; set config.pad_token_id to one of the tokenizer's ids"
        )
    own = copy.deepcopy(tokenizer)
    own.padding_side = "right"
    own.pad_token = token
    return own


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA if torch sees a GPU, else CPU; a device torch cannot use is refused."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelLoadError(
            f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or auto"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {name!r}: torch sees no CUDA GPU here (use `device=cpu` or `device=auto`)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible"
            )
    elif resolved.type != "cpu":
        raise ModelLoadError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or auto")
    return resolved


def _load_classifier(path: Path, config: dict[str, Any], *, allow_pickle: bool, name: str) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    architectures = config.get("architectures") or []
    tokens = any(str(a).endswith("ForTokenClassification") for a in architectures)
    auto = AutoModelForTokenClassification if tokens else AutoModelForSequenceClassification

    safe, pickled = weight_files(path)
    if not safe and not pickled:
        raise ModelLoadError(f"{path} has no weights (*.safetensors)")
    if not safe and not allow_pickle:
        raise ModelLoadError(
            f"{path} only has pickle weights ({pickled[0].name}); pickle files can run code when "
            "loaded. Convert them to safetensors, or pass `allow_pickle=True` if you trust the "
            "source"
        )
    try:
        with quiet_transformers():
            model, info = auto.from_pretrained(
                path,
                dtype=torch.float32,
                use_safetensors=bool(safe),
                trust_remote_code=False,
                output_loading_info=True,
            )
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ModelLoadError(unreadable_pickle(pickled[0], name, exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        mismatch = shape_mismatch(path, safe) if safe else None
        if mismatch:
            raise ModelLoadError(
                f"could not load {name!r}: its weights do not fit its config.json ({mismatch}); "
                "the config belongs to another checkpoint, or was edited"
            ) from None
        raise ModelLoadError(
            f"could not load {name!r} as a sequence classifier: {foreign_message(exc)}"
        ) from None
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    head_missing = [k for k in missing if not _is_encoder_key(k, model)]
    if head_missing:
        raise ModelLoadError(
            f"{name!r} has no trained classification head (missing {head_missing[0]}): "
            "not a sequence classifier"
        )
    model.eval()
    return model


def _is_encoder_key(key: str, model: Any) -> bool:
    prefix = getattr(model, "base_model_prefix", "")
    return bool(prefix) and key.startswith(prefix + ".") and ".pooler." not in key


# The files a tokenizer is built from. A folder with none of them would otherwise get an empty
# tokenizer from transformers (every word "[UNK]", every score equal) instead of an error.


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spm.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _load_tokenizer(path: Path, *, name: str) -> Any:
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{name!r} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy them "
            "from the checkpoint it was fine-tuned from"
        )
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load the tokenizer of {name!r}: {foreign_message(exc)}"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {name!r} is not a fast (Rust) tokenizer; layersal needs its "
            "character offsets (add a tokenizer.json)"
        )
    return tokenizer


def label_names(config: Any) -> list[str]:
    """The class names of a classifier's config (``LABEL_i`` where it names none)."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]


def _max_length(tokenizer: Any, config: Any) -> int:
    limits = [int(tokenizer.model_max_length)] if tokenizer.model_max_length < 1_000_000 else []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        offset = (
            2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        )
        limits.append(int(positions) - offset)
    return min(limits) if limits else 512


__all__ = ["LoadedModel", "from_objects", "load"]
