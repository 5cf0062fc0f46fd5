"""The FastAPI app behind ``layersal serve``: a page at ``/`` and a JSON API under ``/api``.

The model is loaded once by the caller and shared; :mod:`.runner` runs the explanations on
it, gathering concurrent requests into micro-batches, each request within its time budget
(``timeout_s``: a 503 when it never reached the model, a 504 when it ran too long). A request
is bounded before it runs: its texts (``max_chars``, ``max_batch``) and its cost in model
rows (``max_rows``). All state lives on the app instance (``app.state.layersal``).
"""

import asyncio
import copy
import importlib.resources
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..budget_choice import budget_alone, choose_for
from ..errors import ExplanationTimeout, InputError, LayersalError, QueueFull, ServerBusy
from ..explanation import Explanation
from ..inputs import check_texts, is_pair, unfocused
from ..job import Explainer, merge_options
from ..models import LoadedModel
from ..rows import PlannedRow, explained_windows, known_rows, planning_rows
from ..saliency import (
    check_method,
    method_cost,
    method_options,
    method_schema,
    methods,
    named_values,
)
from ..targets import int_or_text
from ..version import __version__
from ..windows import window_overlap, window_rows
from .card import render_html
from .runner import Runner
from .schemas import (
    ErrorOut,
    ExplainRequest,
    ExplainResponse,
    InfoResponse,
    Limits,
    MethodInfo,
    OptionInfo,
    ReportRequest,
    StrictJSONRoute,
    from_model,
    strict_json,
)
from .stalls import BodyLimit, BodyTimeout

if TYPE_CHECKING:
    from ..tasks import ZeroShot

DEFAULT_MAX_CHARS = 5000
DEFAULT_MAX_BATCH = 32
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_ROWS = 5000
DEFAULT_BODY_TIMEOUT_S = 15.0
# bytes a request body may take beyond its texts (options, field names), and per character
# of text (JSON escapes: up to 12 bytes for a character outside the BMP)
_BODY_SLACK = 64 * 1024
_BYTES_PER_CHAR = 12
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_STATIC = "static"
_STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
# the page and its own script and style: nothing inline, nothing from the network
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("layersal.serve")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    return host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127.")


def loopback_hosts(host: str) -> list[str]:
    """``Host`` header values to accept when bound to loopback ``host`` (no DNS rebinding)."""
    names = {"127.0.0.1", "localhost", "::1", "[::1]", host.strip("[]").lower()}
    if ":" in host:
        names.add(f"[{host.strip('[]').lower()}]")
    return sorted(names)


# ----------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Cost:
    """What a request will cost the model: ``rows`` (a text or a window through one forward
    pass, with or without its backward; the entities of one text share its forward, and
    each counts one row, for its backward) and ``work`` (those rows weighted by their
    tokens)."""

    rows: int
    work: int


