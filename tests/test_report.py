"""The HTML report, the Jupyter card and the PNG plots: self-contained, escaped, complete."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.cli import app
from layersal.encoding import encode, model_input_names
from layersal.evaluate import faithfulness_of, score_batch
from layersal.report.html import Scale, render_card, render_report, word_scores
from layersal.report.plots import (
    coherence_figure,
    curves_figure,
    layer_heatmap_figure,
    write_plots,
)

runner = CliRunner()
TEXTS = ["a gripping, beautifully acted film", "unflinchingly bleak and desperate"]
XSS = [
    "<script>alert(1)</script> what a film",
    '"><img src=x onerror=alert(1)> dull',
    "it's <b onmouseover='alert(1)'>fine</b> & ok",
]
VOID = {"meta", "col", "br", "img", "link", "input", "hr", "source"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and (cls is None or cls in n.classes)]


class Tree(HTMLParser):
    """A small DOM from html.parser (entities decoded, like a browser)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> Node:
    return Tree(html).root


def _no_external_refs(html: str) -> None:
    lowered = html.lower()
    assert "http://" not in lowered and "https://" not in lowered
    for node in parse(html).iter():
        assert node.tag not in ("script", "link", "iframe", "img", "object", "embed"), node.tag
        assert "src" not in node.attrs and "href" not in node.attrs, (node.tag, node.attrs)


@pytest.fixture(scope="module")
def explained(sst2_tiny):
    dls = layersal.explain(
        TEXTS, sst2_tiny, layer=1, layer_report=True
    )  # a layer: the strip marks it
    grad = layersal.explain(TEXTS, sst2_tiny, method="gradient")
    return [[d, g] for d, g in zip(dls, grad)]


@pytest.fixture(scope="module")
def scored(sst2_tiny, explained):
    per_method = [faithfulness_of(sst2_tiny, [group[m] for group in explained]) for m in range(2)]
    return [list(row) for row in zip(*per_method)]


def test_report_is_self_contained_and_shows_words_and_prediction(explained):
    html = render_report(explained, labels=["dls", "gradient"])
    assert html.lstrip().startswith("<!DOCTYPE html>")
    _no_external_refs(html)
    root = parse(html)
    cards = root.find_all("section", "card")
    assert len(cards) == len(TEXTS)
    for card, group in zip(cards, explained):
        main = group[0]
        heat = card.find_all("table", "methods")[0].find_all("td", "heat")[0]
        assert heat.text() == main.text, "the heat-map row reads as the original text"
        spans = heat.find_all("span", "w")
        assert [s.text() for s in spans] == [w.text for w in main.words]
        assert f"prediction: {main.prediction}" in " ".join(card.text().split())
        for label, p in main.probabilities.items():
            assert f"{p:.3f}" in card.text() and label in card.text()


def test_hover_shows_score_and_pieces(explained):
    main = explained[1][0]
    multi = next(w for w in main.words if len(w.tokens) > 1)
    root = parse(render_card(main))
    spans = {s.text(): s for s in root.find_all("table", "methods")[0].find_all("span", "w")}
    tip = spans[multi.text].attrs["title"]
    assert f"{multi.score:+.4g}".replace("-", "−") in tip
    for t in multi.tokens:
        assert main.tokens[t].text in tip


def test_colour_scales_diverging_for_signed_and_sequential_otherwise():
    signed = Scale.of([-0.5, 0.25, 1.0])
    assert signed.kind == "diverging" and signed.vmax == 1.0
    assert signed.colour(0.0)[0] == "#ffffff"
    assert signed.colour(1.0)[0] == "#b2182b" and signed.colour(-1.0)[0] == "#2166ac"
    assert signed.colour(1.0)[1] == "#ffffff", "dark backgrounds get white ink"
    assert signed.ticks == ["−1", "0", "+1"]
    positive = Scale.of([0.0, 0.2, 0.4])
    assert positive.kind == "sequential" and positive.colour(0.4)[0] == "#bd0026"
    assert positive.colour(0.0)[0] == "#ffffff" and positive.ticks == ["0", "0.4"]
    assert Scale.of([0.0, 0.0]).colour(0.0) == ("#ffffff", "#1a1a1a")


