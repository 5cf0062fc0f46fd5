"""Finding and reading checkpoint folders: bundled names, local folders and hub ids, their
configs, model cards and weight files (safetensors; pickle only when allowed, and then only
through torch's weights-only reader), with one clear error for each way they can be wrong.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError, foreign_message

BUNDLED_DIR = Path(__file__).parent / "bundled"
CHECKOUT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = "sst2-tiny"
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]
_PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt"]
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


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: not a Hugging Face checkpoint")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc}") from None


def check_classifier_config(config: dict[str, Any], model: str | Path) -> None:
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"model {str(model)!r} has model_type {model_type!r}, which this transformers "
            "version does not know; layersal never runs remote code (trust_remote_code)"
        )
    architectures = config.get("architectures") or []
    heads = ("ForSequenceClassification", "ForTokenClassification")
    if architectures and not any(a.endswith(heads) for a in architectures):
        raise ModelLoadError(
            f"model {str(model)!r} is a {architectures[0]}, not a sequence classifier "
            "(pass it as `lm_head` instead?)"
        )


def weight_files(path: Path) -> tuple[list[Path], list[Path]]:
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
def quiet_transformers() -> Iterator[None]:
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


def unreadable_pickle(file: Path, name: str, exc: BaseException) -> str:
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


def shape_mismatch(path: Path, safe: list[Path]) -> str | None:
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


def read_tensors(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (safetensors; pickle only when allowed)."""
    from safetensors.torch import load_file

    safe, pickled = weight_files(path)
    if safe:
        tensors: dict[str, torch.Tensor] = {}
        for file in safe:
            tensors.update(load_file(str(file)))
        return tensors
    if pickled and allow_pickle:
        try:
            return torch.load(pickled[0], map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
            raise ModelLoadError(unreadable_pickle(pickled[0], str(path), exc)) from None
    if pickled:
        raise ModelLoadError(
            f"{path} only has pickle weights ({pickled[0].name}); "
            "pass `allow_pickle=True` to trust them"
        )
    raise ModelLoadError(f"{path} has no weights (*.safetensors)")


def is_object(value: Any) -> bool:
    """Whether ``value`` is a model or pipeline object rather than a name or path."""
    return value is not None and not isinstance(value, str | Path)
