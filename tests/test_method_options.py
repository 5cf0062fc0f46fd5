"""Method options: their own namespace, a schema from the registry, and clear errors."""

from __future__ import annotations

import inspect
import warnings

import pytest

import layersal
from layersal.errors import InputError
from layersal.saliency import base
from layersal.saliency.base import (
    EXPLAIN_PARAMETERS,
    PASS_BOUND,
    check_method,
    method_schema,
    register,
)

TEXT = "a gripping, beautifully acted film"


def test_explain_parameters_are_the_ones_explain_has():
    params = inspect.signature(layersal.explain).parameters.values()
    own = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert own == EXPLAIN_PARAMETERS


def test_no_registered_option_is_named_like_an_explain_parameter():
    for method in layersal.methods():
        names = {o.name for o in method_schema(method)}
        assert not names & (EXPLAIN_PARAMETERS - {PASS_BOUND}), method


def test_registering_a_clashing_option_is_refused():
    def method(lm, encoded, targets=None, *, window: int = 3):  # pragma: no cover - never runs
        raise AssertionError

    with pytest.raises(TypeError, match="cannot have an option named 'window'"):
        register("clashing")(method)
    assert "clashing" not in base.methods()


def test_options_dict_reaches_the_method_and_not_the_splitter(bert_tiny):
    default = layersal.explain(TEXT, bert_tiny, method="occlusion")
    wide = layersal.explain(TEXT, bert_tiny, method="occlusion", options={"span": 5})
    keyword = layersal.explain(TEXT, bert_tiny, method="occlusion", span=5)
    assert wide.options == {"span": 5} and wide.scores == pytest.approx(keyword.scores)
    assert wide.scores != pytest.approx(default.scores)


def test_the_old_occlusion_window_says_where_it_went(bert_tiny):
    with pytest.raises(InputError, match="now called 'span': write span=5"):
        layersal.explain(TEXT, bert_tiny, method="occlusion", options={"window": 5})
    with pytest.warns(
        UserWarning, match=r"sets explain\(\)'s long-text window.*options=\{'span': 5\}"
    ):
        layersal.explain(TEXT, bert_tiny, method="occlusion", window=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layersal.explain(TEXT, bert_tiny, method="gradient", window=5)  # no old name: no warning


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"options": {"layer": 1}, "layer": 2}, "'layer' is given twice"),
        ({"options": [("layer", 1)]}, "options must be a dict"),
        (
            {"method": "occlusion", "options": {"span": "wide"}},
            "option 'span' takes int, not 'wide'",
        ),
        ({"method": "occlusion", "options": {"span": True}}, "option 'span' takes int, not True"),
        ({"method": "integrated_gradients", "options": {"n_steps": 2.5}}, "takes int, not 2.5"),
        ({"options": {"rule": "cp", "layer": "deepest"}}, "layer must be an integer"),
        ({"method": "gradient", "options": {"layer": 1}}, "has no option 'layer'"),
    ],
)
def test_bad_options_are_one_clear_error(bert_tiny, kwargs, message):
    with pytest.raises(InputError, match=message):
        layersal.explain(TEXT, bert_tiny, **kwargs)


def test_schema_has_types_and_defaults():
    schema = {o.name: o for o in method_schema("integrated_gradients")}
    assert (schema["n_steps"].type, schema["n_steps"].default) == ("int", 50)
    dls = {o.name: o for o in method_schema("dls")}
    assert (dls["layer"].type, dls["layer"].default) == ("int | str", "auto")
    check_method("lime", {"alpha": 1})  # an int where a float is declared is fine


def test_layer_is_one_method_option_on_every_face(sst2_tiny, tmp_path):
    """``layer`` is a method option; ``layer=`` (explain_dataset, the web request, the CLI's
    --layer) is its shorthand, and giving it both ways is refused, never one silently kept."""
    from layersal.engines import explain_dataset

    source = tmp_path / "in.txt"
    source.write_text("fine\n")
    with pytest.raises(InputError, match="'layer' is given twice"):
        explain_dataset(
            source, tmp_path / "o.parquet", model=sst2_tiny, layer=0, options={"layer": 1}
        )
    done = explain_dataset(source, tmp_path / "o.parquet", model=sst2_tiny, options={"layer": 1})
    assert done.rows == 1
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from layersal.serve import create_app

    with TestClient(create_app(sst2_tiny)) as client:
        twice = client.post(
            "/api/explain", json={"text": "fine", "layer": 0, "options": {"layer": 1}}
        )
        once = client.post("/api/explain", json={"text": "fine", "options": {"layer": 1}})
    assert twice.status_code == 422 and "given twice" in twice.json()["error"]
    assert once.status_code == 200 and once.json()["explanations"][0]["layer"] == 1