def test_signed_rows_get_a_diverging_legend(explained):
    grad = explained[0][1]
    words = [
        dataclasses.replace(w, score=-abs(w.score) if i % 2 else abs(w.score))
        for i, w in enumerate(grad.words)
    ]
    root = parse(render_card(dataclasses.replace(grad, words=words)))
    legend = root.find_all("td", "legend")[0].text()
    assert "−" in legend and "+" in legend
    spans = root.find_all("table", "methods")[0].find_all("span", "w")
    for span, word in zip(spans, words):
        r, _, b = (
            int(span.attrs["style"].split("background:#")[1][i : i + 2], 16) for i in (0, 2, 4)
        )
        if word.score < 0:
            assert b > r, "negative words are blue"
        elif word.score > 0:
            assert r > b, "positive words are red"


def test_a_methods_colour_scale_is_the_same_on_every_card(explained):
    """One text's scores all positive, the next one's signed: both cards use the signed scale,
    so the same colour means the same thing from card to card."""
    first, second = explained[0][1], explained[1][1]
    positive = [dataclasses.replace(w, score=abs(w.score) + 0.1) for w in first.words]
    signed = [dataclasses.replace(w, score=(-1) ** i * 0.5) for i, w in enumerate(second.words)]
    page = parse(
        render_report(
            [
                [dataclasses.replace(first, words=positive)],
                [dataclasses.replace(second, words=signed)],
            ]
        )
    )
    legends = [t.find_all("td", "legend")[0].text() for t in page.find_all("table", "methods")]
    assert len(legends) == 2 and all("−" in legend and "+" in legend for legend in legends)
    alone = parse(render_card(dataclasses.replace(first, words=positive)))
    assert "−" not in alone.find_all("td", "legend")[0].text()


@pytest.mark.parametrize("text", XSS)
def test_user_text_labels_and_model_names_are_escaped(sst2_tiny, text):
    e = layersal.explain(text, sst2_tiny)
    hostile = dataclasses.replace(
        e,
        model="<marquee>model</marquee>",
        probabilities={f"<blink>{k}</blink>": v for k, v in e.probabilities.items()},
        prediction="<blink>" + e.prediction + "</blink>",
    )
    for html in (render_report([hostile], labels=["<marquee onclick=x>dls"]), render_card(hostile)):
        root = parse(html)
        tags = {n.tag for n in root.iter()}
        assert not tags & {"script", "img", "marquee", "blink"}, tags
        for node in root.iter():
            assert not any(name.startswith("on") for name in node.attrs), (node.tag, node.attrs)
        for heat in root.find_all("td", "heat"):
            assert {n.tag for n in heat.iter()} <= {"td", "span", "br"}, (
                "nothing but word spans in a heat-map"
            )
        assert text in root.text(), "the hostile text is shown literally"
        assert "<marquee>model</marquee>" in root.text()
        _no_external_refs(html)


def test_side_by_side_rows_for_two_methods(explained):
    root = parse(render_report(explained, labels=["dls", "gradient"]))
    for card in root.find_all("section", "card"):
        rows = card.find_all("table", "methods")[0].find_all("tr")
        assert [r.find_all("td", "label")[0].text().split()[0] for r in rows] == ["dls", "gradient"]
        assert all(r.find_all("td", "heat")[0].text() for r in rows)


def test_layer_strip_has_one_row_per_layer_with_coherence(explained):
    main = explained[0][0]
    root = parse(render_card(main))
    rows = root.find_all("table", "layers")[0].find_all("tr")
    assert len(rows) == len(main.layers) == 3
    for row, report in zip(rows, main.layers):
        label = row.find_all("td", "label")[0].text()
        assert f"layer {report.layer}" in label
        assert f"coherence {report.coherence:.3f}" in " ".join(label.split())
        assert ("used" in row.classes) == (report.layer == main.layer)
        assert ("muted" in row.classes) == (not report.has_position_gradient)
        assert row.find_all("td", "heat")[0].text().startswith(main.text)
    assert sum("used" in r.classes for r in rows) == 1
    assert "no position gradient" in rows[-1].text(), (
        "the [CLS]-only top layer says why it is blank"
    )


def test_input_level_method_has_no_strip_but_says_so(explained):
    html = render_card(explained[0][1])
    assert not parse(html).find_all("table", "layers")
    assert "no per-layer view" in html


def test_repr_html_is_the_card(explained):
    main = explained[0][0]
    html = main._repr_html_()
    root = parse(html)
    assert html.lstrip().startswith('<div class="lsr">') and "<html" not in html
    assert root.find_all("style") and len(root.find_all("section", "card")) == 1
    assert main.prediction in root.text()
    _no_external_refs(html)


