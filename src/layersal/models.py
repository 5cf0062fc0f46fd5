"""Loading classifiers and resolving the LM head that decodes their layers.

``load()`` turns a bundled model name, a local checkpoint folder or a Hugging Face hub id into
a :class:`LoadedModel`: the classifier in eval mode, its fast tokenizer, and an :class:`LMHead`
found, in order, in the checkpoint itself, in an explicit ``lm_head=`` checkpoint, or (as a
flagged fallback) in the classifier's tied input embeddings.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .decoding import LMHead, Norm
from .errors import ModelLoadError, foreign_message
from .families import FAMILIES, Family, family_for, norm_eps

BUNDLED_DIR = Path(__file__).parent / "bundled"
CHECKOUT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = "sst2-tiny"
PRECISIONS = ("fp32", "bf16")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]
_PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt"]


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
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around model passes when loaded with ``precision="bf16"``, else nothing.

        Weights stay fp32; saliency, decoding sums and metrics are computed in fp32.
        """
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


CARD_FILE = "model_card.json"


def read_card(folder: Path | None) -> dict[str, Any]:
    """A checkpoint folder's ``model_card.json`` (its pair flag, ``auto``'s calibration), or
    ``{}`` when there is none or it cannot be read."""
    if folder is None:
        return {}
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


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


def model_dirs() -> list[Path]:
    """Where named models live: inside the package, then a source checkout's ``models/``.

    The larger benchmark models (``sst2-minilm``, ``agnews-minilm``) are kept in the
    repository's top-level ``models/`` folder rather than in the wheel; they are found by name
    when layersal runs from a checkout (``pip install -e .``).
    """
    return [folder for folder in (BUNDLED_DIR, CHECKOUT_MODELS_DIR) if folder.is_dir()]


def named_models() -> dict[str, Path]:
    """Every model shipped with layersal by name, and its folder."""
    found: dict[str, Path] = {}
    for folder in model_dirs():
        for path in sorted(folder.iterdir()):
            if (path / "config.json").is_file():
                found.setdefault(path.name, path)
    return found


def bundled_models() -> list[str]:
    """Names of the models shipped with layersal (in the package, or a checkout's ``models/``)."""
    return sorted(named_models())


def load(
    model: Any = DEFAULT_MODEL,
    lm_head: Any = None,
    *,
    tokenizer: Any = None,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    pairs: bool | None = None,
) -> LoadedModel:
    """Load a sequence classifier and the LM head that decodes its layers.

    ``model`` is a bundled name (see :func:`bundled_models`), a local folder, a hub id, or an
    object in memory: a ``*ForSequenceClassification`` model (with its ``tokenizer``) or a
    ``transformers`` text-classification pipeline (see :func:`from_objects`).
    ``lm_head`` names the base checkpoint whose masked-LM head to use when the classifier has
    none (e.g. ``bert-base-uncased`` for ``textattack/bert-base-uncased-SST-2``). Weights are
    read from safetensors only; pickle checkpoints need ``allow_pickle=True``. Remote code is
    never executed. ``device``: ``"cpu"``, ``"cuda"`` (``"cuda:1"``, ...) or ``"auto"`` (CUDA
    when torch sees a GPU). ``precision``: ``"fp32"`` or ``"bf16"`` (autocast for the passes).
    ``pairs``: whether the model reads pairs of texts (default: see :func:`reads_pairs`).
    """
    if _is_object(model) or _is_object(lm_head) or tokenizer is not None:
        return from_objects(
            model, tokenizer, lm_head, allow_pickle=allow_pickle, precision=precision, pairs=pairs
        )
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    path = resolve(model, allow_pickle=allow_pickle)
    config = _read_config(path)
    _check_classifier_config(config, model)
    classifier = _load_classifier(path, allow_pickle=allow_pickle, name=str(model))
    check_task(classifier.config, str(model))
    family = known_family(classifier.config)
    tokenizer = padded_right(_load_tokenizer(path, name=str(model)), classifier.config, family)
    head = resolve_lm_head(classifier, family, path, lm_head, allow_pickle=allow_pickle)
    classifier.to(device)
    head.to(device)
    labels = label_names(classifier.config)
    return LoadedModel(
        name=path.name if str(model) in bundled_models() else str(model),
        path=path,
        model=classifier,
        tokenizer=tokenizer,
        family=family,
        lm_head=head,
        labels=labels,
        max_length=_max_length(tokenizer, classifier.config),
        precision=precision,
        pairs=reads_pairs(labels, path, pairs),
    )


