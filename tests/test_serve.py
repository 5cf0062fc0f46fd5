"""The local web app: JSON API (TestClient), limits and errors, and the page in a real browser.

The browser test starts uvicorn on a free loopback port and drives headless Chromium through
Selenium; it skips with the reason where Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi", reason="the web app needs fastapi")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient
from typer.testing import CliRunner

import layersal
from layersal.cli import app as cli_app
from layersal.explanation import Explanation, LayerReport, Token, Word
from layersal.serve import app as serve_app
from layersal.serve import create_app, is_loopback, loopback_hosts, schemas
from layersal.serve.app import DEFAULT_MAX_ROWS

TEXT = "a gripping, beautifully acted film"
XSS = (
    '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script> a '
    'dull & "boring" film'
)
# model-side text is user data too: a hostile model name and class label
XSS_NAME = '<img src=x onerror="window.__xss=3;alert(3)">model'
XSS_LABEL = '<b onmouseover="window.__xss=4">neg</b><img src=x onerror="window.__xss=5;alert(5)">'
STATIC = Path(serve_app.__file__).parent / "static"


@pytest.fixture(scope="module")
def client(sst2_tiny) -> TestClient:
    return TestClient(create_app(sst2_tiny, max_chars=200, max_batch=3, timeout_s=30))


def _explain(client: TestClient, **body):
    return client.post("/api/explain", json=body)


# ------------------------------------------------------------------------------- the API


def test_explain_one_text(client, sst2_tiny):
    response = _explain(client, text=TEXT)
    assert response.status_code == 200, response.text
    (data,) = response.json()["explanations"]
    assert data["prediction"] == "positive" and data["method"] == "dls"
    assert [w["text"] for w in data["words"]] == [
        "a",
        "gripping",
        ",",
        "beautifully",
        "acted",
        "film",
    ]
    assert [r["layer"] for r in data["layers"]] == list(range(sst2_tiny.num_layers + 1))
    assert data["layers"][0]["top_tokens"] and data["layers"][0]["coherence"] is not None
    # the response is Explanation.to_dict(): it round-trips, and matches the library's result
    again = Explanation.from_dict(data)
    direct = layersal.explain(TEXT, sst2_tiny)
    assert again.prediction == direct.prediction and again.layer == direct.layer
    assert again.scores == pytest.approx(direct.scores, abs=1e-5)


def test_batch_method_layer_and_target(client):
    response = _explain(
        client, texts=["a fine film", "a dull film"], method="gradcam", layer="1", target="negative"
    )
    assert response.status_code == 200, response.text
    results = response.json()["explanations"]
    assert [r["text"] for r in results] == ["a fine film", "a dull film"]
    assert all(
        r["method"] == "gradcam" and r["layer"] == 1 and r["target"] == "negative" for r in results
    )
    auto = _explain(client, text="a fine film", method="gradient").json()["explanations"][0]
    assert auto["layer"] is None and auto["layers"] == []


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"text": "x" * 201}, 413, "201 characters long; this server takes at most 200"),
        ({"texts": ["ok", "x" * 300]}, 413, "text 1 is 300 characters"),
        (
            {"texts": ["a", "b", "c", "d"]},
            413,
            "4 texts in one request; this server takes at most 3",
        ),
        ({"text": ""}, 422, "text 0 is empty"),
        ({"texts": ["fine", "   "]}, 422, "text 1 is only whitespace"),
        ({}, 422, "give exactly one of 'text'"),
        ({"text": "a", "texts": ["b"]}, 422, "give exactly one of 'text'"),
        ({"text": 5}, 422, "invalid request: text"),
        ({"text": "ok", "bogus": 1}, 422, "invalid request: bogus"),
        ({"text": "ok", "layer": 99}, 422, "layer 99 is out of range: this model has layers 0..2"),
        (
            {"text": "ok", "layer": "deepest"},
            422,
            "layer must be an integer, 'auto', 'input' or 'coherent'",
        ),
        (
            {"text": "ok", "method": "gradient", "layer": 1},
            422,
            "method 'gradient' has no option 'layer'",
        ),
        ({"text": "ok", "method": "nope"}, 422, "unknown method 'nope'"),
        ({"text": "ok", "target": "maybe"}, 422, "unknown target 'maybe'"),
        (
            {"text": "ok", "options": {"tau": "many"}},
            422,
            "option 'tau' takes int | None, not 'many'",
        ),
        (
            {"text": "ok", "options": {"batch_size": 2}},
            422,
            "method 'dls' has no option 'batch_size'",
        ),
        (
            {"text": "ok", "method": "occlusion", "options": {"window": 5}},
            422,
            "now called 'span': write span=5",
        ),
        ({"text": "ok", "method": "occlusion", "options": {"span": 0}}, 422, "span must be"),
        ({"text": "ok", "word_aggregation": "median"}, 422, "word aggregation must be one of"),
    ],
)
def test_limits_and_mistakes_are_json_errors(client, body, status, fragment):
    response = client.post("/api/explain", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_a_slow_explanation_ends_within_its_time_budget_and_frees_the_model(sst2_tiny):
    # first-use imports (Captum) run no forward pass, so nothing could stop them: warm up
    layersal.explain("ok", sst2_tiny, method="shapley_sampling", options={"n_permutations": 1})
    slow = TestClient(create_app(sst2_tiny, timeout_s=0.3))
    began = time.monotonic()
    response = _explain(
        slow, text="a long and winding film about nothing much " * 8, method="shapley_sampling"
    )
    assert time.monotonic() - began < 5
    assert response.status_code == 504 and "time budget (0.3 s)" in response.json()["error"]
    # the timed-out run is stopped at its next forward pass: the model is free again
    ok = _explain(slow, text="a fine film")
    assert ok.status_code == 200, ok.text


def test_a_too_costly_request_is_refused_before_it_runs(sst2_tiny):
    app = TestClient(create_app(sst2_tiny, max_rows=1000))
    began = time.monotonic()
    response = _explain(
        app, text="a fine film", method="integrated_gradients", options={"n_steps": 10000}
    )
    assert time.monotonic() - began < 5
    assert response.status_code == 422
    assert (
        "10001 model rows" in response.json()["error"]
        and "at most 1000" in response.json()["error"]
    )
    occlusion = _explain(app, texts=["word " * 400] * 3, method="occlusion")
    assert occlusion.status_code == 422 and "model rows" in occlusion.json()["error"]
    assert app.get("/api/info").json()["limits"]["max_rows"] == 1000
    assert _explain(app, text="a fine film", method="integrated_gradients").status_code == 200


def test_many_integration_steps_stop_at_the_budget_too(sst2_tiny):
    """Thousands of steps spend no time before the first pass (no Gauss-Legendre nodes to
    compute), so the budget stops them there and the model is free again."""
    app = TestClient(create_app(sst2_tiny, timeout_s=1.0, max_rows=100_000))
    began = time.monotonic()
    response = _explain(
        app, text="a fine film " * 30, method="integrated_gradients", options={"n_steps": 20000}
    )
    assert response.status_code == 504 and time.monotonic() - began < 10
    assert _explain(app, text="a fine film").status_code == 200


def test_a_busy_model_gives_503_within_the_budget(sst2_tiny):
    app = create_app(sst2_tiny, timeout_s=0.3)
    busy = TestClient(app)
    runner = app.state.layersal
    assert runner.lock.acquire(timeout=5)  # another explanation holds the model
    try:
        began = time.monotonic()
        response = _explain(busy, text="a fine film")
        assert time.monotonic() - began < 5
    finally:
        runner.lock.release()
    assert response.status_code == 503 and "busy" in response.json()["error"]
    assert _explain(busy, text="a fine film").status_code == 200


def test_a_cancelled_job_stops_only_its_own_passes(sst2_tiny):
    """Two apps on one model (as in these tests): a cancelled job of one, still holding its
    hook on the model, must not stop the other's forward passes."""
    from layersal.serve.runner import Job

    runner = create_app(sst2_tiny, timeout_s=5).state.layersal
    started, go = threading.Event(), threading.Event()

    def waits(texts):
        started.set()
        go.wait(5)
        return [None] * len(texts)

    job = Job("k", ["x"], waits, time.monotonic() + 5)
    worker = threading.Thread(target=runner._run_group, args=([job],))
    worker.start()
    assert started.wait(5)
    job.cancel.set()  # the job is cancelled while its hook is on the model
    try:
        encoded = sst2_tiny.tokenizer(["a fine film"], return_tensors="pt")
        with torch.no_grad():
            sst2_tiny.model(**encoded)  # another thread's pass: not stopped
    finally:
        go.set()
        worker.join(5)
    assert not sst2_tiny.model._forward_pre_hooks, "the job's hook is gone"