def test_faithfulness_view_matches_score_batch(sst2_tiny, explained, scored):
    main = explained[1][0]
    encoded = encode(
        sst2_tiny.tokenizer, [main.text], sst2_tiny.max_length, model_input_names(sst2_tiny.model)
    )
    scores = torch.zeros(encoded.input_ids.shape)
    scores[0, encoded.content[0]] = torch.tensor(main.scores)
    target = torch.tensor([sst2_tiny.labels.index(main.target)])
    expected = score_batch(sst2_tiny, encoded, scores, target, loo=False)[0]
    got = scored[1][0]
    assert got.aopc_comprehensiveness == pytest.approx(expected.aopc_comprehensiveness, abs=1e-6)
    assert got.deletion_curve == pytest.approx(expected.deletion_curve, abs=1e-6)


def test_metrics_add_numbers_and_a_curve(explained, scored):
    plain = render_report(explained, labels=["dls", "gradient"])
    html = render_report(explained, labels=["dls", "gradient"], metrics=scored)
    assert "comp. AOPC" not in plain and "<svg" not in plain
    root = parse(html)
    cards = root.find_all("section", "card")
    assert len(cards) == len(TEXTS) + 1, "a summary card over the texts comes first"
    for card, results in zip(cards[1:], scored):
        text = card.find_all("table", "metrics")[0].text()
        for result in results:
            for value in (
                result.aopc_comprehensiveness,
                result.aopc_sufficiency,
                result.deletion_area,
                result.log_odds_20,
            ):
                shown = f"{value:.3f}"
                if shown == "-0.000":
                    shown = "0.000"
                assert shown.replace("-", "−") in text
        assert len(card.find_all("polyline")) == 2
    _no_external_refs(html)


def test_plots_have_titles_labels_and_write_pngs(explained, scored, tmp_path):
    main = explained[0][0]
    heat = layer_heatmap_figure(main)
    ax = heat.axes[0]
    assert main.model in ax.get_title() and "dls" in ax.get_title() and "gripping" in ax.get_title()
    assert ax.get_xlabel() == "word" and "layer" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == [w.text for w in main.words]
    assert any("(used)" in t.get_text() for t in ax.get_yticklabels())
    assert len(heat.axes) >= 2, "a colour bar"
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, len(main.words))
    assert image.mask[2].all(), "the [CLS]-only layer is blanked, not coloured"
    used_row = [r.layer for r in main.layers].index(main.layer)
    peak = max(abs(s) for s in word_scores(main, main.layers[used_row].scores))
    assert abs(image[used_row]).max() == pytest.approx(1.0) and peak > 0
    coherence = coherence_figure(main).axes[0]
    assert "coherence" in coherence.get_title().lower() and main.model in coherence.get_title()
    assert list(coherence.lines[0].get_ydata()) == pytest.approx([r.coherence for r in main.layers])
    curves = curves_figure(scored[0], ["dls", "gradient"], main)
    assert "Deletion" in curves.get_suptitle() and main.model in curves.get_suptitle()
    assert len(curves.axes[0].lines) == 2
    paths = write_plots(tmp_path, 1, main, scored[0], ["dls", "gradient"])
    assert [p.name for p in paths] == [
        "text-001-layers.png",
        "text-001-coherence.png",
        "text-001-curves.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    only_curves = write_plots(tmp_path / "grad", 2, explained[0][1], scored[0][1:], ["gradient"])
    assert [p.name for p in only_curves] == ["text-002-curves.png"]


@pytest.fixture(scope="module")
def tiny_args(tiny_dirs) -> list[str]:
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    return ["--model", str(classifier_dir), "--lm-head", str(mlm_dir)]


def test_cli_report_with_methods_metrics_and_png(tmp_path):
    out = tmp_path / "sub" / "report.html"
    png = tmp_path / "png"
    result = runner.invoke(
        app,
        [
            "report",
            *TEXTS,
            "--out",
            str(out),
            "--methods",
            "dls,gradient",
            "--metrics",
            "--png",
            str(png),
            "--layer",
            "1",
            "--target",
            "negative",
        ],
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    _no_external_refs(html)
    root = parse(html)
    assert len(root.find_all("table", "metrics")) == len(TEXTS) + 1
    for table in root.find_all("table", "metrics"):
        head = [" ".join(th.text().split()) for th in table.find_all("th")]
        column = next(i for i, h in enumerate(head) if h.startswith("soft comp."))
        for row in table.find_all("tr")[1:]:
            cells = [" ".join(td.text().split()) for td in row.find_all("td")]
            float(cells[column].replace("\u2212", "-"))  # --metrics computes the soft metrics
    cards = root.find_all("section", "card")[1:]
    shown = [" ".join(card.text().split()) for card in cards]
    assert "prediction: positive" in shown[0] and "explaining: negative" in shown[0]
    assert "prediction: negative" in shown[1] and "explaining:" not in shown[1]
    for card in cards:
        rows = card.find_all("table", "layers")[0].find_all("tr")
        assert [("used" in r.classes) for r in rows] == [False, True, False], (
            "--layer 1 is the used row"
        )
    assert sorted(p.name for p in png.iterdir()) == sorted(
        f"text-00{i}-{kind}.png" for i in (1, 2) for kind in ("layers", "coherence", "curves")
    )


def test_cli_plot_writes_pngs_per_text(tmp_path, tiny_args):
    source = tmp_path / "texts.txt"
    source.write_text("good film\nbad film\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "plot",
            "--file",
            str(source),
            "--out",
            str(tmp_path / "plots"),
            "--no-curves",
            *tiny_args,
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == [
        "text-001-coherence.png",
        "text-001-layers.png",
        "text-002-coherence.png",
        "text-002-layers.png",
    ]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["report"], "no text given"),
        (["report", "ok", "--methods", "nope"], "unknown method"),
        (["plot", "ok", "--methods", "dls:depth=3"], "no option"),
        (["report", "ok", "--target", "maybe"], "unknown target"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, tiny_args, args, fragment):
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), *tiny_args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output


def test_cli_report_to_an_unwritable_path_is_a_user_error(tmp_path, tiny_args):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["report", "ok", "--out", str(blocker / "report.html"), *tiny_args])
    assert result.exit_code == 2 and "cannot write" in result.output, result.output


