"""The one text reader: what each format gives, and the mistakes it refuses."""

from __future__ import annotations

import io
import sys

import pytest

from layersal.datasets import read_labelled
from layersal.errors import InputError
from layersal.inputs import Source, read_texts


def _write(path, content: str | bytes):
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_a_header_of_unknown_names_is_an_error_that_lists_the_columns(tmp_path):
    data = _write(tmp_path / "reviews.tsv", "id\treview_body\n1\tgreat film\n2\tdull\n")
    with pytest.raises(InputError, match=r"no text column found \(columns: id, review_body\)"):
        read_texts(data)
    with pytest.raises(InputError, match="text_column"):
        Source(data)
    assert read_texts(data, text_column="review_body") == ["great film", "dull"]


@pytest.mark.parametrize(
    ("content", "texts"),
    [
        ("sentence\tlabel\nfine film\t1\n", ["fine film"]),
        ("a fine film\t1\nawful\t0\n", ["a fine film", "awful"]),
        ("1\tfine\n2\tawful\n", ["1", "2"]),
        ("fine\nawful\n", ["fine", "awful"]),
        ("wonderful\tpositive\nawful\tnegative\n", ["wonderful", "awful"]),  # no header
        ("\ufefftext\tlabel\nhello there\t1\n", ["hello there"]),  # a BOM (Excel)
    ],
)
def test_tables_with_and_without_a_header(tmp_path, content, texts):
    assert read_texts(_write(tmp_path / "t.tsv", content)) == texts


def test_read_texts_skips_blank_rows_and_stops_at_the_limit(tmp_path):
    data = _write(tmp_path / "t.jsonl", '{"text": "one"}\n\n"two"\n{"text": "three"}\n')
    assert read_texts(data) == ["one", "two", "three"]
    assert read_texts(data, limit=2) == ["one", "two"]
    with pytest.raises(InputError, match="`limit` must be at least 1"):
        read_texts(data, limit=0)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{oops\n', r"row 2: not JSON"),
        ("bad.jsonl", '{"text": "ok"}\n{"body": "x"}\n', r"row 2: no string field 'text'"),
        ("bad.txt", b"fine\n\xff\xfe\n", r"row 2: not UTF-8 \(bad byte 0xff"),
        ("empty.txt", "\n \n", "contains no texts"),
        ("notes.json", '["a"]', "unknown input format '.json'"),
    ],
)
def test_read_texts_names_the_bad_row(tmp_path, name, content, message):
    with pytest.raises(InputError, match=message):
        read_texts(_write(tmp_path / name, content))


def test_standard_input_is_read_once_as_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first\n\nsecond\n")))
    assert read_texts("-") == ["first", "second"]


def test_read_labelled_sst2_and_agnews_layouts(tmp_path):
    sst = read_labelled(_write(tmp_path / "s.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n"))
    assert (sst.texts, sst.labels) == (["fine", "awful"], ["1", "0"])
    news = read_labelled(_write(tmp_path / "n.tsv", "Oil #36;50 \\ talks\tBusiness\n"))
    assert (news.texts, news.labels) == (["Oil $50 talks"], ["Business"])


def test_read_labelled_reads_every_format(tmp_path):
    jsonl = _write(tmp_path / "d.jsonl", '{"text": "fine", "label": "positive"}\n')
    assert read_labelled(jsonl).labels == ["positive"]
    csv = _write(tmp_path / "d.csv", 'review,label\n"fine, really",1\n')
    assert read_labelled(csv).texts == ["fine, really"]
    txt = _write(tmp_path / "d.txt", "fine\n")
    assert read_labelled(txt).labels == [None]


def test_a_headerless_table_of_words_keeps_its_labels(tmp_path):
    data = read_labelled(_write(tmp_path / "w.tsv", "wonderful\tpositive\nawful\tnegative\n"))
    assert (data.texts, data.labels) == (["wonderful", "awful"], ["positive", "negative"])
