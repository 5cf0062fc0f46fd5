"""Shared fixtures: tiny randomly initialised checkpoints of every supported family.

Built in the test session (no download). Encoder families use the bundled bert-base-uncased
tokenizer; decoder-only families a byte-level BPE tokenizer trained here on a few sentences
(GPT-2's kind of tokenizer: leading spaces inside tokens, no [MASK]).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import layersal
from layersal.checkpoints import BUNDLED_DIR

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOKENIZER_DIR = BUNDLED_DIR / "agnews-tiny"
ENCODER_FAMILIES = ["bert", "distilbert", "roberta", "electra", "deberta-v2", "modernbert"]
CAUSAL_FAMILIES = ["gpt2", "llama", "qwen2", "mistral", "gemma"]
FAMILIES = ENCODER_FAMILIES + CAUSAL_FAMILIES
BPE_CORPUS = (
    "An unexpectedly touching story. A gripping, beautifully acted film about nothing much. "
    "The film was not bad at all; decode me, please. Fine work, dull plot, great cast! "
    "a quiet, moving film that never quite lands, but the acting is superb and honest."
)


def bpe_tokenizer(folder: Path) -> Path:
    """Save a byte-level BPE tokenizer (ids 0-3: <pad>, <unk>, <s>, </s>) that adds <s> in
    front of each text, as Llama's does, and pads on the left, as many decoder tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([BPE_CORPUS] * 4, trainer)
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 2), ("</s>", 3)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
        model_max_length=128,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)
    return folder


def tiny_config(family: str, num_labels: int = 3):
    """A 2-layer, 32-wide config of ``family`` over the bert-base-uncased vocabulary size (the
    BPE tokenizer of the decoder-only families uses its first ids)."""
    from transformers import (
        BertConfig,
        DebertaV2Config,
        DistilBertConfig,
        ElectraConfig,
        GemmaConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        ModernBertConfig,
        Qwen2Config,
        RobertaConfig,
    )

    common = {"vocab_size": 30522, "num_labels": num_labels, "max_position_embeddings": 128}
    blocks = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    decoder = {**common, **blocks, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    if family == "bert":
        return BertConfig(**common, **blocks)
    if family == "distilbert":
        return DistilBertConfig(**common, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    if family == "roberta":
        return RobertaConfig(**common, **blocks, pad_token_id=0)
    if family == "electra":
        return ElectraConfig(**common, **blocks, embedding_size=32)
    if family == "deberta-v2":
        return DebertaV2Config(
            **common, **blocks, relative_attention=True, pos_att_type=["p2c", "c2p"], pad_token_id=0
        )
    if family == "modernbert":  # layer 0 global, layer 1 local (a 4-token window)
        special = {"pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102}
        special |= {"bos_token_id": 101, "eos_token_id": 102}
        return ModernBertConfig(
            **common, **blocks, **special, global_attn_every_n_layers=2, local_attention=4
        )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=128,
            num_labels=num_labels, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        )  # fmt: skip
    if family == "gemma":
        return GemmaConfig(**decoder, num_key_value_heads=1, head_dim=16)
    kinds = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
    if family in kinds:
        return kinds[family](**decoder, num_key_value_heads=1)
    raise ValueError(family)


def build_tiny(root: Path, family: str, seed: int = 0) -> tuple[Path, Path]:
    """Save a random language model (masked, or causal for decoder-only families) and a
    classifier sharing its base weights.

    Returns (classifier_dir, lm_dir); the classifier has no LM head of its own.
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    torch.manual_seed(seed)
    config = tiny_config(family)
    language_model = AutoModelForCausalLM if family in CAUSAL_FAMILIES else AutoModelForMaskedLM
    mlm = language_model.from_config(config)
    classifier = AutoModelForSequenceClassification.from_config(config)
    classifier.base_model.load_state_dict(mlm.base_model.state_dict(), strict=False)
    classifier.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    classifier.config.label2id = {v: k for k, v in classifier.config.id2label.items()}
    mlm_dir, classifier_dir = root / f"{family}-mlm", root / f"{family}-classifier"
    mlm.save_pretrained(mlm_dir)
    classifier.save_pretrained(classifier_dir)
    for folder in (mlm_dir, classifier_dir):
        if family in CAUSAL_FAMILIES:
            bpe_tokenizer(folder)
        else:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(TOKENIZER_DIR / name, folder / name)
    return classifier_dir, mlm_dir


def tiny_head(
    tiny_dirs, folder: Path, labels: list[str], seed: int = 0, **config: object
) -> tuple[Path, Path]:
    """The tiny BERT with a fresh head of ``labels`` (and ``config`` changes such as
    ``problem_type``), saved with its tokenizer in ``folder``: (classifier_dir, lm_dir)."""
    from transformers import AutoModelForSequenceClassification

    classifier_dir, mlm_dir = tiny_dirs["bert"]
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        classifier_dir, num_labels=len(labels), ignore_mismatched_sizes=True, **config
    )
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(classifier_dir / name, folder / name)
    return folder, mlm_dir


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(root, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def bert_tiny(tiny_dirs) -> layersal.LoadedModel:
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    return layersal.load(classifier_dir, lm_head=mlm_dir)


@pytest.fixture(scope="module")
def one_thread():
    """For a module of tiny-model tests (``pytestmark = pytest.mark.usefixtures(...)``): these
    32-wide models gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' waiting makes each tiny forward ~50x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sharp_bert(tiny_dirs) -> layersal.LoadedModel:
    """The tiny random BERT with its weights (not its LayerNorms) x10: logits and their
    differences of order 1, and a clearly nonlinear model (at x1 it is nearly constant).
    Built once per test module that asks for it (its weights are changed in place)."""
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if "LayerNorm" not in name:
                p.mul_(10)
    return lm


@pytest.fixture(scope="session")
def sst2_tiny() -> layersal.LoadedModel:
    return layersal.load("sst2-tiny")


def require_data(*parts: str) -> Path:
    """Path to a file of ../shared/data, or skip the test with the reason."""
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder is absent on this machine")
    return path


def pytest_collection_modifyitems(items) -> None:
    """Every test that drives a browser (the ``browser`` fixture) carries the ``browser``
    marker, so the summary below can count them."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


# (title, which tests, what a skip means): one closing line each, so that a run that quietly
# lost them says so
_COUNTED = [
    ("Ray engine tests", lambda report: "tests/test_ray_" in report.nodeid, ""),
    (
        "Browser tests",
        lambda report: "browser" in getattr(report, "keywords", {}),
        " (a skip means /usr/bin/chromium or chromedriver is missing: "
        "apt-get install chromium chromium-driver)",
    ),
]


def pytest_terminal_summary(terminalreporter) -> None:
    """One line each on whether the Ray engine's and the browser tests ran: CI installs Ray,
    Chromium and chromedriver, so they must not skip there.

    Counts the tests by outcome, with the seconds of all their phases (set-up, call,
    tear-down)."""
    for title, chosen, note in _COUNTED:
        ours = [
            (key, report)
            for key, reports in terminalreporter.stats.items()
            for report in reports
            if hasattr(report, "nodeid") and chosen(report)
        ]
        if not ours:
            continue
        counts = {o: sum(k == o for k, _ in ours) for o in ("passed", "failed", "skipped", "error")}
        if not any(counts.values()):  # all of them deselected
            continue
        seconds = sum(getattr(report, "duration", 0.0) for _, report in ours)
        listed = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        skipped = note if counts["skipped"] else ""
        terminalreporter.write_line(f"{title}: {listed} in {seconds:.0f} s{skipped}")