def test_progress_lines_print_plain_lines_when_not_a_terminal():
    import io

    from rich.console import Console

    from layersal.report.progress import progress_lines

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with progress_lines(console, 6, "benchmark", every=3600) as advance:
        advance("gradient", 2)
        advance("gradient", 1)  # same step, too soon: no line
        advance("lime", 3)  # a new step, and the end
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "benchmark: 0/6"
    assert lines[1].startswith("benchmark: 6/6 (100%)") and lines[1].endswith("at lime")
    assert len(lines) == 2


def test_layer_heatmap_labels_do_not_crowd_on_long_texts(sst2_tiny):
    from layersal.report.plots import layer_heatmap_figure

    text = " ".join(f"w{i}" for i in range(300))
    fig = layer_heatmap_figure(layersal.explain(text, sst2_tiny, layer=1, layer_report=True))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 10 < len(labels) <= 4 * fig.get_figwidth() + 1
    step = int(labels[1][1:])
    assert labels[0] == "w0" and all(label == f"w{i * step}" for i, label in enumerate(labels))
    assert "labelled" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "layer 2"  # no long suffix


_LAYOUT_PROBE = """<script>
document.querySelector('main').style.width = '%dpx';
const words = [...document.querySelectorAll('.w')];
const probe = document.createElement('pre');
probe.id = 'probe';
probe.textContent = JSON.stringify({
  words: words.length,
  split: words.filter(w => w.getClientRects().length > 1).length,
  overflow: document.querySelector('main').scrollWidth - document.querySelector('main').clientWidth,
});
document.body.appendChild(probe);
</script>"""


