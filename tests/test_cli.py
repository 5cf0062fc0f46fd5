"""The command line as a user meets it: output, JSON, files, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import layersal
from layersal.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def tiny_args(tiny_dirs) -> list[str]:
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    return ["--model", str(classifier_dir), "--lm-head", str(mlm_dir)]


def test_explain_default_model_prints_prediction_and_words():
    result = _run("explain", "a gripping, beautifully acted film")
    assert result.exit_code == 0, result.output
    assert "prediction: positive" in result.output
    assert "gripping" in result.output and "top words:" in result.output
    assert "sst2-tiny" in result.output


def test_summary_says_how_the_scores_were_computed():
    default = _run("explain", "a gripping, beautifully acted film")
    assert default.exit_code == 0 and "chosen by auto" in default.output
    decoded = _run("explain", "a gripping, beautifully acted film", "--layer", "1", "--decode")
    assert decoded.exit_code == 0 and "decoded (mlm_head)" in decoded.output
    plain = _run("explain", "a fine film", "--method", "gradcam")
    assert plain.exit_code == 0 and "gradcam at layer" in plain.output
    assert "decoded" not in plain.output, "gradcam never decodes"
    ruled = _run("explain", "a fine film", "--layer", "input", "--rule", "cp")
    assert "on the input embeddings, rule cp, not decoded" in ruled.output


def test_method_options_are_their_own_namespace(tiny_args):
    """``--option`` goes to the method only; explain()'s own --window is another thing."""
    text = "a gripping, beautifully acted film"
    old = _run("explain", text, "--method", "occlusion", "--option", "window=5", *tiny_args)
    assert old.exit_code == 2 and "now called 'span': write span=5" in old.output
    assert "Traceback" not in old.output
    new = _run("explain", text, "--method", "occlusion", "--option", "span=5", "--json", *tiny_args)
    assert new.exit_code == 0, new.output
    assert json.loads(new.stdout)["options"] == {"span": 5}
    wrong = _run("explain", text, "--method", "occlusion", "--option", "span=wide", *tiny_args)
    assert wrong.exit_code == 2 and "option 'span' takes int, not 'wide'" in wrong.output


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path):
    from layersal.cli.common import as_flags

    source = tmp_path / "in.txt"
    source.write_text("a fine film\n", encoding="utf-8")
    out = str(tmp_path / "out.parquet")
    result = _run("explain-dataset", str(source), "--out", out, "--shard-rows", "0")
    assert result.exit_code == 2 and "error: --shard-rows must be at least 1" in result.output

    message = (
        'pass `allow_pickle=True` to trust them; use `device="cpu"`; name it with `text_column`'
    )
    assert (
        as_flags(message)
        == "pass --allow-pickle to trust them; use --device cpu; name it with --text-column"
    )
    assert as_flags("layer [CLS] and `lm_head`") == "layer [CLS] and --lm-head"


def test_methods_lists_each_methods_options_from_the_registry():
    result = _run("methods")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert set(lines) == set(layersal.methods())
    assert (
        "span: int = 3" in lines["occlusion"]
        and "n_steps: int = 50" in lines["integrated_gradients"]
    )
    assert "(no options)" in lines["attention"]