def _sent_while_busy(app: Any, bodies: list[dict]) -> list[Any]:
    """Responses to ``bodies``, posted at once while the model is held busy (so they queue up
    and may be batched), in order."""
    http = TestClient(app)
    runner = app.state.layersal
    assert runner.lock.acquire(timeout=5)
    responses: list[Any] = [None] * len(bodies)

    def send(i: int) -> None:
        responses[i] = _explain(http, **bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    try:
        # every request has reached the runner: the ones the worker has not taken yet wait
        # in its queue and go into one model call when the model is free
        all_in = runner.wait_until(lambda: runner.pending() >= len(bodies), timeout=60)
        assert all_in, f"{runner.pending()} of {len(bodies)} requests reached the runner"
    finally:
        runner.lock.release()
    for thread in threads:
        thread.join(60)
    return responses


def test_concurrent_requests_share_model_calls_and_keep_their_own_results(sst2_tiny):
    app = create_app(sst2_tiny, timeout_s=60)
    runner = app.state.layersal
    texts = [f"a {w} film" for w in ("fine", "dull", "warm", "slow", "bold", "flat", "sly", "odd")]
    bodies = [{"text": t} if i != 3 else {"text": t, "target": 7} for i, t in enumerate(texts)]
    responses = _sent_while_busy(app, bodies)
    assert max(runner.batches) > 1, runner.batches  # some requests shared a model call
    assert responses[3].status_code == 422 and "out of range" in responses[3].json()["error"]
    for i, text in enumerate(texts):
        if i == 3:
            continue
        assert responses[i].status_code == 200, responses[i].text
        got = responses[i].json()["explanations"]
        alone = layersal.explain(text, sst2_tiny, layer_report=True)
        assert len(got) == 1 and got[0]["text"] == text
        assert got[0]["prediction"] == alone.prediction
        scores = [t["score"] for t in got[0]["tokens"]]
        assert scores == pytest.approx([t.score for t in alone.tokens], abs=1e-5)


def test_a_failing_request_in_a_batch_does_not_fail_the_others(sst2_tiny):
    from layersal.errors import InputError
    from layersal.serve.runner import Job

    runner = create_app(sst2_tiny, timeout_s=5).state.layersal

    def picky(texts):
        if "bad" in texts:
            raise InputError("bad text")
        return [t.upper() for t in texts]

    jobs = [Job("k", [t], picky, time.monotonic() + 5) for t in ("good", "bad", "fine")]
    runner._run_group(jobs)
    assert jobs[0].future.result() == ["GOOD"] and jobs[2].future.result() == ["FINE"]
    with pytest.raises(InputError, match="bad text"):
        jobs[1].future.result()


def test_info(client, sst2_tiny):
    info = client.get("/api/info").json()
    assert info["model"] == "sst2-tiny" and info["labels"] == ["negative", "positive"]
    assert info["num_layers"] == sst2_tiny.num_layers and info["decoder"] == "mlm_head"
    methods = {m["name"]: m for m in info["methods"]}
    assert set(methods) == set(layersal.methods())
    assert methods["dls"]["layer_choices"] == ["auto", "coherent", "input", 0, 1, 2]
    assert methods["gradcam"]["takes_layer"] and not methods["gradient"]["takes_layer"]
    assert {"name": "span", "type": "int", "default": 3} in methods["occlusion"]["options"]
    assert [o["name"] for o in methods["dls"]["options"]] == [
        f.name for f in dataclasses.fields(layersal.DLSOptions)
    ]
    assert methods["attention"]["options"] == []
    assert info["limits"] == {
        "max_chars": 200,
        "max_batch": 3,
        "timeout_s": 30.0,
        "max_rows": DEFAULT_MAX_ROWS,
    }


def test_method_options_travel_in_their_own_field(client, sst2_tiny):
    """A method option named like an explain() parameter goes to the method, not the splitter."""
    response = _explain(client, text=TEXT, method="occlusion", options={"span": 5})
    assert response.status_code == 200, response.text
    (data,) = response.json()["explanations"]
    direct = layersal.explain(TEXT, sst2_tiny, method="occlusion", options={"span": 5})
    scores = [t["score"] for t in data["tokens"]]
    assert data["options"] == {"span": 5} and scores == pytest.approx(direct.scores, abs=1e-6)
    assert scores != pytest.approx(layersal.explain(TEXT, sst2_tiny, method="occlusion").scores)


def test_info_of_a_three_class_model(bert_tiny):
    small = TestClient(create_app(bert_tiny))
    assert small.get("/api/info").json()["labels"] == ["neg", "neutral", "pos"]
    response = _explain(small, text="some words here", target="neutral")
    assert response.status_code == 200 and response.json()["explanations"][0]["target"] == "neutral"


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/explain"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ExplainRequest"
    )
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/ExplainResponse")
    assert {"413", "422", "503", "504"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert {
        "ExplainRequest",
        "ExplainResponse",
        "ExplanationOut",
        "LayerReportOut",
        "InfoResponse",
    } <= set(schemas)
    assert set(schemas["ExplainRequest"]["properties"]) >= {
        "text",
        "texts",
        "method",
        "layer",
        "target",
        "options",
    }
    assert "/api/info" in spec["paths"] and "/api/report.html" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_html_download_is_escaped(client):
    data = _explain(client, text=XSS).json()["explanations"][0]
    response = client.post("/api/report.html", json={"explanations": [data]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "attachment" in response.headers["content-disposition"]
    page = response.text
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;" in page and "onerror" in page and "dull" in page


def test_page_and_assets_are_local_and_insert_text_safely(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert client.get("/static/secret.py").status_code == 404
    for file in STATIC.iterdir():
        source = file.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", source), (
            f"{file.name} loads from the network"
        )
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script


def test_host_header_check_and_loopback_names(sst2_tiny):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    guarded = TestClient(
        create_app(sst2_tiny, allowed_hosts=loopback_hosts("127.0.0.1")),
        base_url="http://127.0.0.1:8000",
    )
    assert guarded.get("/api/info").status_code == 200
    assert guarded.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


def test_serve_command(monkeypatch):
    import uvicorn

    runner = CliRunner()
    bad = runner.invoke(cli_app, ["serve", "--model", "./no/such/model"])
    assert bad.exit_code == 2 and "error: model './no/such/model' not found" in bad.output
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    result = runner.invoke(
        cli_app, ["serve", "--host", "0.0.0.0", "--port", "8123", "--timeout", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: listening on 0.0.0.0, not loopback" in result.output
    ((app, kw),) = calls
    assert kw["host"] == "0.0.0.0" and kw["port"] == 8123 and app.state.limits.timeout_s == 5.0
    local = runner.invoke(cli_app, ["serve"])
    assert local.exit_code == 0 and "warning" not in local.output
    assert calls[-1][1]["host"] == "127.0.0.1"


# --------------------------------------------------------- hardening (issue 24, items 6-9)

LONG_TEXT = ("a gripping, beautifully acted film that drags at the end. " * 90)[:5000]


def test_counting_a_request_beside_the_worker_never_breaks_its_batches(sst2_tiny):
    """The server counts a request's rows (tokenizing it) while the worker encodes a batch
    with the model's tokenizer. A fast tokenizer keeps its padding and truncation settings in
    the object: counting with the same one switched them off under the worker, whose batch of
    texts of different lengths then came back unpadded (a ValueError: random 500s)."""
    from layersal.encoding import encode

    http = TestClient(create_app(sst2_tiny, max_rows=1000))
    refused = {  # 32 texts of 5,000 characters to count: the counting is most of the request
        "texts": [LONG_TEXT] * 32,
        "method": "integrated_gradients",
        "options": {"n_steps": 10000},
    }
    texts = ["a gripping, beautifully acted film that drags. " * (1 + i % 5) for i in range(16)]
    done = threading.Event()
    statuses: list[int] = []

    def count_rows() -> None:  # counted, then refused: never reaches the worker
        while not done.is_set():
            statuses.append(_explain(http, **refused).status_code)

    counter = threading.Thread(target=count_rows)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often: the race gets its chances
    counter.start()
    failures = []
    try:
        for _ in range(400):  # the worker's side: what explain() does first
            try:
                encode(sst2_tiny.tokenizer, texts, sst2_tiny.max_length)
            except ValueError as exc:
                failures.append(exc)
    finally:
        sys.setswitchinterval(switch)
        done.set()
        counter.join(60)
    assert not failures, f"{len(failures)} of 400 batches failed: {failures[0]}"
    assert statuses and set(statuses) == {422}, statuses


@pytest.mark.parametrize(
    "raw, constant",
    [
        ('{"text": "good", "target": NaN}', "NaN"),
        ('{"text": "good", "layer": Infinity}', "Infinity"),
        ('{"text": "good", "layer": -Infinity}', "-Infinity"),
        ('{"text": NaN}', "NaN"),
        ('{"text": "good", "options": {"rho": NaN}}', "NaN"),
        ('{"texts": ["good", "fine"], "options": {"n_steps": Infinity}}', "Infinity"),
    ],
)
def test_nan_and_infinity_in_the_body_are_a_422(client, raw, constant, caplog):
    response = client.post(
        "/api/explain", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith("invalid request: the body is not JSON at character ")
    assert f"{constant} is not a JSON number" in error
    assert raw[int(error.split("character ")[1].split(":")[0]) :].startswith(constant)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], "a traceback was logged"


def test_the_report_takes_the_limits_of_explain(client, sst2_tiny):
    """At most max_batch explanations (3 here), each of a text of at most max_chars (200);
    a body over its byte limit is refused before it is read or parsed."""
    one = _explain(client, text="a fine film").json()["explanations"][0]
    report = "/api/report.html"
    assert client.post(report, json={"explanations": [one] * 3}).status_code == 200
    many = client.post(report, json={"explanations": [one] * 4})
    assert many.status_code == 413
    assert many.json()["error"] == "4 explanations in one request; this server takes at most 3"
    long = client.post(report, json={"explanations": [dict(one, text="x" * 201)]})
    assert long.status_code == 413
    assert "explanation 0 has a text of 201 characters" in long.json()["error"]
    pair = client.post(report, json={"explanations": [dict(one, text_pair="y" * 190)]})
    assert pair.status_code == 413 and "201 characters" in pair.json()["error"]  # 11 + 190
    # 10,000 explanations: refused from the Content-Length, before the body is read
    huge = json.dumps({"explanations": [one] * 10_000})
    headers = {"content-type": "application/json"}
    refused = client.post(report, content=huge, headers=headers)
    assert refused.status_code == 413
    assert f"a request body of {len(huge)} bytes is over" in refused.json()["error"]

    # the same body sent in chunks (no Content-Length): refused once it passes the limit
    def chunks() -> Iterator[bytes]:
        data = huge.encode()
        for start in range(0, len(data), 1 << 20):
            yield data[start : start + (1 << 20)]

    streamed = client.post(report, content=chunks(), headers=headers)
    assert streamed.status_code == 413 and "the request body is over" in streamed.json()["error"]
    nan = client.post(report, content='{"explanations": [NaN]}', headers=headers)
    assert nan.status_code == 422 and "NaN is not a JSON number" in nan.json()["error"]
    # /api/explain's body is bounded the same way, from its own limits
    big = client.post("/api/explain", json={"texts": ["x" * 200] * 2000})
    assert big.status_code == 413 and "bytes" in big.json()["error"]


def test_a_request_the_queue_cannot_serve_in_time_is_refused_at_once(sst2_tiny):
    """Admission: with the work queued ahead of it past its budget, a request gets a 503 with
    Retry-After at once, not after waiting out the budget (60 s here)."""
    app = create_app(sst2_tiny, timeout_s=60)
    http = TestClient(app)
    runner = app.state.layersal
    work = serve_app.RequestCost(sst2_tiny)("dls", {"layer_report": True}, ["a fine film"]).work
    runner.seconds_per_work["dls"] = 25.0 / work  # as if measured: 25 s per such request
    assert runner.lock.acquire(timeout=5)  # the model is busy
    answers: dict[str, Any] = {}

    def send(name: str) -> None:
        answers[name] = _explain(http, text="a fine film")

    first = threading.Thread(target=send, args=("first",))
    try:
        first.start()  # nothing ahead of it: taken (25 s expected)
        assert runner.wait_until(lambda: runner.pending() == 1, timeout=30)
        second = threading.Thread(target=send, args=("second",))
        second.start()  # 25 s ahead + its own 25 s: within the 60 s budget, queued
        assert runner.wait_until(lambda: runner.pending() == 2, timeout=30)
        third = threading.Thread(target=send, args=("third",))
        third.start()  # 50 s ahead + 25 s: past the budget
        third.join(30)
        assert not third.is_alive(), "the third request waited for the model"
        refused = answers["third"]
        assert refused.status_code == 503 and runner.pending() == 2
        assert refused.headers["retry-after"] == "15"  # 50 + 25 - 60 s
        assert "queued ahead would take about 50 s" in refused.json()["error"]
    finally:
        runner.lock.release()
    first.join(60)
    second.join(60)
    assert answers["first"].status_code == 200 and answers["second"].status_code == 200
    assert runner.seconds_per_work["dls"] < 25.0 / work  # measured: far less than assumed
    assert _explain(http, text="a fine film").status_code == 200


def test_work_queued_past_the_budget_refuses_even_an_unmeasured_method(sst2_tiny):
    """A request of a method never run yet has no cost estimate of its own, but the work
    ahead of it alone is past its budget: refused at once, before its rows are counted."""
    app = create_app(sst2_tiny, timeout_s=300)
    http = TestClient(app)
    runner = app.state.layersal
    work = serve_app.RequestCost(sst2_tiny)("dls", {"layer_report": True}, ["a fine film"]).work
    # this one request: 3000 s expected, past a 300 s budget. The budget is long because the
    # first request gives up (and leaves nothing ahead) a budget after it queued: on a loaded
    # CI machine the second once reached the queue more than 60 s after the first.
    runner.seconds_per_work["dls"] = 3000.0 / work
    assert runner.lock.acquire(timeout=5)
    answers: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: answers.update(first=_explain(http, text="a fine film"))
    )
    try:
        first.start()  # nothing ahead: taken, though past the budget on its own
        assert runner.wait_until(lambda: runner.pending() == 1, timeout=30)
        refused = _explain(http, text="a dull film", method="gradient")
        # refused at once as queued work (not after waiting out the budget); the retry is
        # 3000 s ahead - 300 s of budget = 2700 s, less the seconds the first has run meanwhile
        assert refused.status_code == 503 and "queued ahead" in refused.json()["error"]
        assert 1 <= int(refused.headers["retry-after"]) <= 2700
        assert "gradient" not in runner.seconds_per_work and runner.pending() == 1
    finally:
        runner.lock.release()
    first.join(60)
    assert answers["first"].status_code == 200


def test_invalid_requests_never_wait_for_the_model(sst2_tiny):
    """Validation, limits, method options and the row count are checked before a request
    queues: all answered while the model is held busy with requests queued."""
    app = create_app(sst2_tiny, timeout_s=300, max_chars=5000, max_rows=1000)
    http = TestClient(app)
    runner = app.state.layersal
    assert runner.lock.acquire(timeout=5)
    queued = [threading.Thread(target=_explain, args=(http,), kwargs={"text": "ok"})]
    try:
        queued[0].start()
        assert runner.wait_until(lambda: runner.pending() == 1, timeout=30)
        for body, status in [
            ('{"text": ', 422),
            ('{"text": "good", "target": NaN}', 422),
            ('{"texts": 5}', 422),
            (json.dumps({"text": "x" * 5001}), 413),
            (json.dumps({"text": "ok", "method": "nope"}), 422),
            (json.dumps({"text": "ok", "layer": "deepest"}), 422),
            (json.dumps({"text": LONG_TEXT, "method": "occlusion"}), 422),  # too many rows
        ]:
            response = http.post(
                "/api/explain", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == status, (body[:40], response.text)
        assert runner.pending() == 1  # none of them queued
    finally:
        runner.lock.release()
    queued[0].join(60)


def test_serve_takes_a_device(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    result = CliRunner().invoke(cli_app, ["serve", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    runner = calls[0].state.layersal
    assert next(runner.lm.model.parameters()).device.type == "cpu"
    bad = CliRunner().invoke(cli_app, ["serve", "--device", "tpu"])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "tpu" in bad.output
    assert "--device" in CliRunner().invoke(cli_app, ["serve", "--help"]).output


# ------------------------------------------------------------------------ in a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1600",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def hostile_model(sst2_tiny) -> layersal.LoadedModel:
    """sst2-tiny (same weights) under a name and a negative label made of markup."""
    return dataclasses.replace(sst2_tiny, name=XSS_NAME, labels=[XSS_LABEL, "positive"])


@contextmanager
def _serving(app: Any, **config: Any) -> Iterator[int]:
    """``app`` under uvicorn on a free loopback port, in a background thread: the port."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(hostile_model):
    """The real app under uvicorn on a free loopback port, in a background thread."""
    app = create_app(hostile_model, allowed_hosts=loopback_hosts("127.0.0.1"))
    with _serving(app) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium, with a fresh profile; skips where it cannot run."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).is_file():
        pytest.skip("chromedriver not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="layersal-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as exc:  # a browser that cannot start here is an environment problem
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium did not start: {type(exc).__name__}: {str(exc)[:200]}")
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _explain_in_page(
    driver,
    url: str,
    text: str,
    method: str | None = None,
    pair: str | None = None,
    layer: str | None = None,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#method option"))
    wait.until(lambda d: d.find_element(By.ID, "explain").is_enabled())
    if method:
        Select(driver.find_element(By.ID, "method")).select_by_value(method)
    if layer is not None:
        Select(driver.find_element(By.ID, "layer")).select_by_value(layer)
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    if pair is not None:
        wait.until(lambda d: d.find_element(By.ID, "text-pair").is_displayed())
        driver.find_element(By.ID, "text-pair").send_keys(pair)
    driver.find_element(By.ID, "explain").click()
    wait.until(
        lambda d: (
            d.find_element(By.ID, "status").text.startswith("done")
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), error.text


def _no_dialog(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_page_explains_a_text_in_a_browser(live_server, browser, sst2_tiny):
    from selenium.webdriver.common.by import By

    text = "a gripping, beautifully acted film, though the ending drags"
    _explain_in_page(browser, live_server, text)
    direct = layersal.explain(text, sst2_tiny, layer_report=True)
    assert direct.prediction == "positive"
    assert browser.find_element(By.ID, "prediction").text == "positive"
    probs = browser.find_element(By.ID, "probs").get_property("textContent")
    assert XSS_LABEL in probs and "positive" in probs
    heat = browser.find_element(By.ID, "heatmap")
    assert heat.get_property("textContent") == text
    shaded = [w.text for w in heat.find_elements(By.CSS_SELECTOR, "span.word")]
    for word in re.findall(r"\w+", text):
        assert word in shaded
    bars = browser.find_elements(By.CSS_SELECTOR, "#coherence-chart rect.coh-bar")
    assert [int(b.get_attribute("data-layer")) for b in bars] == list(
        range(sst2_tiny.num_layers + 1)
    )
    chosen = browser.find_elements(By.CSS_SELECTOR, "#coherence-chart rect.coh-bar.chosen")
    assert [int(b.get_attribute("data-layer")) for b in chosen] == (
        [] if direct.layer is None else [direct.layer]
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#top-tokens-table tr")
    assert len(rows) == 1 + len(sst2_tiny.tokenizer.tokenize(text))
    assert "layer 0" in rows[0].text and "gripping" in rows[2].text
    # where the scores come from, said also when no bar can be outlined (the input embeddings)
    used = browser.find_element(By.ID, "layer-used").text
    where = "input embeddings" if direct.layer is None else f"layer {direct.layer}"
    assert where in used, used
    # auto's choice in one plain sentence, its measurements behind a disclosure
    auto = direct.options["auto"]
    note = browser.find_element(By.ID, "auto-note")
    assert note.is_displayed() and note.text.startswith("Chosen automatically: ")
    assert ("the input embeddings" if auto["layer"] is None else f"layer {auto['layer']}") in (
        note.text
    )
    assert note.text.count(". ") == 0 and note.text.endswith(".")  # one sentence
    for jargon in ("AOPC", "finalist", "comprehensiveness", "out after", "/plain"):
        assert jargon not in note.text and jargon not in browser.find_element(By.ID, "meta").text
    details = browser.find_element(By.ID, "auto-details")
    assert details.tag_name == "details" and not details.get_property("open")
    assert (
        browser.find_element(By.ID, "auto-reason").get_property("textContent") == (auto["reason"])
    )
    details.find_element(By.TAG_NAME, "summary").click()
    assert browser.find_element(By.ID, "auto-reason").is_displayed()
    # a layer chosen by hand: its bar is outlined and named; no auto sentence
    _explain_in_page(browser, live_server, text, method="dls", layer="1")
    chosen = browser.find_elements(By.CSS_SELECTOR, "#coherence-chart rect.coh-bar.chosen")
    assert [int(b.get_attribute("data-layer")) for b in chosen] == [1]
    assert "layer 1" in browser.find_element(By.ID, "layer-used").text
    assert not browser.find_element(By.ID, "auto-note").is_displayed()
    # an input-level method: no layer to choose, no per-layer report
    _explain_in_page(browser, live_server, "a dull film", method="gradient")
    assert not browser.find_element(By.ID, "layer").is_enabled()
    assert browser.find_element(By.ID, "no-layers").is_displayed()
    assert not browser.find_element(By.ID, "layer-section").is_displayed()


def test_page_shows_markup_as_text_and_runs_none_of_it(live_server, browser):
    from selenium.webdriver.common.by import By

    _explain_in_page(browser, live_server, XSS)  # predicted: the negative class, XSS_LABEL
    # no element was made from the text (checked below), so no handler of it can ever fire;
    # and none fired while the page rendered
    assert _no_dialog(browser), "an alert fired: text was inserted as markup"
    assert browser.execute_script("return window.__xss") is None
    # the user's text, the model's name and its label all show literally...
    heat = browser.find_element(By.ID, "heatmap")
    assert heat.get_property("textContent") == XSS
    assert "<img" in heat.text and "onerror" in heat.text
    assert browser.find_element(By.ID, "prediction").get_property("textContent") == XSS_LABEL
    assert XSS_NAME in browser.find_element(By.ID, "model-info").get_property("textContent")
    options = [
        o.get_property("textContent")
        for o in browser.find_elements(By.CSS_SELECTOR, "#target option")
    ]
    assert XSS_LABEL in options
    # ...and none of it became elements
    assert not browser.find_elements(By.CSS_SELECTOR, "img, b, script:not([src])")


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (schemas.ExplanationOut, Explanation),
        (schemas.TokenOut, Token),
        (schemas.WordOut, Word),
        (schemas.LayerReportOut, LayerReport),
    ],
)
def test_web_schema_matches_the_explanation_dataclasses(model, data):
    """The API's response models are generated from the result dataclasses: the same fields in
    the same order, the same defaults."""
    fields = {f.name: f for f in dataclasses.fields(data)}
    assert list(model.model_fields) == list(fields), "the same fields in the same order"
    for name, field in fields.items():
        has_default = field.default is not dataclasses.MISSING or (
            field.default_factory is not dataclasses.MISSING
        )
        assert (not model.model_fields[name].is_required()) == has_default, name


def test_api_docs_need_no_network(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs-static/") for a in assets), assets
    assert "http://" not in page.text and "https://" not in page.text
    assert all(client.get(a).status_code == 200 for a in assets)


def test_api_docs_render_in_a_browser_offline(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "docs")
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/explain" in {p.replace("\u200b", "") for p in paths}
    assert browser.execute_script("return window.__xss") is None, "the model name ran as markup"


def test_a_stalled_request_body_is_answered_408(sst2_tiny):
    """A raw client sends headers promising a body, half of it, then nothing."""
    import httpx

    with _serving(create_app(sst2_tiny, body_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"text": "a fi'
            )
            began = time.monotonic()
            chunks = []
            while chunk := raw.recv(4096):  # the server closes the connection after the 408
                chunks.append(chunk)
            reply = b"".join(chunks).decode()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert "stalled" in reply and time.monotonic() - began < 5
        ok = httpx.post(f"http://127.0.0.1:{port}/api/explain", json={"text": "a fine film"})
        assert ok.status_code == 200


def test_a_stalled_request_head_is_closed(sst2_tiny):
    """Headers that never end (or trickle in) do not hold a connection open."""
    import httpx

    from layersal.serve.stalls import header_timeout_protocol

    with _serving(create_app(sst2_tiny), http=header_timeout_protocol(0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            began = time.monotonic()
            raw.sendall(b"X-Slow: 1\r\n")  # trickling does not extend the deadline
            assert raw.recv(100) == b""  # closed by the server
            assert time.monotonic() - began < 5
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(2):  # keep-alive requests on one connection still work
                assert http.post("/api/explain", json={"text": "a fine film"}).status_code == 200


def test_auto_is_settled_once_so_batching_never_changes_a_result(bert_tiny, monkeypatch, tmp_path):
    """A model without a card calibrates layer="auto" once, on the first request's texts;
    later requests, batched or not, use that choice."""
    from layersal.saliency import layer_choice

    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    calls = []
    real = layer_choice.calibrate
    monkeypatch.setattr(layer_choice, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    app = create_app(bert_tiny, timeout_s=60)
    http = TestClient(app)
    alone = _explain(http, text="a fine film").json()["explanations"][0]
    runner = app.state.layersal
    texts = ["a fine film", "dull", "warm", "slow and long", "odd"]
    answers = _sent_while_busy(app, [{"text": t} for t in texts])
    assert max(runner.batches) > 1 and len(calls) == 1
    batched = answers[0].json()["explanations"][0]
    assert batched["layer"] == alone["layer"] and batched["options"] == alone["options"]
    assert [t["score"] for t in batched["tokens"]] == pytest.approx(
        [t["score"] for t in alone["tokens"]], abs=1e-5
    )


def test_the_body_timeout_ends_with_the_body():
    """After the whole body came in, waiting on ``receive`` (a file response listening for a
    disconnect while a slow client downloads) is not a stall."""
    import asyncio

    from layersal.serve.stalls import BodyTimeout

    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(0.5)  # the client is still downloading
        return {"type": "http.disconnect"}

    async def app(scope, receive, send):
        await receive()  # the body
        await receive()  # then: wait for a disconnect
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    asyncio.run(BodyTimeout(app, 0.1)({"type": "http"}, receive, send))
    assert sent[0]["status"] == 200


def test_page_explains_a_pair_of_texts_for_a_pair_model(browser, sst2_tiny, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # the single-text page has no second box
    browser.get(live_server)
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "explain").is_enabled())
    assert not browser.find_element(By.ID, "text-pair").is_displayed()
    pair_model = dataclasses.replace(sst2_tiny, pairs=True)
    app = create_app(pair_model, allowed_hosts=loopback_hosts("127.0.0.1"))
    first, second = "a man plays a guitar", "someone <b>makes</b> music"
    with _serving(app) as port:
        _explain_in_page(browser, f"http://127.0.0.1:{port}/", first, pair=second)
        heat = browser.find_element(By.ID, "heatmap")
        assert heat.get_property("textContent") == f"{first} ‖ {second}"
        shaded = [w.text for w in heat.find_elements(By.CSS_SELECTOR, "span.word")]
        assert "guitar" in shaded and "makes" in shaded
        assert not heat.find_elements(By.TAG_NAME, "b")  # the markup stays text
    direct = layersal.explain((first, second), pair_model)
    assert browser.find_element(By.ID, "prediction").text == direct.prediction


# --------------------------------------------------------- entities and zero-shot labels

ENTITY_TEXT = "Angela Merkel met Apple in Berlin and Apple again"
# a hostile entity type: the model's tags are user data too
XSS_TYPE = '<img src=x onerror="window.__xss=6;alert(6)">'


@pytest.fixture(scope="module")
def entity_model(tiny_dirs, tmp_path_factory) -> layersal.LoadedModel:
    """A tiny token classifier whose biases tag every token an entity; its ORG type renamed
    to markup."""
    from transformers import AutoConfig

    from .test_entities import token_classifier

    folder = token_classifier(
        tmp_path_factory.mktemp("entities"), bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1]
    )
    config = AutoConfig.from_pretrained(folder)
    config.id2label = {i: t.replace("ORG", XSS_TYPE) for i, t in config.id2label.items()}
    config.label2id = {t: i for i, t in config.id2label.items()}
    config.save_pretrained(folder)
    return layersal.load(folder, lm_head=tiny_dirs["bert"][1])


@pytest.fixture(scope="module")
def zero_shot_model(tiny_dirs, tmp_path_factory) -> layersal.LoadedModel:
    from .conftest import tiny_head

    folder, mlm_dir = tiny_head(
        tiny_dirs, tmp_path_factory.mktemp("nli"), ["entailment", "neutral", "contradiction"]
    )
    return layersal.load(folder, lm_head=mlm_dir, task="zero-shot", labels=["sports", "politics"])


@contextmanager
def _no_entities(lm: layersal.LoadedModel) -> Iterator[None]:
    """While inside, the token classifier tags every token O."""
    bias = lm.model.classifier.bias
    kept = bias.detach().clone()
    with torch.no_grad():
        bias.copy_(torch.tensor([20.0] + [0.0] * (len(kept) - 1)))
    try:
        yield
    finally:
        with torch.no_grad():
            bias.copy_(kept)


def test_the_api_gives_a_token_classifiers_entities(entity_model):
    http = TestClient(create_app(entity_model, timeout_s=60))
    info = http.get("/api/info").json()
    assert info["task"] == "token_classification"
    assert info["labels"] == ["O", "PER", XSS_TYPE, "LOC"]
    # the default method and layer ("auto"), settled on the entities' rows
    answer = _explain(http, text=ENTITY_TEXT)
    assert answer.status_code == 200, answer.text
    found = answer.json()["explanations"]
    direct = layersal.explain(ENTITY_TEXT, entity_model, layer=1)  # the same entities
    spans = [{k: v for k, v in e["entity"].items() if k != "probability"} for e in found]
    assert spans == [{k: v for k, v in e.entity.items() if k != "probability"} for e in direct]
    assert [e["entity"]["probability"] for e in found] == pytest.approx(
        [e.entity["probability"] for e in direct], rel=1e-4
    )
    for e in found:
        span = e["entity"]
        assert e["task"] == "token_classification" and e["target"] == span["label"]
        assert ENTITY_TEXT[span["start"] : span["end"]] == span["word"]
        assert e["focus"] == {"start": span["start"], "end": span["end"], "weight": 1.0}
        assert [w["text"] for w in e["words"]] == ENTITY_TEXT.split()  # the whole text scored
    # a span named as the target: that entity only
    named = _explain(http, text=ENTITY_TEXT, target="27:33=LOC", layer=1).json()["explanations"]
    assert [(e["entity"]["word"], e["target"]) for e in named] == [("Berlin", "LOC")]
    # a text without an entity: none, not an error
    with _no_entities(entity_model):
        none = _explain(http, text=ENTITY_TEXT, layer=1)
    assert none.status_code == 200 and none.json()["explanations"] == []
    # the download: a card per entity
    page = http.post("/api/report.html", json={"explanations": found})
    assert page.status_code == 200
    assert page.text.count('<section class="card">') == len(found)
    assert "<img" not in page.text


def test_the_api_gives_a_zero_shot_label_with_its_hypothesis(zero_shot_model):
    http = TestClient(create_app(zero_shot_model, timeout_s=60))
    info = http.get("/api/info").json()
    assert info["task"] == "zero_shot" and info["labels"] == ["sports", "politics"]
    answer = _explain(http, text="the team won the match", target="politics")
    assert answer.status_code == 200, answer.text
    (e,) = answer.json()["explanations"]
    assert e["task"] == "zero_shot" and e["target"] == "politics"
    assert e["text"] == "the team won the match"
    assert e["text_pair"] == "This example is politics."
    assert set(e["probabilities"]) == {"sports", "politics"}
    assert sum(e["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert e["entity"] is None and e["focus"] is not None


class _ForwardRows:
    """Rows through ``model`` forward while inside (counted by a hook)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.rows = model, 0

    def __enter__(self) -> _ForwardRows:
        def count(module, args, kwargs):
            self.rows += int(kwargs.get("input_ids", args[0] if args else None).shape[0])

        self.handle = self.model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_an_entity_request_counts_the_rows_it_runs(entity_model):
    """Finding the entities is a forward row per text; each entity then costs the method's
    rows. Before the request runs only the finding is known; once the entities are found
    the planned rows are counted, and a request past max_rows is refused before any runs."""
    method, options = "integrated_gradients", {"n_steps": 4}  # 5 rows per entity, no sharing
    cost = serve_app.RequestCost(entity_model)
    assert cost(method, options, [ENTITY_TEXT]).rows == 1  # the finding forward, no entity yet
    assert cost(method, options, [ENTITY_TEXT], "27:33=LOC").rows == 1 + 5
    n = len(layersal.explain(ENTITY_TEXT, entity_model, layer=1))
    assert n >= 3
    http = TestClient(create_app(entity_model, timeout_s=60, max_rows=1 + 5 * n))
    with _ForwardRows(entity_model.model) as ran:
        answer = _explain(http, text=ENTITY_TEXT, method=method, options=options)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["explanations"]) == n
    assert ran.rows == 1 + 5 * n  # what the count said, row for row
    tight = TestClient(create_app(entity_model, timeout_s=60, max_rows=5 * n))
    with _ForwardRows(entity_model.model) as ran:
        refused = _explain(tight, text=ENTITY_TEXT, method=method, options=options)
    assert refused.status_code == 422
    assert f"cost {1 + 5 * n} model rows" in refused.json()["error"]
    assert ran.rows == 1, "refused once the entities were found, before any was explained"
    named = _explain(tight, text=ENTITY_TEXT, method=method, options=options, target="27:33=LOC")
    assert named.status_code == 200, named.text


def test_a_zero_shot_request_counts_every_labels_pair(zero_shot_model):
    """Each label's pair is scored (a forward row each), then each label asked for is
    explained: with the gradient, 2 + 1 rows for the top label, 2 + 2 for both."""
    cost = serve_app.RequestCost(zero_shot_model)
    text = "the team won the match"
    assert cost("gradient", {}, [text]).rows == 2 + 1
    assert cost("gradient", {}, [text, text], ["sports", "politics"]).rows == 2 * (2 + 2)
    assert cost("integrated_gradients", {"n_steps": 4}, [text]).rows == 2 + 5
    http = TestClient(create_app(zero_shot_model, timeout_s=60, max_rows=3))
    with _ForwardRows(zero_shot_model.model) as ran:
        ok = _explain(http, text=text, method="gradient")
    assert ok.status_code == 200, ok.text
    assert ran.rows == 3
    refused = _explain(http, text=text, method="integrated_gradients", options={"n_steps": 4})
    assert refused.status_code == 422 and "cost 7 model rows" in refused.json()["error"]


def test_serve_command_reads_a_zero_shot_classifier(monkeypatch, tiny_dirs, tmp_path):
    """`layersal serve --labels/--label/--template/--multi-label` serves an NLI model as a
    zero-shot classifier, as the other commands read one; without labels it is the NLI model
    itself, and the zero-shot options alone are one error line."""
    import uvicorn

    from .conftest import tiny_head

    folder, mlm = tiny_head(tiny_dirs, tmp_path / "nli", ["entailment", "neutral", "contradiction"])
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    runner = CliRunner()
    base = ["serve", "--model", str(folder), "--lm-head", str(mlm)]
    chosen = [*base, "--labels", "sports,politics", "--label", "arts, music"]
    result = runner.invoke(cli_app, [*chosen, "--template", "It is about {}.", "--multi-label"])
    assert result.exit_code == 0, result.output
    http = TestClient(calls[-1], base_url="http://127.0.0.1")  # served on loopback only
    info = http.get("/api/info").json()
    assert info["task"] == "zero_shot" and info["labels"] == ["sports", "politics", "arts, music"]
    answer = _explain(http, text="the team won the match", target="arts, music", layer=1)
    assert answer.status_code == 200, answer.text
    (e,) = answer.json()["explanations"]
    assert e["text_pair"] == "It is about arts, music." and e["target"] == "arts, music"
    # multi_label: each label's score on its own (they need not add up to 1)
    direct = layersal.load(folder, lm_head=mlm, task="zero-shot", labels=info["labels"],
                           template="It is about {}.", multi_label=True)  # fmt: skip
    expected = layersal.explain("the team won the match", direct, layer=1, target="arts, music")
    assert e["probabilities"] == pytest.approx(expected.probabilities, rel=1e-4)
    assert runner.invoke(cli_app, base).exit_code == 0
    plain = TestClient(calls[-1], base_url="http://127.0.0.1").get("/api/info").json()
    assert plain["task"] == "single_label"
    alone = runner.invoke(cli_app, [*base, "--template", "It is about {}."])
    assert alone.exit_code == 2 and "give its candidate labels with --labels" in alone.output
    assert "Traceback" not in alone.output


def _selected(driver) -> list[int]:
    from selenium.webdriver.common.by import By

    return [
        int(b.get_attribute("data-index"))
        for b in driver.find_elements(By.CSS_SELECTOR, "#picker button[aria-selected=true]")
    ]


def test_page_lists_the_entities_and_explains_the_one_clicked(browser, entity_model):
    from selenium.webdriver.common.by import By

    direct = layersal.explain(ENTITY_TEXT, entity_model, layer=1)
    words = [e.entity["word"] for e in direct]
    app = create_app(entity_model, allowed_hosts=loopback_hosts("127.0.0.1"))
    with _serving(app) as port:
        url = f"http://127.0.0.1:{port}/"
        _explain_in_page(browser, url, ENTITY_TEXT, layer="1")
        # no class to pick and no second text for a token classifier
        assert not browser.find_element(By.ID, "target").is_displayed()
        assert not browser.find_element(By.ID, "text-pair").is_displayed()
        assert "entity types PER / " in browser.find_element(By.ID, "model-info").text
        # the text with its entities underlined, each a button; and a picker button each
        listed = browser.find_element(By.ID, "entity-text")
        assert listed.get_property("textContent") == ENTITY_TEXT
        marks = listed.find_elements(By.CSS_SELECTOR, "button.entity")
        assert [m.get_property("textContent") for m in marks] == words
        picks = browser.find_elements(By.CSS_SELECTOR, "#picker button")
        assert len(picks) == len(direct)
        assert all(XSS_TYPE in p.get_property("textContent") for p in picks)  # as text
        assert f"{len(direct)} entities" in browser.find_element(By.ID, "picker-title").text

        def shown(index: int) -> None:
            e = direct[index]
            assert _selected(browser) == [index]
            assert browser.find_element(By.ID, "prediction").text == e.entity["word"]
            assert browser.find_element(By.ID, "prediction-kind").text == "entity"
            heat = browser.find_element(By.ID, "heatmap")
            assert heat.get_property("textContent") == ENTITY_TEXT  # the whole text
            (mark,) = heat.find_elements(By.CSS_SELECTOR, "span.ent")
            assert (
                mark.get_property("textContent") == ENTITY_TEXT[e.entity["start"] : e.entity["end"]]
            )
            assert mark.get_attribute("data-tag").startswith(e.entity["label"] + " ")
            assert len(heat.find_elements(By.CSS_SELECTOR, "span.word")) >= len(e.words)

        shown(0)  # the first entity, at first
        marks[3].click()  # an entity in the text
        shown(3)
        picks[len(picks) - 1].click()  # one in the list
        shown(len(picks) - 1)
        # nothing the model named became markup, and none of it ran
        assert not browser.find_elements(By.CSS_SELECTOR, "img")
        assert browser.execute_script("return window.__xss") is None and _no_dialog(browser)
        # a text without an entity says so
        with _no_entities(entity_model):
            _explain_in_page(browser, url, ENTITY_TEXT, layer="1")
        none = browser.find_element(By.ID, "none-found")
        assert none.is_displayed() and "no entity" in none.text
        assert not browser.find_element(By.ID, "explained").is_displayed()
        assert not browser.find_element(By.ID, "picker-box").is_displayed()


def test_page_shows_a_zero_shot_label_with_its_hypothesis_apart(browser, zero_shot_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    text = "the team won the match"
    app = create_app(zero_shot_model, allowed_hosts=loopback_hosts("127.0.0.1"))
    with _serving(app) as port:
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        _explain_in_page(browser, url, text, layer="1")
        assert browser.find_element(By.ID, "target-name").text == "explain label"
        assert not browser.find_element(By.ID, "text-pair").is_displayed()
        assert not browser.find_element(By.ID, "picker-box").is_displayed()  # one label
        direct = layersal.explain(text, zero_shot_model, layer=1)
        assert browser.find_element(By.ID, "prediction-kind").text == "zero-shot label"
        assert browser.find_element(By.ID, "prediction").text == direct.prediction
        heat = browser.find_element(By.ID, "heatmap")
        assert heat.get_property("textContent") == text  # the text alone
        hypothesis = browser.find_element(By.ID, "hypothesis")
        assert hypothesis.is_displayed()
        assert hypothesis.get_property("textContent") == (
            f"hypothesis of {direct.target}This example is {direct.target}."
        )
        probs = browser.find_element(By.ID, "probs").get_property("textContent")
        assert "sports" in probs and "politics" in probs
        # another label, chosen: its hypothesis
        other = next(label for label in ("sports", "politics") if label != direct.target)
        Select(browser.find_element(By.ID, "target")).select_by_value(other)
        browser.find_element(By.ID, "explain").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 60).until(
            lambda d: other in d.find_element(By.ID, "hypothesis").get_property("textContent")
        )
        assert f"explaining: {other}" in browser.find_element(By.ID, "target-note").text


def test_page_picks_among_a_multi_label_texts_labels(browser, tiny_dirs, tmp_path):
    from selenium.webdriver.common.by import By

    from .conftest import tiny_head

    folder, mlm_dir = tiny_head(
        tiny_dirs, tmp_path / "multi", ["a", "b", "c"], problem_type="multi_label_classification"
    )
    multi = layersal.load(folder, lm_head=mlm_dir)
    with torch.no_grad():  # two labels on, whatever the text
        multi.model.classifier.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
    app = create_app(multi, allowed_hosts=loopback_hosts("127.0.0.1"))
    with _serving(app) as port:
        _explain_in_page(browser, f"http://127.0.0.1:{port}/", "a fine film", layer="1")
        picks = browser.find_elements(By.CSS_SELECTOR, "#picker button")
        names = [p.find_element(By.CLASS_NAME, "name").text for p in picks]
        assert names == ["a", "c"]
        assert not browser.find_element(By.ID, "entity-text").is_displayed()
        assert _selected(browser) == [0]
        assert browser.find_element(By.ID, "prediction").text == "a, c"
        predicted = browser.find_elements(By.CSS_SELECTOR, "#probs .prob-label.predicted")
        assert [p.text for p in predicted] == ["a", "c"]
        picks[1].click()
        assert _selected(browser) == [1]
        assert browser.find_element(By.ID, "target-note").text == "explaining: c"


def test_a_request_taken_for_batching_still_counts_as_work_ahead(sst2_tiny):
    """While the worker gathers more requests into the batch of one it has taken from the
    queue, that request is neither queued nor running yet: it must still count as work ahead
    (a request admitted in that window once waited out its whole budget, in CI)."""
    from layersal.serve.runner import Job, QueueFull, Runner

    runner = Runner(sst2_tiny, timeout_s=60, gather_s=600.0)  # a window that stays open
    runner.seconds_per_work["dls"] = 1.0
    job = Job("k", ["a fine film"], lambda texts: list(texts), time.monotonic() + 600, 300.0, "dls")
    try:
        with runner._ready:
            runner._queue.append(job)
            runner._ready.notify_all()
        deadline = time.monotonic() + 30
        while runner.queued() and time.monotonic() < deadline:  # until the worker takes it
            time.sleep(0.001)
        assert runner.queued() == 0 and not job.started.is_set()  # taken, gathering
        assert runner.pending() == 1 and runner.expected_wait() == pytest.approx(300.0)
        with pytest.raises(QueueFull):
            runner.check()
    finally:
        runner.close()
    assert job.future.result(timeout=30) == ["a fine film"]