@pytest.mark.browser
@pytest.mark.parametrize("viewport", [420, 800, 1280])
def test_words_wrap_as_words_at_every_width(explained, tmp_path, viewport):
    """Laid out by headless Chromium with the report's column as wide as it is on a screen of
    ``viewport`` pixels: no word is split across lines, and nothing is wider than the page
    (a wide metrics table scrolls inside its own box)."""
    import json
    import re
    import shutil
    import subprocess
    from pathlib import Path

    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip(f"{chromium} not installed (apt-get install chromium)")
    html = render_report(explained, labels=["dls", "gradient"])
    probe = _LAYOUT_PROBE % (viewport - 48)  # the body's margins
    (tmp_path / "report.html").write_text(html.replace("</body>", probe + "</body>"))
    profile = tmp_path / "profile"
    command = [str(chromium), "--headless", "--no-sandbox", "--disable-gpu"]
    command += [f"--user-data-dir={profile}", "--window-size=1280,900", "--dump-dom"]
    done = subprocess.run(
        [*command, (tmp_path / "report.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)
    found = re.search(r'<pre id="probe">([^<]*)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    layout = json.loads(found.group(1))
    assert layout["words"] > 0, layout
    assert layout["split"] == 0, layout
    assert layout["overflow"] <= 0, layout


def test_how_it_was_explained_is_one_plain_sentence_with_the_details_folded(sst2_tiny):
    e = layersal.explain(TEXTS[0], sst2_tiny)  # layer="auto": the model card's choice
    root = parse(render_report([e]))
    folded = root.find_all("details", "options")
    assert len(folded) == 1
    details = folded[0].text()
    assert "finalist" in details and "rule" in details  # auto's evidence, one click away
    visible = " ".join(root.text().replace(details, "").split())
    assert "Explained with dls on the input embeddings" in visible
    assert "chosen automatically as the most faithful setting for this model" in visible
    for jargon in ("finalist", "out after", "AOPC (", "saliency=", "tau="):
        assert jargon not in visible


# ------------------------------------------------------------- entities and zero-shot labels

ENTITY_TEXT = "Angela Merkel met Apple in Berlin and Apple again"


@pytest.fixture(scope="module")
def entity_model(tiny_dirs, tmp_path_factory):
    """A tiny token classifier whose biases tag every token an entity (ORG): words and pieces
    of words (``Mer``, ``kel``) each their own entity."""
    from .test_entities import token_classifier

    folder = token_classifier(
        tmp_path_factory.mktemp("entities"), bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1]
    )
    return layersal.load(folder, lm_head=tiny_dirs["bert"][1])


@pytest.fixture(scope="module")
def entities(entity_model):
    found = layersal.explain(ENTITY_TEXT, entity_model, layer=1, layer_report=True)
    assert len(found) > 2, "the biases should make several entities"
    return found


def _underlines(heat: Node) -> list[Node]:
    return heat.find_all("span", "ent")


def test_a_card_per_entity_its_characters_underlined_in_the_whole_text(entities):
    root = parse(render_report(entities))
    cards = root.find_all("section", "card")
    assert len(cards) == len(entities)
    meta = " ".join(root.find_all("p", "meta")[0].text().split())
    assert meta.endswith(f"{len(entities)} entities in 1 text"), meta
    for card, e in zip(cards, entities):
        start, end, label = e.entity["start"], e.entity["end"], e.entity["label"]
        head = " ".join(card.find_all("div", "head")[0].text().split())
        assert f"entity: {e.entity['word']} {label} p = {e.entity['probability']:.3f}" in head
        assert f"characters {start}–{end}" in head
        heats = card.find_all("td", "heat")
        assert len(heats) == 1 + len(e.layers)  # the method's row and every layer's
        for heat in heats:
            assert heat.text() == ENTITY_TEXT, "the whole text, every character once"
            marks = _underlines(heat)
            assert len(marks) == 1
            assert marks[0].text() == ENTITY_TEXT[start:end] == e.entity["word"]
            assert marks[0].attrs["data-tag"] == f"{label} {e.entity['probability']:.3f}"
            assert label in marks[0].attrs["title"]
            # what comes before the underline is exactly the text before the entity
            before = heat.text().split(marks[0].text())[0]
            assert ENTITY_TEXT.startswith(before) and len(before) <= start
        words = heats[0].find_all("span", "w")
        assert "".join(w.text() for w in words) == "".join(w.text for w in e.words)


def test_an_entity_inside_a_word_splits_the_word_at_its_edges(entities):
    """An entity of a word's pieces (``Mer`` of ``Merkel``) underlines those characters only;
    the word's two halves keep the word's colour and hover tip."""
    e = entities[0]
    merkel = next(w for w in e.words if w.text == "Merkel")
    inside = dataclasses.replace(
        e, entity={**e.entity, "start": 7, "end": 10, "word": "Mer"}, layers=[]
    )
    heat = parse(render_card(inside)).find_all("td", "heat")[0]
    mark = _underlines(heat)[0]
    assert mark.text() == "Mer"
    halves = [s for s in heat.find_all("span", "w") if s.text() in ("Mer", "kel")]
    assert [s.text() for s in halves] == ["Mer", "kel"]
    assert halves[0].parent is mark and halves[1].parent is not mark
    assert halves[0].attrs == halves[1].attrs, "one word: one colour, one tip"
    assert f"{merkel.score:+.4g}".replace("-", "−") in halves[0].attrs["title"]


def test_entity_text_and_types_are_escaped(entity_model):
    text = "<script>alert(1)</script> met Apple"
    e = layersal.explain(text, entity_model, target="0:8=ORG", layer=1)[0]
    hostile_type = '<img src=x onerror="alert(2)">'
    hostile = dataclasses.replace(e, entity={**e.entity, "label": hostile_type})
    for html in (render_report([hostile]), render_card(hostile)):
        assert "<script>" not in html and "<img" not in html
        root = parse(html)
        assert not {n.tag for n in root.iter()} & {"script", "img"}
        for node in root.iter():
            assert not any(name.startswith("on") for name in node.attrs), (node.tag, node.attrs)
        heat = root.find_all("td", "heat")[0]
        assert heat.text() == text
        mark = _underlines(heat)[0]
        assert mark.text() == text[e.entity["start"] : e.entity["end"]]
        assert mark.text().startswith("<script")  # shown literally
        assert mark.attrs["data-tag"].startswith(hostile_type)
        assert hostile_type in root.text()
        _no_external_refs(html)


def test_explanations_of_different_entities_are_not_one_card(entities):
    with pytest.raises(layersal.InputError, match="same entity"):
        render_report([[entities[0], entities[1]]])


@pytest.fixture(scope="module")
def zero_shot_model(tiny_dirs, tmp_path_factory):
    from .conftest import tiny_head

    folder, mlm_dir = tiny_head(
        tiny_dirs, tmp_path_factory.mktemp("nli"), ["entailment", "neutral", "contradiction"]
    )
    return layersal.load(
        folder, lm_head=mlm_dir, task="zero-shot", labels=["sports", "<b>politics</b>"]
    )


def test_a_zero_shot_card_shows_the_text_and_the_hypothesis_apart(zero_shot_model):
    text = "the <i>team</i> won the match"
    e = layersal.explain(text, zero_shot_model, target="<b>politics</b>", layer=1)
    assert e.task == "zero_shot" and e.text_pair == "This example is <b>politics</b>."
    html = render_card(e)
    root = parse(html)
    assert "<i>" not in html and "<b>politics" not in html, "labels and text stay text"
    head = " ".join(root.find_all("div", "head")[0].text().split())
    assert f"zero-shot label: {e.prediction}" in head
    assert f"hypothesis: “{e.text_pair}”" in head
    if e.prediction != e.target:
        assert "explaining: <b>politics</b>" in head
    for label, p in e.probabilities.items():  # every label's score
        assert label in head and f"{p:.3f}" in head
    for heat in root.find_all("td", "heat"):
        hypothesis = heat.find_all("span", "hyp")
        assert len(hypothesis) == 1
        assert hypothesis[0].text() == "hypothesis" + e.text_pair
        assert heat.text() == text + "hypothesis" + e.text_pair, "the text, then the hypothesis"
        assert not heat.find_all("span", "sep"), "no pair separator: the hypothesis is apart"
        assert {n.tag for n in heat.iter()} <= {"td", "span"}
    words = root.find_all("td", "heat")[0].find_all("span", "w")
    assert [w.text() for w in words] == [w.text for w in e.words]  # both texts' words scored


def test_cli_report_of_a_token_classifier_has_a_card_per_entity(entity_model, tiny_dirs, tmp_path):
    out = tmp_path / "entities.html"
    args = ["report", ENTITY_TEXT, "--model", str(entity_model.path), "--lm-head"]
    args += [str(tiny_dirs["bert"][1]), "--layer", "1", "--methods", "dls,gradient", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    root = parse(out.read_text(encoding="utf-8"))
    direct = layersal.explain(ENTITY_TEXT, entity_model, layer=1)
    cards = root.find_all("section", "card")
    assert len(cards) == len(direct)
    for card, e in zip(cards, direct):
        rows = card.find_all("table", "methods")[0].find_all("td", "heat")
        assert len(rows) == 2  # both methods explain this card's entity
        assert {_underlines(r)[0].text() for r in rows} == {e.entity["word"]}


def test_the_report_counts_texts_and_their_explanations(explained, entities):
    def counted(html: str) -> str:
        return " ".join(parse(html).find_all("p", "meta")[0].text().split()).rsplit("; ", 1)[1]

    grad = [group[1] for group in explained]
    assert counted(render_report(grad)) == "2 texts"
    labels = [grad[0], dataclasses.replace(grad[0], target="negative"), grad[1]]
    assert counted(render_report(labels)) == "3 explanations of 2 texts"  # a text's labels
    assert counted(render_report(entities[:1])) == "1 entity in 1 text"