def test_json_lines_output_round_trips(tiny_args):
    result = _run("explain", "first text", "second one", "--json", "--layer", "1", *tiny_args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["text"] for d in lines] == ["first text", "second one"]
    assert all(d["words"] and not d["layers"] for d in lines), "explain skips the per-layer report"
    result = _run("layers", "first text", "second one", "--json", *tiny_args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(d["words"] and len(d["layers"]) == 3 for d in lines)


def test_layers_command_shows_every_layer(tiny_args):
    result = _run("layers", "the movie was wonderful", *tiny_args)
    assert result.exit_code == 0, result.output
    for layer in range(3):
        assert f"layer {layer}" in result.output
    assert "coherence" in result.output and "[CLS] only" in result.output


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("texts.txt", "good film\n\nbad film\n", ["good film", "bad film"]),
        ("texts.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\n", ["good film", "bad film"]),
        ("texts.jsonl", '{"text": "good film"}\n{"text": "bad film"}\n', ["good film", "bad film"]),
    ],
)
def test_file_input_formats(tmp_path, tiny_args, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = _run("explain", "--file", str(path), "--json", *tiny_args)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == expected


def test_method_and_option_flags():
    result = _run(
        "explain",
        "a dull film",
        "--method",
        "integrated_gradients",
        "--option",
        "n_steps=8",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "integrated_gradients" and data["forward_passes"] == 9
    gradcam = json.loads(
        _run("explain", "a dull film", "--method", "gradcam", "--layer", "0", "--json").stdout
    )
    assert gradcam["layer"] == 0
    _one_line_error(
        _run("explain", "fine", "--method", "lime", "--option", "steps=3"), "has no option 'steps'"
    )
    _one_line_error(_run("explain", "fine", "--method", "magic"), "unknown method")
    text = _run("explain", "a dull film", "--method", "gradient").output
    assert "on the input embeddings" in text


def test_layer_and_target_options(tiny_args):
    result = _run("explain", "so so", "--layer", "-2", "--target", "neutral", "--json", *tiny_args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layer"] == 1 and data["target"] == "neutral"


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["explain", ""], "empty"),
        (["explain", "   "], "whitespace"),
        (["explain"], "no text given"),
        (["explain", "fine", "--model", "./no/such/model"], "not found"),
        (["explain", "fine", "--layer", "12"], "out of range"),
        (["explain", "fine", "--layer", "top"], "layer must be"),
        (["explain", "fine", "--target", "5"], "out of range"),
        (["explain", "fine", "--target", "meh"], "unknown target"),
        (["explain", "fine", "--saliency", "lrp"], "unknown saliency"),
        (["explain", "fine", "--file", "missing.txt"], "not both"),
        (["explain", "--file", "missing.txt"], "no such file"),
    ],
)
def test_user_mistakes_give_one_line_errors(args, fragment):
    _one_line_error(_run(*args), fragment)


def test_non_utf8_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème\n".encode("latin-1"))
    _one_line_error(_run("explain", "--file", str(path)), "not UTF-8")