class RequestCost:
    """Counts the model rows a request runs (:class:`Cost`), before it runs and again once its
    rows are planned.

    A row costs the method's cost for its tokens (:func:`~layersal.saliency.method_cost`)
    per window it is explained in: a text longer than the model's maximum is cut into
    windows (:func:`~layersal.windows.window_rows`), a pair of texts is one row, truncated,
    and an entity is explained in one window. Where the task plans its rows with the model
    (:func:`~layersal.rows.planning_rows`: a token classifier finds each text's entities, a
    zero-shot classifier scores each label's pair, a multi-label model finds the labels it
    predicts) those forward rows count too. Before the request runs (:meth:`__call__`), an
    item counts the rows known then (:func:`~layersal.rows.known_rows`: a named span, each
    zero-shot label asked for; a token classifier's predicted entities are not known yet);
    once the rows are planned (:meth:`planned`), every planned row counts.

    It tokenizes with its own copy of the model's tokenizer: a fast (Rust) tokenizer keeps its
    truncation and padding settings in the object, so counting with the one the model's
    worker encodes with, from another thread, can switch them off under the worker (its
    batch then comes back unpadded and fails). The copy is used by one thread at a time.
    """

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.tokenizer = copy.deepcopy(lm.tokenizer)
        self._lock = threading.Lock()

    def __call__(
        self, method: str, options: dict[str, Any], texts: list[Any], target: Any = None
    ) -> Cost:
        """The rows known before the request runs (no row plan yet)."""
        task = self.lm.task
        rows = work = 0
        with self._lock:
            for item in texts:
                windows, tokens, explained_tokens = self._read(item)
                plan = planning_rows(task, target, windows, len(self.lm.labels))
                one = method_cost(method, options, explained_tokens)
                known = known_rows(task, target) * one
                known *= 1 if task.focused or task.hypotheses else windows
                rows += plan + known
                work += plan * tokens + known * explained_tokens
        return Cost(rows=rows, work=work)

    def planned(
        self,
        method: str,
        options: dict[str, Any],
        texts: list[Any],
        target: Any,
        plan: list[list[PlannedRow]],
    ) -> Cost:
        """The rows a request runs once its rows are planned (``plan``: each text's rows, as
        :func:`~layersal.rows.row_plan` gives them)."""
        task = self.lm.task
        rows = work = 0
        with self._lock:
            for item, own in zip(texts, plan):
                windows, tokens, _ = self._read(item)
                planning = planning_rows(task, target, windows, len(self.lm.labels))
                rows += planning
                work += planning * tokens
                for row in own:
                    row_windows, row_tokens, _ = self._read(unfocused(row.item))
                    n = method_cost(method, options, row_tokens)
                    n *= explained_windows(row.item, row_windows)
                    rows += n
                    work += n * row_tokens
        return Cost(rows=rows, work=work)

    def _read(self, item: Any) -> tuple[int, int, int]:
        """``(windows, tokens, explained)``: the rows an item takes, the tokens of each, and
        the tokens of a row explained for it (a zero-shot classifier's text: its labels'
        pairs, the longest; a pair already: itself)."""
        windows, tokens = self._tokens(item)
        task = self.lm.task
        if not task.hypotheses or isinstance(item, tuple):
            return windows, tokens, tokens
        zero_shot = cast("ZeroShot", task)
        pairs = [self._tokens((item, zero_shot.hypothesis(label)))[1] for label in self.lm.labels]
        longest = max(pairs, default=tokens)
        return 1, longest, longest

    def _tokens(self, item: Any) -> tuple[int, int]:
        tokenizer = self.tokenizer
        if isinstance(item, tuple):
            pair = tokenizer(*item, verbose=False, split_special_tokens=True)["input_ids"]
            return 1, min(len(pair), self.lm.max_length)
        size, step, _ = window_overlap(tokenizer, self.lm.max_length, None, None)
        return window_rows(tokenizer, item, size, step)


def _local_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the files the ``fastapi-offline`` package ships, so that the
    API page works on a machine without internet access."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    files = importlib.resources.files("fastapi_offline").joinpath("static")
    app.mount("/docs-static", StaticFiles(directory=str(files)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="layersal API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon.png",
        )


class _Jobs:
    """The server's settled jobs (:class:`~layersal.job.Explainer`), one per method, options
    and word aggregation, the least recently used dropped past :data:`MAX_JOBS`."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.held: OrderedDict[str, Explainer] = OrderedDict()

    def get(self, method: str, options: dict[str, Any], words: str, texts: list[Any]) -> Explainer:
        """The job for these settings, settled on ``texts`` when it is new."""
        key = json.dumps([method, options, words], sort_keys=True, default=str)
        if key in self.held:
            self.held.move_to_end(key)
            return self.held[key]
        job = Explainer(self.model, method, options, word_aggregation=words, batch_size=16)
        task = self.model.task
        if not (task.focused or task.hypotheses):
            job.settle(lambda: texts)
        # else the rows the model reads are not the texts (an entity's focused text, a label's
        # pair): the job settles on the first request's rows as it explains them
        self.held[key] = job
        while len(self.held) > MAX_JOBS:
            self.held.popitem(last=False)
        return job


MAX_JOBS = 32


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def method_infos(num_layers: int) -> list[MethodInfo]:
    """Every registered method, and which ``layer`` values it takes."""
    infos = []
    for name in methods():
        try:
            check_method(name, {"layer": 0})
            takes_layer = True
        except InputError:
            takes_layer = False
        choices: list[int | str] = list(range(num_layers + 1)) if takes_layer else []
        choices = [*named_values(name, "layer"), *choices]
        options = [
            OptionInfo(name=o.name, type=o.type, default=_json_default(o.default))
            for o in method_schema(name)
        ]
        infos.append(
            MethodInfo(name=name, takes_layer=takes_layer, layer_choices=choices, options=options)
        )
    return infos


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def explanation_bytes(lm: LoadedModel, max_chars: int) -> int:
    """Bytes of JSON an explanation of a text of ``max_chars`` may take as the report's input:
    its text, and per character room for the tokens, words and every layer's scores and
    decoded top tokens (a 5,000-character English text on a 2-layer model: 0.64 MB)."""
    return _BODY_SLACK + max_chars * (_BYTES_PER_CHAR + 48 * (lm.num_layers + 2))


def _static(name: str) -> str:
    return (
        importlib.resources.files(__package__).joinpath(_STATIC).joinpath(name).read_text("utf-8")
    )


@dataclass
class _Server:
    """What the routes of one app share: the model, the runner of its passes, its settled jobs,
    the row counter (its own tokenizer: never the one the worker encodes with), the limits and
    the report's renderer."""

    model: LoadedModel
    runner: Runner
    jobs: _Jobs  # used by the one worker thread only
    cost_of: RequestCost
    max_batch: int
    max_chars: int
    max_rows: int
    timeout_s: float
    render: Callable[[list[Explanation]], str]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": why}
    for code, why in {
        413: "A text longer than max_chars, or more texts than max_batch.",
        422: "Input layersal cannot explain (empty text, unknown method, layer out of range...).",
        503: "The requests queued ahead would keep this one past the time budget (refused "
        "at once, with Retry-After), or the model stayed busy for the whole budget.",
        504: "The explanation ran past the time budget and was stopped.",
    }.items()
}