def _is_object(value: Any) -> bool:
    """Whether ``value`` is a model or pipeline object rather than a name or path."""
    return value is not None and not isinstance(value, str | Path)


def from_objects(
    model: Any,
    tokenizer: Any = None,
    lm_head: Any = None,
    *,
    allow_pickle: bool = False,
    precision: str = "fp32",
    pairs: bool | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` around objects the user already holds, on their device and dtype.

    ``model``: a ``*ForSequenceClassification`` module, or a text-classification pipeline (its
    model and tokenizer are used). ``tokenizer``: the model's fast tokenizer (default: the
    pipeline's, or the one saved in the model's ``name_or_path`` folder). The LM head is
    resolved as for a folder: ``lm_head`` (a ``*ForMaskedLM`` or ``*ForCausalLM`` object, or a
    checkpoint name or folder), else the LM head saved in the model's ``name_or_path`` folder,
    else the tied input embeddings. The model is not copied and nothing about the objects is
    changed: each pass puts the model in eval mode and restores every module's mode after it
    (:meth:`LoadedModel.borrowed`); hooks are removed after each pass. A decoder-only model's
    tokenizer is copied when it pads on the left or with another token (see
    :func:`padded_right`).
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if hasattr(model, "task") and hasattr(model, "model"):  # a transformers pipeline
        if model.task not in ("text-classification", "sentiment-analysis"):
            raise ModelLoadError(
                f"a {model.task!r} pipeline: layersal explains text-classification pipelines"
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
    if not type(model).__name__.endswith("ForSequenceClassification"):
        raise ModelLoadError(
            f"a {type(model).__name__} is not a sequence classifier (pass a "
            "*ForSequenceClassification model, or this one as `lm_head`?)"
        )
    check_task(model.config, name)
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
    saved = folder if folder is not None and _weight_files(folder) != ([], []) else None
    head = resolve_lm_head(model, family, saved, lm_head, allow_pickle=allow_pickle)
    device = next(model.parameters()).device
    return LoadedModel(
        name=name,
        path=None,
        model=model,
        tokenizer=tokenizer,
        family=family,
        lm_head=head.to(device),
        labels=label_names(model.config),
        max_length=_max_length(tokenizer, model.config),
        precision=precision,
        pairs=reads_pairs(label_names(model.config), folder, pairs),
    )


def check_task(config: Any, name: str) -> None:
    """Refuse a head whose outputs are not one softmax over classes.

    A regression head (one output: reward models, similarity scorers) or a multi-label head
    (independent sigmoids) would otherwise be explained as a single-label classifier: a
    softmax over one logit reads "probability 1.0", every erasure metric comes out 0, and
    labels that are not exclusive are treated as if they were.
    """
    problem = getattr(config, "problem_type", None)
    outputs = int(getattr(config, "num_labels", 2))
    if problem == "regression" or (problem is None and outputs == 1):
        kind = "a regression head (one output, as reward models and similarity scorers have)"
    elif problem == "multi_label_classification":
        kind = f"a multi-label head ({outputs} independent sigmoids)"
    else:
        return
    raise ModelLoadError(
        f"{name!r} has {kind}: layersal explains single-label classifiers (one softmax over "
        "the classes) so far; explaining it as one would give wrong probabilities and metrics"
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


def resolve(model: str | Path, *, allow_pickle: bool = False) -> Path:
    """Local folder for a bundled name, a folder path, or a hub id (downloaded if reachable)."""
    text = str(model)
    if not text.strip():
        raise ModelLoadError("no model given")
    named = named_models()
    if text in named:
        return named[text]
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"model path {text!r} is a file; give the checkpoint folder")
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_local:
        raise ModelLoadError(
            f"model {text!r} not found: no such folder "
            f"(bundled models: {', '.join(bundled_models()) or 'none'})"
        )
    return _download(text, allow_pickle=allow_pickle)


def _download(repo_id: str, *, allow_pickle: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = _WEIGHT_PATTERNS + (_PICKLE_PATTERNS if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:
        raise ModelLoadError(
            f"model {repo_id!r} is neither a bundled model "
            f"({', '.join(bundled_models()) or 'none'}) nor a local folder, and it could not "
            f"be fetched from the Hugging Face Hub ({type(exc).__name__}; offline?)"
        ) from None


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: not a Hugging Face checkpoint")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc}") from None


def _check_classifier_config(config: dict[str, Any], model: str | Path) -> None:
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"model {str(model)!r} has model_type {model_type!r}, which this transformers "
            "version does not know; layersal never runs remote code (trust_remote_code)"
        )
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelLoadError(
            f"model {str(model)!r} is a {architectures[0]}, not a sequence classifier "
            "(pass it as `lm_head` instead?)"
        )


def _weight_files(path: Path) -> tuple[list[Path], list[Path]]:
    """``(safetensors, pickle)`` weight files of a folder; a damaged safetensors file (empty,
    truncated, not safetensors at all) is an error here, before anything reads it."""
    from safetensors import SafetensorError, safe_open

    safe = sorted(path.glob("*.safetensors"))
    for file in safe:
        try:
            with safe_open(str(file), framework="pt"):  # reads and checks the header
                pass
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(
                f"{file} is not a readable safetensors file ({exc}); download or save it again"
            ) from None
    pickled = sorted(p for pattern in _PICKLE_PATTERNS for p in path.glob(pattern))
    return safe, pickled


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time chatter (unused-weight notes, progress bars)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _load_classifier(path: Path, *, allow_pickle: bool, name: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    safe, pickled = _weight_files(path)
    if not safe and not pickled:
        raise ModelLoadError(f"{path} has no weights (*.safetensors)")
    if not safe and not allow_pickle:
        raise ModelLoadError(
            f"{path} only has pickle weights ({pickled[0].name}); pickle files can run code when "
            "loaded. Convert them to safetensors, or pass `allow_pickle=True` if you trust the "
            "source"
        )
    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path,
                dtype=torch.float32,
                use_safetensors=bool(safe),
                trust_remote_code=False,
                output_loading_info=True,
            )
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ModelLoadError(_unreadable_pickle(pickled[0], name, exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        mismatch = _shape_mismatch(path, safe) if safe else None
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


def _unreadable_pickle(file: Path, name: str, exc: BaseException) -> str:
    """One line for a pickle file that the weights-only reader refused (nothing in it ran).

    torch's message is a paragraph; the line that says why (an unsupported operand, a blocked
    global such as ``posix.system``) is the one kept.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = next(
        (line for line in lines if line.startswith(("Unsupported", "Trying to load"))),
        foreign_message(exc) if len(lines) == 1 else "damaged or not a checkpoint",
    )
    return (
        f"could not read {file.name} of {name!r} as a checkpoint of tensors "
        f"({why.rstrip('.')[:160]}); nothing in it was run. Convert a trusted copy to safetensors"
    )


def _shape_mismatch(path: Path, safe: list[Path]) -> str | None:
    """The first tensor whose shape in the checkpoint differs from the one ``config.json``
    builds (and how many more do), or ``None``."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        with torch.device("meta"):
            built = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    expected = {key: tuple(value.shape) for key, value in built.state_dict().items()}
    prefix = getattr(built, "base_model_prefix", "") + "."
    found: list[str] = []
    for file in safe:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                wanted = expected.get(key, expected.get(prefix + key))
                shape = tuple(handle.get_slice(key).get_shape())
                if wanted is not None and wanted != shape:
                    found.append(
                        f"{key} is {list(shape)} in the weights but {list(wanted)} by the config"
                    )
    if not found:
        return None
    more = f", and {len(found) - 1} more" if len(found) > 1 else ""
    return found[0] + more


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
        with _quiet_transformers():
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


def read_tensors(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (safetensors; pickle only when allowed)."""
    from safetensors.torch import load_file

    safe, pickled = _weight_files(path)
    if safe:
        tensors: dict[str, torch.Tensor] = {}
        for file in safe:
            tensors.update(load_file(str(file)))
        return tensors
    if pickled and allow_pickle:
        try:
            return torch.load(pickled[0], map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
            raise ModelLoadError(_unreadable_pickle(pickled[0], str(path), exc)) from None
    if pickled:
        raise ModelLoadError(
            f"{path} only has pickle weights ({pickled[0].name}); "
            "pass `allow_pickle=True` to trust them"
        )
    raise ModelLoadError(f"{path} has no weights (*.safetensors)")


def _lookup(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """A tensor by name, accepting old ``gamma``/``beta`` layer-norm names."""
    if name in tensors:
        return tensors[name]
    for new, old in ((".weight", ".gamma"), (".bias", ".beta")):
        if name.endswith(new) and name[: -len(new)] + old in tensors:
            return tensors[name[: -len(new)] + old]
    return None


def head_from_tensors(
    tensors: dict[str, torch.Tensor],
    family: Family,
    config: Any,
    source: str,
    *,
    tied: bool = True,
) -> LMHead | None:
    """Build the LM head from a state dict, or ``None`` if it holds no head.

    A head without a transform (causal LMs) is found by its decoder tensor; with ``tied`` (an
    LM checkpoint given as the head), a checkpoint that saved its decoder only as the tied word
    embeddings counts too. The final norm and next-token flag are the classifier's
    (:func:`resolve_lm_head` adds them).
    """
    for layout in family.heads:
        if layout.marker is not None and layout.marker not in tensors:
            continue
        decoder = tensors.get(layout.decoder) if layout.decoder else None
        if decoder is None and (tied or layout.dense is not None):
            decoder = _lookup(tensors, family.embedding_key)
            if decoder is None:
                decoder = _lookup(tensors, family.embedding_key.split(".", 1)[1])
        bias = next((tensors[b] for b in layout.bias if b in tensors), None)
        if layout.dense is None or layout.norm is None:
            if decoder is None:
                continue
            return LMHead(
                decoder=decoder.float(),
                bias=None if bias is None else bias.float(),
                kind="lm_head" if family.causal else "mlm_head",
                source=source,
            )
        dense_w = _lookup(tensors, layout.dense + ".weight")
        norm_w = _lookup(tensors, layout.norm + ".weight")
        if dense_w is None or norm_w is None or decoder is None:
            continue
        dense_b = _lookup(tensors, layout.dense + ".bias")
        norm_b = _lookup(tensors, layout.norm + ".bias")
        return LMHead(
            decoder=decoder.float(),
            bias=None if bias is None else bias.float(),
            dense_weight=dense_w.float(),
            dense_bias=None if dense_b is None else dense_b.float(),
            activation=family.activation(config),
            norm_weight=norm_w.float(),
            norm_bias=None if norm_b is None else norm_b.float(),
            norm_eps=family.layer_norm_eps(config),
            kind="mlm_head",
            source=source,
        )
    return None


def embedding_head(model: Any, source: str) -> LMHead:
    """Fallback decoder: logits = h E^T with the classifier's own input embeddings."""
    embeddings = model.get_input_embeddings().weight.detach().float().clone()
    hidden = int(getattr(model.config, "hidden_size", embeddings.shape[1]))
    if embeddings.shape[1] != hidden:
        raise ModelLoadError(
            f"{source!r} embeds tokens in {embeddings.shape[1]} dims but its layers are {hidden} "
            "wide, so its embeddings cannot decode them; pass `lm_head` with a compatible base"
        )
    return LMHead(decoder=embeddings, kind="embeddings", source=source)


def final_norm(model: Any, family: Family | None) -> Norm | None:
    """A pre-norm classifier's final norm as tensors (``None`` for post-norm families)."""
    if family is None or family.final_norm is None:
        return None
    module = model.get_submodule(family.final_norm)
    weight = getattr(module, "weight", None)
    weight = None if weight is None else weight.detach().float().clone()
    if isinstance(module, torch.nn.LayerNorm):
        bias = None if module.bias is None else module.bias.detach().float().clone()
        return Norm(weight, bias, float(module.eps))
    return Norm(weight, None, norm_eps(module), rms=True, offset=family.rms_offset)


def resolve_lm_head(
    model: Any,
    family: Family | None,
    path: Path | None,
    lm_head: Any,
    *,
    allow_pickle: bool = False,
) -> LMHead:
    """The checkpoint's own LM head, else ``lm_head``'s, else the tied embeddings.

    ``path``: the classifier's checkpoint folder (``None``: nothing saved to look in, a model
    object's). ``lm_head``: a checkpoint name or folder, or a ``*ForMaskedLM`` /
    ``*ForCausalLM`` object. A pre-norm family's head applies the classifier's final norm
    first; a causal family's head decodes next-token predictions.
    """
    head = _saved_or_given_head(model, family, path, lm_head, allow_pickle=allow_pickle)
    if head is None:
        head = embedding_head(model, str(path) if path is not None else type(model).__name__)
    head.pre_norm = final_norm(model, family)
    head.next_token = family is not None and family.causal
    return head


def _saved_or_given_head(
    model: Any, family: Family | None, path: Path | None, lm_head: Any, *, allow_pickle: bool
) -> LMHead | None:
    """The head saved in the classifier's own folder, else the one ``lm_head`` names."""
    config = model.config
    if lm_head is None and family is not None and path is not None:
        tensors = read_tensors(path, allow_pickle=allow_pickle)
        head = head_from_tensors(tensors, family, config, str(path), tied=False)
        if head is not None:
            return _checked(head, model, str(path))
    if lm_head is None:
        return None
    if family is None:
        raise ModelLoadError(
            f"layersal has no LM-head adapter for model type {config.model_type!r}; "
            "leave `lm_head` out to decode through the input embeddings"
        )
    if _is_object(lm_head):
        source = str(getattr(lm_head.config, "_name_or_path", "") or type(lm_head).__name__)
        what = f"the {type(lm_head).__name__} object"
        tensors = {k: v.detach() for k, v in lm_head.state_dict().items()}
    else:
        head_path = resolve(lm_head, allow_pickle=allow_pickle)
        architecture = _read_config(head_path).get("architectures", ["?"])[0]
        source, what = str(lm_head), f"{str(lm_head)!r} ({architecture})"
        tensors = read_tensors(head_path, allow_pickle=allow_pickle)
    head = head_from_tensors(tensors, family, config, source)
    if head is None:
        kind = "causal-LM" if family.causal else "masked-LM"
        raise ModelLoadError(f"{what} has no {kind} head weights for the {family.name} layout")
    return _checked(head, model, source)


def _checked(head: LMHead, model: Any, source: str) -> LMHead:
    hidden = int(
        getattr(model.config, "hidden_size", getattr(model.config, "dim", head.input_size))
    )
    if head.input_size != hidden:
        raise ModelLoadError(
            f"the LM head from {source!r} takes {head.input_size}-dim states but the classifier's "
            f"layers are {hidden}-dim"
        )
    vocab = model.get_input_embeddings().weight.shape[0]
    if head.vocab_size != vocab:
        raise ModelLoadError(
            f"the LM head from {source!r} has a {head.vocab_size}-token vocabulary, the "
            f"classifier {vocab}: they do not share a tokenizer"
        )
    return head