def test_pickle_only_checkpoint_is_refused_from_the_cli(tmp_path, tiny_dirs):
    import shutil

    import torch
    from safetensors.torch import load_file

    classifier_dir, _ = tiny_dirs["bert"]
    pickled = tmp_path / "pickled"
    shutil.copytree(classifier_dir, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    _one_line_error(_run("explain", "fine", "--model", str(pickled)), "--allow-pickle")
    assert _run("explain", "fine", "--model", str(pickled), "--allow-pickle").exit_code == 0


class _RunsACommand:
    """A pickle payload that would create ``marker`` if it were ever unpickled for real."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["random bytes", "runs a command"])
def test_a_bad_pickle_is_one_line_and_runs_nothing(tmp_path, tiny_dirs, payload):
    import shutil

    import torch

    classifier_dir, _ = tiny_dirs["bert"]
    pickled = tmp_path / "pickled"
    shutil.copytree(classifier_dir, pickled)
    (pickled / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    if payload == "random bytes":
        (pickled / "pytorch_model.bin").write_bytes(bytes(range(256)) * 20)
    else:
        torch.save({"weight": _RunsACommand(str(marker))}, pickled / "pytorch_model.bin")
    result = _run("explain", "fine", "--model", str(pickled), "--allow-pickle")
    _one_line_error(result, "nothing in it was run")
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config_name_the_tensor_not_a_flag(tmp_path, tiny_dirs):
    import shutil

    classifier_dir, _ = tiny_dirs["bert"]
    edited = tmp_path / "edited"
    shutil.copytree(classifier_dir, edited)
    config = json.loads((edited / "config.json").read_text())
    config["hidden_size"] *= 2
    (edited / "config.json").write_text(json.dumps(config))
    result = _run("explain", "fine", "--model", str(edited))
    _one_line_error(result, "do not fit its config.json")
    assert "mismatched" not in result.output and "--ignore" not in result.output


def test_not_a_classifier_is_a_one_line_error(tiny_dirs):
    _, mlm_dir = tiny_dirs["bert"]
    _one_line_error(_run("explain", "fine", "--model", str(mlm_dir)), "not a sequence classifier")


def test_truncation_warning_is_visible(tiny_args):
    result = _run("explain", " ".join(["splendid"] * 400), "--truncate", *tiny_args)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "truncated" in result.output
    windowed = _run("explain", " ".join(["splendid"] * 400), "--json", *tiny_args)
    assert windowed.exit_code == 0 and "warning" not in windowed.output
    data = json.loads(windowed.stdout)
    assert data["options"]["windows"] > 1 and len(data["words"]) == 400


@pytest.mark.slow
def test_installed_entry_point_runs_without_traceback():
    ok = subprocess.run(
        [sys.executable, "-m", "layersal", "explain", "a gripping, beautifully acted film"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "prediction:" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "layersal", "explain", "fine", "--layer", "99"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_help_and_argument_parsing_do_not_import_torch():
    """``layersal --help`` and the CLI module stay light; the public API still resolves lazily."""
    code = (
        "import sys, layersal.cli; heavy = sorted(m for m in ('torch', 'transformers') if m in "
        "sys.modules); "
        "print(heavy); import layersal; layersal.explain; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = __import__("layersal").nonexistent


@pytest.mark.parametrize(
    ("args", "never"),
    [
        (["--version"], ("torch", "transformers")),
        (["--help"], ("torch", "transformers")),
        (["explain", "--help"], ("torch", "transformers")),
        (["methods"], ("transformers",)),  # the registry's schemas, no model
    ],
)
def test_light_commands_do_not_import_what_they_do_not_use(args, never):
    """What a command imports, seen from the process that ran it (issue 24, item 10)."""
    code = (
        "import sys\nfrom layersal.cli import app\n"
        f"sys.argv = ['layersal', *{args!r}]\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('imported:', *sorted(m for m in {never!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "imported:", done.stdout


def test_json_lines_carry_each_text_id_and_read_back(tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("a fine film\n\ndull\nwarm and funny\n", encoding="utf-8")
    result = _run("explain", "--file", str(data), "--json", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["id"], d["text"]) for d in lines] == [(0, "a fine film"), (2, "dull")]
    again = layersal.Explanation.from_json(result.stdout.splitlines()[1])
    assert again.text == "dull" and again.words


def test_output_streams_in_input_order_across_groups(monkeypatch):
    from layersal.cli import common as cli

    monkeypatch.setattr(cli, "STREAM_TEXTS", 2)
    texts = ["a fine film", "dull", "warm and funny", "too long", "sweet"]
    result = _run("explain", *texts, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["id"] for d in lines] == [0, 1, 2, 3, 4]
    assert [d["text"] for d in lines] == texts


def test_progress_on_a_terminal_counts_texts_and_windows():
    import io

    from rich.console import Console

    from layersal.report.progress import text_progress

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with text_progress(console, 3) as part:
        advance = part(0, 1)
        advance(2, 4)
        advance(4, 4)
        part(1, 2)(1, 1)
    shown = console.file.getvalue()
    assert "(2/4 windows)" in shown and "3/3 texts" in shown
    quiet = Console(file=io.StringIO(), force_terminal=False)
    with text_progress(quiet, 3) as part:
        assert part(0, 3) is False


def test_json_lines_stay_on_stdout_under_the_progress_bar(capsys):
    import io

    from rich.console import Console

    from layersal.report.progress import text_progress

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with text_progress(console, 2) as part:
        part(0, 2)(1, 2)
        sys.stdout.write('{"id": 0}\n')  # stdout is not the bar's terminal here
    assert '{"id": 0}' in capsys.readouterr().out
    assert '{"id": 0}' not in console.file.getvalue()


def test_truncation_warnings_name_the_text_across_groups(monkeypatch):
    from layersal.cli import common as cli

    monkeypatch.setattr(cli, "STREAM_TEXTS", 2)
    long = "word " * 600
    result = _run("explain", "fine", "dull", long, "--truncate")
    assert result.exit_code == 0, result.output
    assert "text 2 is longer than" in result.output and "text 0 is longer" not in result.output


def test_auto_is_settled_once_for_all_the_groups(monkeypatch, tiny_args, tmp_path):
    from layersal.cli import common as cli
    from layersal.saliency import layer_choice

    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "STREAM_TEXTS", 2)
    calls = []
    real = layer_choice.calibrate
    monkeypatch.setattr(layer_choice, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    texts = ["a fine film", "dull", "warm and funny", "too long", "sweet"]
    result = _run("explain", *texts, *tiny_args, "--json")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1  # not once per group of the stream
    layers = {json.loads(line)["layer"] for line in result.stdout.splitlines()}
    assert len(layers) == 1


def test_the_text_source_options_are_declared_once_for_every_command():
    """explain, layers, report and plot take the same texts options, from one declaration."""
    import inspect

    from layersal.cli import explain as commands
    from layersal.cli.common import _TEXT_SOURCE

    wanted = [name for name, _ in _TEXT_SOURCE]
    for command in (commands.explain, commands.layers, commands.report, commands.plot):
        assert list(inspect.signature(command).parameters)[: len(wanted)] == wanted
