"""One shared list of hostile texts and broken files, through every face.

Each case must end in a valid result or one clear error: never a traceback, never a 500,
never a partial output left behind as if it were complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import layersal
from layersal.cli import app
from layersal.errors import LayersalError

runner = CliRunner()

# (name, text, whether it can be explained)
TEXTS = [
    ("empty", "", False),
    ("whitespace", " \t \n ", False),
    ("nul-only", "\x00\x00\x00", False),
    ("zero-width-only", "\u200b\u200b\ufeff", False),
    ("lone-surrogate", "a fine \ud800 film", False),
    ("nul-inside", "good\x00film", True),
    ("typed-sep", "great [SEP] awful", True),
    ("typed-specials", "[CLS] fine [MASK] [PAD] [UNK]", True),
    ("emoji", "\U0001f600\U0001f3ac\U0001f44d", True),
    ("rtl", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", True),
    ("escape-codes", "\x1b[31mred\x1b[0m film \x07", True),
    ("one-long-word", "a" * 3000, True),
    ("markup", "<script>alert(1)</script> & \"quotes\" 'n' stuff", True),
    ("long-document", "word " * 1500, True),
    ("combining", "e\u0301\u0301\u0301 cafe\u0301", True),
    ("crlf", "line one\r\nline two", True),
    ("cjk", "\u4e2d\u6587\u7535\u5f71\u5f88\u597d", True),
    ("controls", "\x07\x08 bell and backspace", True),
    ("digits", "12345 67890", True),
    ("sql", "' OR 1=1 --", True),
]
TEXT_IDS = [name for name, _, _ in TEXTS]

# (name, file name, content, whether any text in it can be explained)
FILES = [
    ("not-utf8", "bad.txt", b"fine film\n\xff\xfe broken\n", False),
    ("nul-line", "nul.txt", b"\x00\x00\x00\n", False),
    ("ragged-tsv", "ragged.tsv", b"id\ttext\n1\n2\tfine\n", False),
    ("broken-jsonl", "broken.jsonl", b'{"text": "fine"}\n{"text": \n', False),
    ("foreign-header", "reviews.tsv", b"id\treview_body\n1\tgreat film\n", False),
    ("empty", "empty.txt", b"", False),
    ("unknown-suffix", "notes.json", b'["fine"]', False),
    ("bom-crlf", "bom.txt", b"\xef\xbb\xbfa fine film\r\nawful\r\n", True),
    ("headerless-tsv", "news.tsv", b"A dull film today\t0\nA great match\t1\n", True),
]
FILE_IDS = [name for name, _, _, _ in FILES]


def _one_error_line(result) -> None:
    """Exit status 2 and exactly one ``error:`` line, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert sum(line.startswith("error:") for line in lines) == 1, result.output
    assert "Traceback" not in result.output


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def client(sst2_tiny):
    from fastapi.testclient import TestClient

    from layersal.serve import create_app

    return TestClient(create_app(sst2_tiny, max_chars=20_000), raise_server_exceptions=False)


# ----------------------------------------------------------------------------- texts


@pytest.mark.parametrize(("name", "text", "ok"), TEXTS, ids=TEXT_IDS)
def test_python(sst2_tiny, name, text, ok):
    if ok:
        explanation = layersal.explain(text, sst2_tiny)
        assert explanation.text == text and explanation.tokens
        assert all(text[t.start : t.end] for t in explanation.tokens)
    else:
        with pytest.raises(LayersalError):
            layersal.explain(text, sst2_tiny)


@pytest.mark.parametrize(("name", "text", "ok"), TEXTS, ids=TEXT_IDS)
def test_cli_argument(name, text, ok):
    result = runner.invoke(app, ["explain", text, "--json"])
    if ok:
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[0])["text"] == text
    else:
        _one_error_line(result)


@pytest.mark.parametrize(("name", "text", "ok"), TEXTS, ids=TEXT_IDS)
def test_api(client, name, text, ok):
    body = json.dumps({"text": text})  # ASCII JSON: a lone surrogate travels as \ud800
    response = client.post(
        "/api/explain", content=body, headers={"content-type": "application/json"}
    )
    if ok:
        assert response.status_code == 200, response.text
        assert response.json()["explanations"][0]["text"] == text
    else:
        assert response.status_code == 422, response.text
        assert response.json()["error"]


def test_the_terminal_never_gets_raw_control_characters():
    result = runner.invoke(app, ["explain", "\x1b[31mred\x1b[0m film \x07"])
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[31mred" in result.stdout


def test_typed_special_tokens_are_explained_as_text(sst2_tiny):
    explanation = layersal.explain("great [SEP] awful", sst2_tiny)
    assert "[SEP]" not in [t.text for t in explanation.tokens]
    assert "".join(t.text for t in explanation.tokens[1:4]) == "[sep]"


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize(("name", "filename", "content", "ok"), FILES, ids=FILE_IDS)
def test_cli_file(tmp_path, name, filename, content, ok):
    result = runner.invoke(app, ["explain", "--file", str(_file(tmp_path, filename, content))])
    if ok:
        assert result.exit_code == 0, result.output
        assert "prediction:" in result.stdout
    else:
        _one_error_line(result)


@pytest.mark.parametrize(("name", "filename", "content", "ok"), FILES, ids=FILE_IDS)
def test_report(tmp_path, name, filename, content, ok):
    out = tmp_path / "report.html"
    path = _file(tmp_path, filename, content)
    result = runner.invoke(app, ["report", "--file", str(path), "--out", str(out)])
    if ok:
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8").rstrip().endswith("</html>")
    else:
        _one_error_line(result)
        assert not out.exists()


@pytest.mark.parametrize(("name", "filename", "content", "ok"), FILES, ids=FILE_IDS)
def test_bench(tmp_path, name, filename, content, ok):
    out = tmp_path / "bench"
    path = _file(tmp_path, filename, content)
    args = ["bench", "--data", str(path), "--out", str(out), "--methods", "gradient"]
    result = runner.invoke(app, [*args, "--no-loo", "--limit", "2"])
    if ok:
        assert result.exit_code == 0, result.output
        assert (out / "results.json").is_file()
    else:
        _one_error_line(result)
        assert not (out / "results.json").exists()


@pytest.mark.parametrize(("name", "filename", "content", "ok"), FILES, ids=FILE_IDS)
def test_dataset_run(tmp_path, sst2_tiny, name, filename, content, ok):
    """A dataset run records unreadable rows instead of failing on them; a file it cannot
    read at all is one error, and leaves no output folder behind."""
    from layersal.engines import explain_dataset

    out = tmp_path / "out.parquet"
    path = _file(tmp_path, filename, content)
    try:
        summary = explain_dataset(path, out, model=sst2_tiny)
    except LayersalError:
        assert not ok
        assert not out.exists()
        return
    assert (summary.rows + summary.errors == 0) == (name == "empty")  # every row accounted for
    assert json.loads((out / "_layersal.json").read_text())["complete"] is True
    if ok:
        assert summary.rows >= 1 and not summary.errors