def create_app(
    model: LoadedModel,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_batch: int = DEFAULT_MAX_BATCH,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    allowed_hosts: Sequence[str] | None = None,
    render: Callable[[list[Explanation]], str] = render_html,
) -> FastAPI:
    """The web app for one loaded model.

    ``max_chars``: longest text (characters); ``max_batch``: most texts per request;
    ``timeout_s``: time budget of one explanation request, waiting for the model included.
    ``max_rows``: the most model rows one request may cost (:class:`RequestCost`), refused
    before it runs. ``body_timeout_s``: a client whose request body stalls that long is
    answered 408. The downloadable report (``POST /api/report.html``) takes the same limits:
    at most ``max_batch`` explanations, each of a text of at most ``max_chars``.
    Request bodies are bounded in bytes by the same limits (413 before they are read).
    ``allowed_hosts``: accepted ``Host`` headers (``layersal serve`` sets the loopback names
    when bound to loopback, against DNS rebinding); ``None`` accepts any. ``render`` turns
    explanations into the downloadable HTML page.
    """
    if max_chars < 1 or max_batch < 1 or max_rows < 1 or timeout_s <= 0:
        raise InputError(
            "max_chars, max_batch and max_rows must be at least 1 and timeout_s positive"
        )
    runner = Runner(model, float(timeout_s), max_texts=max_batch, max_chars=max(max_chars, 20_000))
    explain_bytes = _BODY_SLACK + max_batch * max_chars * _BYTES_PER_CHAR
    report_bytes = max_batch * explanation_bytes(model, max_chars)
    renders = asyncio.Semaphore(2)  # reports rendered at once (each may hold its body twice)
    limits = Limits(
        max_chars=max_chars, max_batch=max_batch, timeout_s=float(timeout_s), max_rows=max_rows
    )
    info = InfoResponse(
        model=model.name,
        labels=list(model.labels),
        num_layers=model.num_layers,
        decoder=model.decoder,
        max_length=model.max_length,
        pairs=model.pairs,
        task=model.task.name,
        methods=method_infos(model.num_layers),
        default_method="dls",
        limits=limits,
        version=__version__,
    )
    page = _static("index.html")
    assets = {name: _static(name) for name in _STATIC_FILES}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        runner.close()

    app = FastAPI(
        title="layersal",
        version=__version__,
        description=(
            "Which words did a transformer text classifier rely on? Explanations of "
            f"`{model.name}` by Decoded Layer Saliency and baseline methods. Errors come back "
            'as `{"error": message}`: 413 for a text or batch over the limits, 422 for input '
            "layersal cannot explain, 503/504 when the time budget runs out."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: the default page loads a CDN
        redoc_url=None,
    )
    app.router.route_class = StrictJSONRoute
    _local_docs(app)
    app.state.layersal = runner
    app.state.limits = limits
    app.add_middleware(BodyTimeout, seconds=body_timeout_s)
    app.add_middleware(
        BodyLimit, limits={"/api/explain": explain_bytes, "/api/report.html": report_bytes}
    )
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    _add_error_handlers(app)
    server = _Server(model, runner, _Jobs(model), RequestCost(model), max_batch, max_chars,
                     max_rows, float(timeout_s), render)  # fmt: skip

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": _CSP})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:
            return _error(404, f"no static file {name!r}")
        return Response(assets[name], media_type=_STATIC_FILES[name])

    @app.get(
        "/api/info", response_model=InfoResponse, summary="Model, labels, layers, methods, limits"
    )
    async def api_info() -> InfoResponse:
        return info

    @app.post(
        "/api/explain",
        response_model=ExplainResponse,
        responses=ERRORS,
        summary="Explain one text or a batch",
    )
    async def api_explain(request: ExplainRequest) -> Any:
        """Run ``layersal.explain`` on ``text`` or ``texts``; the results are
        ``Explanation.to_dict()``s (tokens, words, per-layer report...)."""
        return await _explain(server, request)

    report_schema = ReportRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    report_schema.pop("$defs", None)  # ExplanationOut and its parts: already components

    @app.post(
        "/api/report.html",
        response_class=HTMLResponse,
        responses={
            200: {"content": {"text/html": {}}, "description": "A standalone HTML page."},
            413: ERRORS[413],
            422: ERRORS[422],
        },
        summary="Render explanations as a downloadable HTML page",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": report_schema}},
            }
        },
    )
    async def api_report(request: Request) -> Response:
        """Takes what POST /api/explain returned (``{"explanations": [...]}``, at most
        ``max_batch`` of texts of at most ``max_chars``) and renders it (everything escaped).
        Read, checked and rendered in a thread, so that other requests never wait on it."""
        body = await request.body()
        async with renders:
            return await run_in_threadpool(_report_page, server, body)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as ``{"error": message}`` with its status."""

    @app.exception_handler(LayersalError)
    async def layersal_error(request: Request, exc: LayersalError) -> JSONResponse:
        return _error(getattr(exc, "status", 422), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            where = f"the body is not JSON at character {first.get('loc', ('', '?'))[-1]}"
            why = (first.get("ctx") or {}).get("error", "")
            return _error(422, f"invalid request: {where}" + (f": {why}" if why else ""), detail=[])
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        what = first.get("msg", "invalid request")
        message = f"{where}: {what}" if where else what
        return _error(422, f"invalid request: {message}", detail=jsonable(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("explanation failed")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def _queue_full(full: QueueFull, timeout_s: float) -> JSONResponse:
    return _error(
        503,
        f"the requests queued ahead would take about {full.wait_s:.0f} s, past this "
        f"server's time budget ({timeout_s:g} s) with this one; try again in "
        f"{full.retry_after_s} s",
        headers={"Retry-After": str(full.retry_after_s)},
    )


async def _explain(server: _Server, request: ExplainRequest) -> Any:
    """One ``POST /api/explain``: checked, bounded, refused at once past the queue's budget,
    then explained by the server's settled job for its method and options."""
    if (request.text is None) == (request.texts is None):
        return _error(422, "give exactly one of 'text' (a string) and 'texts' (a list)")
    texts = [request.text] if request.text is not None else list(request.texts or [])
    seconds = [request.text_pair] if request.text_pair is not None else request.text_pairs
    if (request.text_pair is not None and request.text is None) or (
        request.text_pairs is not None and request.texts is None
    ):
        return _error(422, "'text_pair' goes with 'text', 'text_pairs' with 'texts'")
    if seconds is not None and len(seconds) != len(texts):
        return _error(422, f"{len(texts)} texts but {len(seconds)} text_pairs: give one per text")
    items: list[Any] = list(texts) if seconds is None else list(zip(texts, seconds))
    if len(items) > server.max_batch:
        return _error(
            413, f"{len(items)} texts in one request; this server takes at most {server.max_batch}"
        )
    for i, item in enumerate(items):
        text = "".join(item) if isinstance(item, tuple) else item
        if len(text) > server.max_chars:
            return _error(
                413,
                f"text {i} is {len(text)} characters long; this server takes at most "
                f"{server.max_chars}",
            )
    items = check_texts(items)
    server.model.check_items(items)
    options = dict(request.options)
    layer = int_or_text(request.layer)  # the shorthand of the method option, never both
    options = merge_options(options, {} if layer is None else {"layer": layer})
    method, budget_record = request.method, None
    if request.budget is not None:
        budget_alone(request.budget, method != "dls" or bool(options))
        choice = choose_for(server.model, request.budget)
        method, options = choice.method, dict(choice.options)
        budget_record = choice.record(request.budget)
    check_method(method, options)
    # the page shows every layer: ask methods that can report layers for the report
    shown = {"layer_report": True} if "layer_report" in method_options(method) else {}
    try:  # with the queue past the budget already, refused before counting anything
        server.runner.check()
    except QueueFull as full:
        return _queue_full(full, server.timeout_s)
    target = int_or_text(request.target)
    # counted in a thread of its own: tokenizing 32 long texts would hold the event loop
    cost = await run_in_threadpool(server.cost_of, method, options, items, target)
    if cost.rows > server.max_rows:
        return _error(422, _too_costly(server, method, cost, len(items)))

    wanted = {**shown, **options}
    settled_key = (method, json.dumps(wanted, sort_keys=True, default=str))

    def job(texts: list[Any]) -> list[list[dict[str, Any]]]:
        try:
            # one settled job per method, options and word aggregation for the server's
            # life (DLS's layer="auto": settled on the first request's texts), so a result
            # never depends on what it was batched with
            explainer = server.jobs.get(method, wanted, request.word_aggregation, texts)
            checked = check_texts(texts)

            def within_rows(plan: list[list[PlannedRow]]) -> None:
                # the rows as planned (a text's entities found): refused before they run; a
                # batch of several requests refused here is rerun request by request
                planned = server.cost_of.planned(method, options, checked, target, plan)
                if planned.rows > server.max_rows:
                    raise InputError(_too_costly(server, method, planned, len(checked)))

            grouped = explainer.explain_grouped(
                checked, target=target, batch_size=min(len(texts), 16), check=within_rows
            )
        except (TypeError, ValueError) as exc:
            if not options:
                raise
            # option values of the wrong type end deep in the method: say which request part
            raise InputError(
                f"method {method!r} cannot use these options "
                f"({', '.join(f'{k}={v!r}' for k, v in options.items())}): {exc}"
            ) from None
        dicts = [[e.to_dict() for e in group] for group in grouped]  # a list per text
        if budget_record is not None:
            for group_dicts in dicts:
                for one in group_dicts:
                    one["options"]["budget"] = dict(budget_record)
        return dicts

    # requests that may share one model call: the same method, options and target
    key = (*settled_key, repr(target), request.word_aggregation, is_pair(items[0]))
    began = time.monotonic()
    try:
        explanations = await server.runner.run(key, items, job, cost.work, method)
    except QueueFull as full:
        return _queue_full(full, server.timeout_s)
    except ServerBusy:
        return _error(
            503,
            "the model stayed busy with other requests for the whole time budget "
            f"({server.timeout_s:g} s); try again",
            headers={"Retry-After": str(max(1, math.ceil(server.runner.expected_wait())))},
        )
    except ExplanationTimeout:
        return _error(
            504,
            f"the explanation took longer than this server's time budget ({server.timeout_s:g} s) "
            "and was stopped",
        )
    flat = [e for per_text in explanations for e in per_text]  # a multi-label text: several
    return {"explanations": flat, "elapsed_s": round(time.monotonic() - began, 4)}


