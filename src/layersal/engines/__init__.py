"""Datasets at scale: explain a whole file into Parquet shards, resumably, locally or on Ray.

:func:`explain_dataset` streams the input (:mod:`layersal.inputs`), cuts it into shards of
``shard_rows`` consecutive rows, explains each shard with :func:`layersal.explain` (which
sorts the shard by length and batches it ``batch_size`` texts at a time, or up to
``max_batch_tokens`` tokens a batch, so padding stays small) and commits it as one Parquet
file (:mod:`.sink`). Shard ``k`` always holds the same input rows, so a restarted run skips
the shards whose file exists and loses or repeats nothing. Engines: ``"local"``
(:mod:`.local`, this process) and ``"ray"`` (:mod:`.ray`, one pool of Ray Data actors that
load the model once each and, by default, read their blocks of the input (:mod:`.blocks`) and
write their shards themselves). See ``docs/scale.md``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ..inputs import Source
    from .sink import ShardSink
    from .store import Store

ENGINES = ("local", "ray")
RAY_READS = ("auto", "workers", "driver")
SHARD_BATCHES = 32
FORMAT_VERSION = 2  # 2: text_pair and *_segments columns
CALIBRATION_TEXTS = 64


@dataclass(frozen=True)
class DatasetJob:
    """What every worker needs to explain a shard (picklable: sent to Ray actors)."""

    model: str
    lm_head: str | None
    allow_pickle: bool
    device: str
    precision: str
    method: str
    options: dict[str, Any]
    target: int | str | list[int | str] | None
    word_aggregation: str
    batch_size: int
    id_type: str
    max_batch_tokens: int | None = None
    labels: tuple[str, ...] | None = None
    """A zero-shot classifier's candidate labels (``None``: the model read as it is)."""
    template: str | None = None
    multi_label: bool = False

    def zero_shot(self) -> dict[str, Any]:
        """What :func:`layersal.load` takes to read the model as the run's zero-shot
        classifier (nothing for a run that is not zero-shot)."""
        if self.labels is None:
            return {}
        from ..models import DEFAULT_TEMPLATE

        return {
            "task": "zero-shot",
            "labels": list(self.labels),
            "template": DEFAULT_TEMPLATE if self.template is None else self.template,
            "multi_label": self.multi_label,
        }

    def explainer(self, lm: Any) -> Any:
        """The job's :class:`~layersal.job.Explainer` on the loaded ``lm`` (once per process
        or actor): its options are the run's, already settled, so settling is a no-op."""
        from ..job import Explainer

        explainer = Explainer(
            lm,
            self.method,
            self.options,
            word_aggregation=self.word_aggregation,
            batch_size=self.batch_size,
        )
        explainer.settle(lambda: [])
        return explainer

    def load(self) -> Any:
        """The model, loaded (once per process or actor)."""
        from ..models import load

        return load(
            self.model,
            self.lm_head,
            allow_pickle=self.allow_pickle,
            device=self.device,
            precision=self.precision,
            **self.zero_shot(),
        )


@dataclass
class RunSummary:
    """How a dataset run went. ``rows``/``errors`` count the whole output, resumed parts too."""

    out: Path | str
    """The output folder: a path, or the URI it was given as."""
    errors_file: Path | str
    engine: str
    rows: int = 0
    errors: int = 0
    shards: int = 0
    resumed_shards: int = 0
    explained: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    already_complete: bool = False
    """Whether the run was marked complete before this invocation (it then did nothing)."""

    @property
    def texts_per_second(self) -> float:
        """Input rows handled per second by this invocation (resumed shards excluded)."""
        return self.explained / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "rows": self.rows,
            "errors": self.errors,
            "shards": self.shards,
            "resumed_shards": self.resumed_shards,
            "explained": self.explained,
            "seconds": round(self.seconds, 3),
            "texts_per_second": round(self.texts_per_second, 2),
        }


ShardCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Columns:
    """Which column (field) of each input row holds what; ``None``: the default (the text:
    the first of ``text``, ``sentence``, ``review``, ``content``; ids: the row number; labels:
    a ``label`` column if there is one; no second text)."""

    text: str | None = None
    id: str | None = None
    label: str | None = None
    pair: str | None = None


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine runs: ``num_workers`` actors (default: cluster CPUs /
    ``cpus_per_worker``), each with ``cpus_per_worker`` CPUs (and torch threads) and one GPU
    when the device is ``cuda``; ``address`` (or ``RAY_ADDRESS``) names the cluster (default: a
    local Ray); ``reads``: ``workers`` (the workers read their blocks of the input and write
    their shards themselves; input and output on a file system every node shares),
    ``driver`` (this process reads the input and writes the shards) or ``auto`` (``workers``
    when the whole cluster is this machine); see :mod:`.ray`."""

    num_workers: int | None = None
    address: str | None = None
    cpus_per_worker: float = 1
    reads: str = "auto"


# the flat spellings explain_dataset still takes, and where each goes
_COLUMN_WORDS = {
    "text_column": "text",
    "id_column": "id",
    "label_column": "label",
    "pair_column": "pair",
}
_RAY_WORDS = {
    "num_workers": "num_workers",
    "ray_address": "address",
    "cpus_per_worker": "cpus_per_worker",
    "ray_reads": "reads",
}


def _grouped(
    columns: Columns | None, ray: RayOptions | None, spelled: dict[str, Any]
) -> tuple[Columns, RayOptions, Any]:
    """``columns``, ``ray`` and ``layer`` from the grouped arguments and the flat spellings;
    a name explain_dataset does not know, or a group given both ways, is refused."""
    known = set(_COLUMN_WORDS) | set(_RAY_WORDS) | {"layer"}
    unknown = sorted(set(spelled) - known)
    if unknown:
        raise InputError(f"explain_dataset() has no parameter {unknown[0]!r}")
    flat_columns = {v: spelled[k] for k, v in _COLUMN_WORDS.items() if k in spelled}
    flat_ray = {v: spelled[k] for k, v in _RAY_WORDS.items() if k in spelled}
    if (flat_columns and columns is not None) or (flat_ray and ray is not None):
        raise InputError("give the columns (or the Ray options) once: grouped or flat, not both")
    return (
        replace(columns or Columns(), **flat_columns),
        replace(ray or RayOptions(), **flat_ray),
        spelled.get("layer"),
    )


@dataclass
class DatasetRun:
    """One run as an engine sees it: the job, the input, the output folder, the shard size, the
    shards already written, the summary it adds to, and how it reports progress."""

    job: DatasetJob
    source: Source
    sink: ShardSink
    shard_rows: int
    done: set[int]
    summary: RunSummary
    progress: bool = False
    on_shard: ShardCallback | None = None


def explain_dataset(
    input: str | Path,
    out: str | Path,
    *,
    model: Any = "sst2-tiny",
    lm_head: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    method: str = "dls",
    target: int | str | Sequence[int | str] | None = None,
    options: dict[str, Any] | None = None,
    word_aggregation: str = "sum",
    batch_size: int = 32,
    shard_rows: int | None = None,
    columns: Columns | None = None,
    engine: str = "local",
    ray: RayOptions | None = None,
    max_batch_tokens: int | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_shard: ShardCallback | None = None,
    labels: Sequence[str] | None = None,
    template: str | None = None,
    multi_label: bool = False,
    **spelled: Any,
) -> RunSummary:
    """Explain every row of ``input`` into the Parquet dataset folder ``out``; resumable.

    ``input``: .txt / .tsv / .csv / .jsonl / .parquet, read lazily: a path, or for the Ray
    engine a URI its workers open through pyarrow's file systems (``s3://``, ``gs://``, ...).
    ``model``: a name or path (or, for the local engine, a :class:`~layersal.LoadedModel`).
    ``options``: the method's options (``{"layer": 1}``); ``dls`` runs with
    ``layer_report=False`` (the rows keep no per-layer report). ``columns``: which column
    (field) holds the text, the row ids, the gold labels and a pair's second text
    (:class:`Columns`; default: found by name). ``ray``: how the Ray engine runs
    (:class:`RayOptions`). The flat spellings of these stay accepted: ``layer=``,
    ``text_column=``, ``id_column=``, ``label_column=``, ``pair_column=``, ``num_workers=``,
    ``ray_address=``, ``cpus_per_worker=`` and ``ray_reads=`` (each once: not also in the
    group).
    ``layer="auto"`` (the default for ``dls``) is settled once for the run (the model card,
    else a calibration on the first 64 texts of ``input``, no labels used, cached per model;
    see :mod:`layersal.saliency.layer_choice`), recorded in ``OUT/_auto_layer.json``, and every
    row is explained with that configuration; a resumed run reuses it. ``device``
    (``cpu``/``cuda``/``auto``) and ``precision`` (``fp32``/``bf16``) go to
    :func:`layersal.load`.
    ``shard_rows``: input rows per shard (default ``32 * batch_size``; a resumed run
    keeps the recorded value). Rows that cannot be explained go to ``OUT.errors.jsonl``.
    Rerunning with the same settings continues an interrupted run; other settings are refused
    unless ``overwrite``. ``max_batch_tokens``: form each
    model pass from texts of similar length up to this many (padded) tokens instead of
    ``batch_size`` texts (for GPUs). ``limit``: explain only the first ``limit`` rows of
    ``input`` (recorded with the run; on Ray the driver reads them). ``on_shard`` is called
    with a small dict after each committed shard.

    What each output row is follows the model's task: one row per text; a multi-label
    model's row per label it predicts; a token classifier's row per entity it predicts in the
    text (none for a text without one), with the entity's span, word, label and probability in
    the ``entity_*`` columns (``target``: a span every text is explained at, as in
    :func:`layersal.explain`); a zero-shot classifier's row per label explained (default: the
    top one; ``target``: a label or a list of labels, a row each), ``text_pair`` its
    hypothesis. ``labels``, ``template`` and ``multi_label`` read a natural-language-inference
    ``model`` as a zero-shot classifier of ``labels`` (see :func:`layersal.load`); they are
    recorded with the run.

    The run records a fingerprint of ``input``'s content (:meth:`~layersal.inputs.Source.
    fingerprint`): rerunning on an input edited since is refused like other changed settings.
    """
    from ..inputs import STDIN, Source
    from .blocks import uri_source
    from .sink import ShardSink, errors_path
    from .store import is_uri

    columns, ray, layer = _grouped(columns, ray, spelled)
    text_column, id_column, label_column, pair_column = (
        columns.text, columns.id, columns.label, columns.pair
    )  # fmt: skip
    num_workers, ray_address = ray.num_workers, ray.address
    cpus_per_worker, ray_reads = ray.cpus_per_worker, ray.reads

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if shard_rows is not None and shard_rows < 1:
        raise InputError(f"`shard_rows` must be at least 1, not {shard_rows}")
    if cpus_per_worker <= 0:
        raise InputError(f"`cpus_per_worker` must be positive, not {cpus_per_worker}")
    if num_workers is not None and num_workers < 1:
        raise InputError(f"`num_workers` must be at least 1, not {num_workers}")
    if ray_reads not in RAY_READS:
        raise InputError(f"`ray_reads` must be one of {', '.join(RAY_READS)}, not {ray_reads!r}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise InputError(f"`max_batch_tokens` must be at least 1, not {max_batch_tokens}")
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise InputError(f"`limit` must be at least 1, not {limit}")
    if limit is not None and engine == "ray":
        if ray_reads == "workers":
            raise InputError(
                "`limit` reads the first rows in this process: use `ray_reads='driver'` (or "
                "'auto') with it"
            )
        ray_reads = "driver"
    if str(input) == STDIN:
        raise InputError("a dataset run needs a file (resuming re-reads it), not standard input")
    scratch = None
    if is_uri(str(input)):
        if engine != "ray" or ray_reads == "driver":
            if limit is not None:
                raise InputError(f"{input} is a URI, which the Ray workers read: leave out `limit`")
            raise InputError(
                f"{input} is a URI: the Ray workers read it (`engine='ray'`, `ray_reads` "
                "'workers' or 'auto'); for the local engine, give a path"
            )
        scratch = tempfile.TemporaryDirectory(prefix="layersal-input-")
        source, named = uri_source(
            str(input), text_column, id_column, label_column, Path(scratch.name), pair_column
        )
    else:
        source = Source(
            input, text_column, id_column, label_column, pair_column=pair_column, limit=limit
        )
        named = {}
    method_options = _method_options(method, layer, options)
    lm = None if isinstance(model, str | Path) else model
    if lm is not None and engine == "ray":
        raise InputError(
            "the Ray engine loads the model in every worker: pass its name or path, not a loaded "
            "model"
        )
    if isinstance(labels, str):
        raise InputError(f"`labels` takes a list of zero-shot labels, not one string ({labels!r})")
    if lm is not None and (labels is not None or template is not None or multi_label):
        raise InputError(
            "labels, template and multi_label make a zero-shot classifier when a model is "
            "loaded: give them to layersal.load(model, task='zero-shot', labels=[...])"
        )
    if lm is None and labels is None and (template is not None or multi_label):
        raise InputError(
            "`template` and `multi_label` are options of a zero-shot classifier: give its "
            "candidate `labels`"
        )
    if lm is not None and lm.task.hypotheses:  # a zero-shot LoadedModel: recorded as one
        labels, template = lm.task.candidates, lm.task.template
        multi_label = lm.task.multi_label
    if isinstance(target, Sequence) and not isinstance(target, str):
        target = list(target)
    model_name = _model_id(lm.name if lm is not None else str(model))
    lm_head_name = None if lm_head is None else _model_id(str(lm_head))
    job = DatasetJob(
        model=str(model) if lm is None else lm.name,
        lm_head=None if lm_head is None else str(lm_head),
        allow_pickle=allow_pickle,
        device=device,
        precision=precision,
        method=method,
        options=method_options,
        target=target,
        word_aggregation=word_aggregation,
        batch_size=batch_size,
        id_type=source.id_type,
        max_batch_tokens=max_batch_tokens,
        labels=None if labels is None else tuple(str(label) for label in labels),
        template=template,
        multi_label=bool(multi_label),
    )
    task, own_labels = (lm.task, None) if lm is not None else _task_of(job)
    _check_job(job, task, lm.labels if lm is not None else task.labels_of(own_labels or []))
    _check_pairs(lm, job, task, own_labels, pair_column)
    settings = {
        **source.describe(),
        **named,
        "model": model_name,
        "lm_head": lm_head_name,
        **({} if job.labels is None else {"zero_shot": _recorded_zero_shot(job)}),
        "method": method,
        "options": method_options,
        "target": target,
        "word_aggregation": word_aggregation,
        "precision": precision,
        "shard_rows": shard_rows,
        "format_version": FORMAT_VERSION,
    }
    sink = ShardSink(out)
    recorded = sink.open(
        settings, overwrite=overwrite, default_shard_rows=SHARD_BATCHES * batch_size
    )
    summary = RunSummary(
        out=out if is_uri(str(out)) else Path(out),
        errors_file=errors_path(out),
        engine=engine,
        settings=recorded,
    )
    try:
        started = time.perf_counter()
        job, lm, chosen = _prepare_job(job, lm, source, sink.store)
        summary.settings = {**recorded, **chosen}
        done = sink.done_shards()
        summary.resumed_shards = len(done)
        summary.already_complete = sink.is_complete()
        if not summary.already_complete:
            run = DatasetRun(
                job, source, sink, recorded["shard_rows"], done, summary, progress, on_shard
            )
            if engine == "local":
                from .local import run_local

                run_local(run, lm)
            else:
                from .ray import run_ray

                run_ray(run, num_workers, ray_address, cpus_per_worker, ray_reads)
        summary.seconds = time.perf_counter() - started
        summary.shards = len(sink.done_shards())
        summary.rows = sink.count_rows()
        summary.errors = sink.gather_errors()
        if not sink.is_complete():
            sink.finish(summary.as_dict())
    except BaseException:
        sink.discard_if_unstarted()
        raise
    finally:
        sink.close()
        if scratch is not None:
            scratch.cleanup()
    return summary


def _method_options(
    method: str, layer: int | str | None, options: dict[str, Any] | None
) -> dict[str, Any]:
    from ..job import merge_options
    from ..saliency import check_method

    # ``layer`` is a method option; ``layer=`` is its shorthand, never given both ways
    merged = merge_options(options, {} if layer is None else {"layer": layer})
    check_method(method, merged)
    return merged


def _prepare_job(
    job: DatasetJob, lm: Any, source: Any, out: Store
) -> tuple[DatasetJob, Any, dict[str, Any]]:
    """The job with its method's options made concrete once for the whole run (DLS's
    ``layer="auto"``), recorded in ``out`` so that a resumed run keeps them; also the
    settings that say what was chosen.

    A choice is made from the model card or the per-model cache, else on the first
    ``CALIBRATION_TEXTS`` readable texts of the input (no labels); the model is loaded here
    only if the method needs it for the choice (the Ray driver too).
    """
    import json
    from itertools import islice

    from ..inputs import has_text
    from ..saliency import prepare_options
    from .sink import AUTO_LAYER_FILE
    from .work import calibration_items

    if out.exists(AUTO_LAYER_FILE):
        kept = json.loads(out.read_bytes(AUTO_LAYER_FILE))
        # a record written before auto chose rule and decoding holds only its layer
        chosen = kept.get("options") or {
            "layer": int(kept["layer"]),
            "rule": "gradient",
            "decode": True,
        }
        settings = kept.get("settings") or {f"auto_{key}": value for key, value in chosen.items()}
        return replace(job, options={**job.options, **chosen}), lm, settings
    loaded = [lm]

    def model() -> Any:
        if loaded[0] is None:
            loaded[0] = job.load()
        return loaded[0]

    def texts() -> list[Any]:
        rows = (r.item for r in source.rows() if r.error is None and r.text and has_text(r.item))
        first = list(islice(rows, CALIBRATION_TEXTS))
        if not first:
            raise InputError(
                f"method {job.method!r} needs at least one readable text in the input to choose "
                "its options on"
            )
        return calibration_items(model(), first, job.target, job.batch_size)

    prepared = prepare_options(job.method, model, texts, job.options, job.batch_size)
    if prepared.evidence is not None:
        evidence = {**prepared.evidence, "settings": prepared.settings}
        out.commit(AUTO_LAYER_FILE, json.dumps(evidence, indent=1).encode("utf-8"))
    return replace(job, options=prepared.options), loaded[0], prepared.settings


def _check_job(job: DatasetJob, task: Any, labels: list[str]) -> None:
    """The job's word aggregation and target, checked against the model's ``task`` and
    ``labels`` before any work: a token classifier's target names a span, a zero-shot
    classifier's one label or several, any other model's one class."""
    from ..entities import entity_target
    from ..targets import target_index
    from ..words import WORD_AGGREGATIONS

    if job.word_aggregation not in WORD_AGGREGATIONS:
        raise InputError(
            f"word aggregation must be one of {', '.join(WORD_AGGREGATIONS)}, not "
            f"{job.word_aggregation!r}"
        )
    if job.target is None:
        return
    several = isinstance(job.target, list)
    if several and not task.hypotheses:
        raise InputError(
            "a dataset run explains every text for one target: a list of targets names "
            "labels of a zero-shot classifier"
        )
    if task.focused:
        entity_target(job.target, labels)
    elif task.hypotheses:
        values = job.target if isinstance(job.target, list) else [job.target]
        if not values:
            raise InputError("no zero-shot label to explain: name one or more labels")
        for value in values:
            target_index(value, labels, "zero-shot label")
    else:
        assert not isinstance(job.target, list)
        target_index(job.target, labels)


def _check_pairs(
    lm: Any, job: DatasetJob, task: Any, own_labels: list[str] | None, pair_column: str | None
) -> None:
    """A pair model needs ``pair_column``, a single-text model must not get one: said once
    here, not as an error on every row. A zero-shot classifier pairs each text with its
    labels' hypotheses itself: it reads single texts."""
    from ..checkpoints import resolve
    from ..models import reads_pairs

    if lm is not None:
        expected = lm.pairs
    elif task.hypotheses:
        expected = False
    else:
        folder = resolve(job.model, allow_pickle=job.allow_pickle)
        expected = reads_pairs(own_labels or [], folder, None)
    if expected is True and pair_column is None:
        nli = {"entailment", "contradiction"} <= {label.lower() for label in own_labels or []}
        raise InputError(
            f"{job.model!r} classifies pairs of texts: name the second text's column with "
            "`pair_column` (--pair-column)"
            + (", or read it as a zero-shot classifier of candidate `labels`" if nli else "")
        )
    if expected is False and pair_column is not None:
        what = " as a zero-shot classifier" if task.hypotheses else ""
        raise InputError(f"{job.model!r}{what} classifies single texts: leave out `pair_column`")


def _recorded_zero_shot(job: DatasetJob) -> dict[str, Any]:
    """The zero-shot classifier a run reads its model as, as its manifest records it."""
    chosen = job.zero_shot()
    return {key: chosen[key] for key in ("labels", "template", "multi_label")}


def _task_of(job: DatasetJob) -> tuple[Any, list[str]]:
    """The model's task as the run reads it (zero-shot with the job's labels) and its own
    label names, from its config alone (the driver of a Ray run loads no weights)."""
    from transformers import AutoConfig

    from ..checkpoints import resolve
    from ..models import chosen_task, label_names

    path = resolve(job.model, allow_pickle=job.allow_pickle)
    config = AutoConfig.from_pretrained(path)
    chosen = job.zero_shot()
    task = chosen_task(
        config,
        chosen.get("task"),
        chosen.get("labels"),
        chosen.get("template", "This example is {}."),
        bool(chosen.get("multi_label", False)),
    )
    return task, label_names(config)


def _model_id(name: str) -> str:
    """A bundled name as is, a local folder as its absolute path, anything else (a hub id) as is."""
    from ..checkpoints import bundled_models

    if name in bundled_models():
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


__all__ = [
    "ENGINES",
    "RAY_READS",
    "Columns",
    "DatasetJob",
    "DatasetRun",
    "RayOptions",
    "RunSummary",
    "explain_dataset",
]
