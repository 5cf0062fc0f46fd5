"""The web API's request and response schemas: what ``POST /api/explain`` and
``/api/report.html`` take and give, ``GET /api/info``'s answer and the error body, the response
models generated from the result dataclasses, and the strict JSON (no NaN or Infinity) every
route reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import types
import typing
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..explanation import Explanation, LayerReport, Token, Word


class ExplainRequest(BaseModel):
    """Explain one text (``text``) or several (``texts``): give exactly one of the two. A pair
    model reads pairs: the second texts go in ``text_pair`` / ``text_pairs``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "a gripping, beautifully acted film",
                    "method": "dls",
                    "layer": "coherent",
                },
                {"texts": ["a dull film", "a fine film"], "method": "gradient"},
            ]
        },
    )

    text: str | None = Field(None, description="One text to explain.")
    texts: list[str] | None = Field(None, description="Several texts, explained in one batch.")
    text_pair: str | None = Field(
        None, description="The second text of a pair, with 'text' (pair models: NLI, rerankers)."
    )
    text_pairs: list[str] | None = Field(
        None, description="The second text of each pair, with 'texts' (one per text)."
    )
    method: str = Field("dls", description="A saliency method: see GET /api/info.")
    budget: int | None = Field(
        None,
        description=(
            "Instead of a method: at most this many model passes per text; the server picks "
            "the most faithful method the model's card measured within it and records the "
            "choice in each explanation's options['budget']. Not with method, layer or options."
        ),
    )
    layer: int | str | None = Field(
        None,
        description=(
            "Layer for methods that take one (dls, gradcam): an integer (0 = embeddings, "
            "negative from the top), 'auto', 'input' or 'coherent' (dls); null: the method's "
            "default."
        ),
    )
    target: int | str | None = Field(
        None,
        description=(
            "Class to explain (index or label name); null: the predicted class (a multi-label "
            "model: each predicted label; a token classifier: each entity it finds). A token "
            "classifier's target is a span: a word index (3) or character offsets ('10:16'), "
            "optionally with a type ('10:16=ORG'); a zero-shot classifier's, one of its labels."
        ),
    )
    word_aggregation: str = Field("sum", description="Merge sub-word scores: sum, mean or max.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The method's own options, e.g. {'span': 5} for occlusion or {'rule': 'cp'} for dls; "
            "GET /api/info lists each method's options with their types and defaults."
        ),
    )


def response_model(data: type, generated: dict[type, Any]) -> Any:
    """The pydantic model of result dataclass ``data`` (``<Name>Out``), generated from its
    fields: the same names, types and defaults, the dataclasses it holds generated too. The
    API's schema is the result types', never a copy kept by hand."""
    if data in generated:
        return generated[data]
    hints = typing.get_type_hints(data)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(data):
        annotation = _swapped(hints[f.name], generated)
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (annotation, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (annotation, Field(default_factory=f.default_factory))
        else:
            fields[f.name] = (annotation, ...)
    model = create_model(f"{data.__name__}Out", __doc__=data.__doc__, **fields)
    generated[data] = model
    return model


def _swapped(annotation: Any, generated: dict[type, Any]) -> Any:
    """``annotation`` with every result dataclass in it replaced by its generated model."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return response_model(annotation, generated)
    arguments = typing.get_args(annotation)
    if not arguments:
        return annotation
    swapped = tuple(_swapped(a, generated) for a in arguments)
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, swapped)
    return origin[swapped if len(swapped) > 1 else swapped[0]]


_GENERATED: dict[type, Any] = {}
ExplanationOut = response_model(Explanation, _GENERATED)
TokenOut, WordOut, LayerReportOut = (_GENERATED[t] for t in (Token, Word, LayerReport))


class ExplainResponse(BaseModel):
    """The explanations of the input texts, in input order: one per text, or for a text with
    several (a multi-label model's predicted labels, a token classifier's entities: none or
    more) each of them, the text's together; ``text`` says which text each explains."""

    explanations: list[ExplanationOut]  # type: ignore[valid-type]  # generated at import
    elapsed_s: float = Field(0.0, description="Seconds spent explaining (queueing included).")


class ReportRequest(BaseModel):
    """Explanations to render as an HTML page (what POST /api/explain returned)."""

    explanations: list[ExplanationOut]  # type: ignore[valid-type]  # generated at import


class OptionInfo(BaseModel):
    name: str
    type: str = Field(description="The option's type as the method declares it, e.g. 'int | None'.")
    default: Any = None


class MethodInfo(BaseModel):
    name: str
    takes_layer: bool
    layer_choices: list[int | str] = Field(
        default_factory=list, description="Values of 'layer' this method accepts (besides null)."
    )
    options: list[OptionInfo] = Field(
        default_factory=list,
        description="The method's own options (the request's 'options'), from its registry entry.",
    )


class Limits(BaseModel):
    max_chars: int = Field(description="Longest text accepted, in characters (longer: 413).")
    max_batch: int = Field(description="Most texts per request (more: 413).")
    timeout_s: float = Field(description="Time budget of one request (over it: 503/504).")
    max_rows: int = Field(
        description="Most model rows (a text through one forward pass) one request may cost, "
        "from its method's options, counted before it runs (more: 422)."
    )


class InfoResponse(BaseModel):
    model: str
    labels: list[str]
    num_layers: int = Field(
        description="Transformer blocks; hidden-state layers are 0..num_layers."
    )
    decoder: str
    max_length: int = Field(description="Model's maximum tokens; longer texts are truncated.")
    pairs: bool | None = Field(
        None, description="Whether the model reads pairs of texts (null: either is accepted)."
    )
    task: str = Field(
        "single_label",
        description="What the model predicts: single_label (one softmax over the labels), "
        "multi_label (independent sigmoids), regression (a score), token_classification (a tag "
        "per token: entities; labels are the entity types, O: no entity) or zero_shot (a "
        "natural-language-inference model scoring one hypothesis per label).",
    )
    methods: list[MethodInfo]
    default_method: str
    limits: Limits
    version: str


class ErrorOut(BaseModel):
    error: str


# ---------------------------------------------------------------------------------- runner


# ------------------------------------------------------------------------------------- app


class _NotJSON(ValueError):
    def __init__(self, constant: str) -> None:
        super().__init__(constant)
        self.constant = constant


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(name)


def strict_json(body: bytes | str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, though
    Python's parser takes them): a ``json.JSONDecodeError`` saying where."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NotJSON as exc:
        raise json.JSONDecodeError(
            f"{exc.constant} is not a JSON number", text, max(0, text.find(exc.constant))
        ) from None


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body may not hold ``NaN`` or ``Infinity``: a 422 like any other
    malformed body, instead of a value that breaks the first float check (or the JSON
    error response itself) further on."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


def from_model(e: Any) -> Explanation:
    data = e.model_dump()
    return Explanation(
        **{
            **data,
            "tokens": [Token(**t) for t in data["tokens"]],
            "words": [Word(**w) for w in data["words"]],
            "layers": [LayerReport(**r) for r in data["layers"]],
        }
    )