def _too_costly(server: _Server, method: str, cost: Cost, texts: int) -> str:
    return (
        f"this request would cost {cost.rows} model rows ({method} with these options on "
        f"{texts} text(s)); this server takes at most {server.max_rows} per request: send "
        "fewer or shorter texts, or fewer steps/samples"
    )


def _report_page(server: _Server, body: bytes) -> Response:
    """The HTML page of a report request's body, or the error; runs in a thread."""
    try:
        data = strict_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(422, f"invalid request: the body is not JSON: {exc}")
    found = data.get("explanations") if isinstance(data, dict) else None
    if isinstance(found, list):  # the limits first: cheap, before any validation
        if len(found) > server.max_batch:
            return _error(
                413,
                f"{len(found)} explanations in one request; this server takes at most "
                f"{server.max_batch}",
            )
        for i, item in enumerate(found):
            texts = (item.get("text"), item.get("text_pair")) if isinstance(item, dict) else ()
            chars = sum(len(t) for t in texts if isinstance(t, str))
            if chars > server.max_chars:
                return _error(
                    413,
                    f"explanation {i} has a text of {chars} characters; this server takes "
                    f"at most {server.max_chars}",
                )
    try:
        parsed = ReportRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"invalid request: {where}: {first.get('msg', '')}")
    explanations = [from_model(e) for e in parsed.explanations]
    return HTMLResponse(
        server.render(explanations),
        headers={
            "Content-Disposition": 'attachment; filename="layersal-explanation.html"',
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


def jsonable(value: Any) -> Any:
    """Pydantic error lists hold exceptions in ``ctx``: keep only JSON-ready parts."""
    from fastapi.encoders import jsonable_encoder

    try:
        return _finite(jsonable_encoder(value))
    except Exception:  # pragma: no cover - defensive
        return str(value)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as its name (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_TIMEOUT_S",
    "ExplainRequest",
    "ExplainResponse",
    "ExplanationTimeout",
    "InfoResponse",
    "ServerBusy",
    "create_app",
    "is_loopback",
    "loopback_hosts",
    "method_infos",
]
