// layersal web page. Every string from the user or the model goes into the DOM as text
// (textContent / createTextNode), never as markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const POS = [220, 50, 47];
  const NEG = [38, 139, 210];
  let info = null;
  let last = null; // the last /api/explain response

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    return Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setBusy(busy, message) {
    $("explain").disabled = busy;
    $("status").textContent = message || "";
  }

  // ------------------------------------------------------------------ controls

  function methodInfo(name) {
    return (info && info.methods.find((m) => m.name === name)) || null;
  }

  function fillLayers() {
    const select = $("layer");
    const previous = select.value;
    clear(select);
    const m = methodInfo($("method").value);
    if (!m || !m.takes_layer) {
      const opt = el("option", null, "n/a");
      opt.value = "";
      select.appendChild(opt);
      select.disabled = true;
      return;
    }
    select.disabled = false;
    if (m.name !== "dls") {
      const opt = el("option", null, "default");
      opt.value = "";
      select.appendChild(opt);
    }
    for (const choice of m.layer_choices) {
      const label = typeof choice === "number" && choice === 0 ? "0 (embeddings)" : String(choice);
      const opt = el("option", null, label);
      opt.value = String(choice);
      select.appendChild(opt);
    }
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  }

  async function loadInfo() {
    const response = await fetch("api/info");
    if (!response.ok) throw new Error("could not read api/info (" + response.status + ")");
    info = await response.json();
    const entities = info.task === "token_classification";
    const kinds = entities
      ? "a token classifier of entity types " + info.labels.filter((l) => l !== "O").join(" / ")
      : info.task === "zero_shot"
        ? "a zero-shot classifier of the labels " + info.labels.join(" / ")
        : info.labels.join(" / ");
    $("model-info").textContent =
      "Model " + info.model + " (" + kinds + "), " + info.num_layers +
      " layers, decoded by its " + (info.decoder === "mlm_head" ? "masked-LM head" : info.decoder) + ".";
    // the page's example text is a review; a token classifier gets one with names in it
    const box = $("text");
    if (entities && box.value === box.defaultValue) {
      box.value = "Microsoft chief executive Steve Ballmer opened a new office in Hyderabad.";
    }
    // a token classifier explains the entities it finds (a class is no target for it)
    $("target-control").hidden = entities;
    $("target-name").textContent = info.task === "zero_shot" ? "explain label" : "explain class";
    const method = $("method");
    for (const m of info.methods) {
      const opt = el("option", null, m.name);
      opt.value = m.name;
      method.appendChild(opt);
    }
    method.value = info.default_method;
    const target = $("target");
    for (const label of info.labels) {
      const opt = el("option", null, label);
      opt.value = label;
      target.appendChild(opt);
    }
    $("text").maxLength = info.limits.max_chars;
    // a token classifier reads one text; a zero-shot classifier pairs it with its hypotheses
    $("text-pair").hidden = info.pairs === false || entities || info.task === "zero_shot";
    $("text-pair").maxLength = info.limits.max_chars;
    fillLayers();
  }

  // ------------------------------------------------------------------ request

  function layerValue() {
    const v = $("layer").value;
    if ($("layer").disabled || v === "") return null;
    return /^-?\d+$/.test(v) ? parseInt(v, 10) : v;
  }

  async function explainText() {
    showError("");
    const text = $("text").value;
    if (!text.trim()) {
      showError("Type a text to explain first.");
      return;
    }
    const body = { text: text, method: $("method").value };
    const pair = $("text-pair").hidden ? "" : $("text-pair").value;
    if (pair.trim()) body.text_pair = pair;
    const layer = layerValue();
    if (layer !== null) body.layer = layer;
    if ($("target").value) body.target = $("target").value;
    setBusy(true, "explaining…");
    const began = performance.now();
    try {
      const response = await fetch("api/explain", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
      if (!response.ok) {
        const message = data && data.error ? data.error : "request failed (" + response.status + ")";
        showError("Error " + response.status + ": " + message);
        setBusy(false, "");
        return;
      }
      last = data;
      showAll(data.explanations, 0);
      setBusy(false, "done in " + ((performance.now() - began) / 1000).toFixed(2) + " s");
    } catch (e) {
      showError("Could not reach the server: " + e.message);
      setBusy(false, "");
    }
  }

  // ------------------------------------------------------------------ rendering

  function shade(score, scale) {
    const strength = scale > 0 ? Math.min(1, Math.abs(score) / scale) : 0;
    const base = score >= 0 ? POS : NEG;
    const rgb = base.map((c) => Math.round(255 + (c - 255) * strength));
    return { background: "rgb(" + rgb.join(",") + ")", ink: strength > 0.6 ? "#fff" : "#1f2328" };
  }

  function renderProbs(e) {
    const probs = $("probs");
    clear(probs);
    // a multi-label prediction names its labels with ", " between them
    const predicted = e.entity ? [e.entity.label] : e.prediction.split(", ");
    for (const [label, p] of Object.entries(e.probabilities)) {
      const name = el("span", "prob-label" + (predicted.includes(label) ? " predicted" : ""), label);
      const bar = el("div", "prob-bar");
      const fill = el("div", "prob-fill");
      fill.style.width = (100 * p).toFixed(1) + "%";
      bar.appendChild(fill);
      probs.append(name, bar, el("span", "prob-value", fmt(p)));
    }
  }

  // the words and gaps of one text of e, as [{text, start, word}] covering it from 0
  function pieces(e, text, segment) {
    const out = [];
    let cursor = 0;
    for (const word of e.words) {
      if ((word.segment || 0) !== segment) continue;
      if (word.start > cursor) out.push({ text: text.slice(cursor, word.start), start: cursor, word: null });
      out.push({ text: text.slice(word.start, word.end), start: word.start, word: word });
      cursor = Math.max(cursor, word.end);
    }
    if (cursor < text.length) out.push({ text: text.slice(cursor), start: cursor, word: null });
    return out;
  }

  function pieceNode(piece, scale) {
    if (!piece.word) return document.createTextNode(piece.text);
    const span = el("span", "word", piece.text);
    const colour = shade(piece.word.score, scale);
    span.style.backgroundColor = colour.background;
    span.style.color = colour.ink;
    span.title = "score " + piece.word.score.toPrecision(4);
    span.dataset.score = String(piece.word.score);
    return span;
  }

  function entityTag(entity) {
    return entity.label + " " + fmt(entity.probability);
  }

  // the pieces of the first text into box; the characters of `entity` (if any) inside one
  // underlined span, a word it cuts into split in two
  function appendText(box, list, scale, entity) {
    let mark = null;
    for (const piece of list) {
      const end = piece.start + piece.text.length;
      const cuts = [piece.start];
      if (entity) for (const c of [entity.start, entity.end]) if (c > piece.start && c < end) cuts.push(c);
      cuts.push(end);
      cuts.sort((a, b) => a - b);
      for (let k = 0; k + 1 < cuts.length; k++) {
        const a = cuts[k], b = cuts[k + 1];
        if (a === b) continue;
        const part = { text: piece.text.slice(a - piece.start, b - piece.start), start: a, word: piece.word };
        const inside = entity && a >= entity.start && b <= entity.end;
        if (inside && !mark) {
          mark = el("span", "ent");
          mark.dataset.tag = entityTag(entity);
          mark.title = "entity " + entity.label + ", probability " + fmt(entity.probability);
          box.appendChild(mark);
        }
        (inside ? mark : box).appendChild(pieceNode(part, scale));
      }
    }
  }

  function renderHeatmap(e) {
    const heat = $("heatmap");
    const hypothesis = $("hypothesis");
    clear(heat);
    clear(hypothesis);
    const scale = Math.max(0, ...e.words.map((w) => Math.abs(w.score)));
    const paired = e.text_pair !== null && e.text_pair !== undefined;
    // a zero-shot explanation's pair is the text and the label's hypothesis: shown apart
    const apart = paired && e.task === "zero_shot";
    appendText(heat, pieces(e, e.text, 0), scale, e.entity || null);
    if (paired && !apart) {
      // a pair's second text follows the first after a separator; offsets index into each text
      heat.appendChild(el("span", "pair-sep", " ‖ "));
      appendText(heat, pieces(e, e.text_pair, 1), scale, null);
    }
    hypothesis.hidden = !apart;
    if (apart) {
      hypothesis.appendChild(el("span", "hyp-label", "hypothesis of " + e.target));
      appendText(hypothesis, pieces(e, e.text_pair, 1), scale, null);
    }
    $("scale").textContent = scale > 0 ? "(full colour = |score| " + scale.toPrecision(3) + ")" : "";
  }

  function renderMeta(e, elapsed) {
    const report = e.layers.find((r) => r.layer === e.layer);
    const parts = [e.method];
    if (e.layer !== null && e.layer !== undefined) parts.push("at layer " + e.layer);
    else if (e.method === "dls") parts.push("at the input embeddings");
    if (report && report.coherence !== null) parts[parts.length - 1] += " (coherence " + fmt(report.coherence, 2) + ")";
    if (e.options && e.options.rule) parts.push("rule " + e.options.rule);
    if (e.layers.length) parts.push("decoder: " + e.decoder);
    parts.push(e.forward_passes + " forward / " + e.backward_passes + " backward passes");
    if (elapsed !== undefined) parts.push(elapsed.toFixed(2) + " s on the server");
    $("meta").textContent = parts.join(" · ");
    $("truncated").hidden = !e.truncated;
    renderAuto(e);
  }

  function where(layer) {
    return layer === null || layer === undefined ? "the input embeddings" : "layer " + layer;
  }

  // layer="auto": one plain sentence, and the measurements behind a disclosure
  function renderAuto(e) {
    const auto = e.options && e.options.layer === "auto" ? e.options.auto : null;
    $("auto-note").hidden = !auto;
    $("auto-details").hidden = !auto;
    $("auto-details").open = false;
    if (!auto) return;
    $("auto-note").textContent =
      "Chosen automatically: of the settings tried on " + auto.n_texts + " texts (" +
      auto.source + "), " + where(auto.layer) + " with the " + auto.rule + " rule" +
      (auto.decode ? ", decoded through the LM head," : "") +
      " found the words that matter most to the prediction.";
    $("auto-reason").textContent = auto.reason;
  }

  function renderCoherence(e) {
    const box = $("coherence");
    clear(box);
    $("layer-used").textContent = "";
    const layers = e.layers.filter((r) => r.coherence !== null && r.coherence !== undefined);
    if (!layers.length) {
      box.appendChild(el("p", "dim small", "The " + e.method + " method gives no per-layer report: choose dls to see one."));
      return;
    }
    const W = 640, H = 220, left = 44, right = 12, top = 18, bottom = 34;
    const plotW = W - left - right, plotH = H - top - bottom;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", id: "coherence-chart" });
    chart.appendChild(svg("title", {}, "Coherence per layer"));
    for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
      const y = top + plotH * (1 - tick);
      chart.appendChild(svg("line", { x1: left, x2: W - right, y1: y, y2: y, class: "grid" }));
      chart.appendChild(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, tick.toFixed(2)));
    }
    chart.appendChild(svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }));
    chart.appendChild(svg("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, class: "axis" }));
    const slot = plotW / layers.length;
    const barW = Math.min(56, slot * 0.6);
    layers.forEach((r, i) => {
      const value = Math.max(0, Math.min(1, r.coherence));
      const x = left + slot * i + (slot - barW) / 2;
      const h = plotH * value;
      let cls = "coh-bar";
      if (!r.has_position_gradient) cls += " no-gradient";
      if (r.layer === e.layer) cls += " chosen";
      const bar = svg("rect", { x: x, y: top + plotH - h, width: barW, height: Math.max(h, 1), class: cls, "data-layer": r.layer, "data-coherence": r.coherence });
      bar.appendChild(svg("title", {}, "layer " + r.layer + ": coherence " + fmt(r.coherence) + (r.note ? " — " + r.note : "")));
      chart.appendChild(bar);
      chart.appendChild(svg("text", { x: x + barW / 2, y: top + plotH - h - 4, "text-anchor": "middle", class: "value" }, fmt(r.coherence, 2)));
      chart.appendChild(svg("text", { x: x + barW / 2, y: H - bottom + 16, "text-anchor": "middle" }, r.layer === 0 ? "0 (emb)" : String(r.layer)));
    });
    chart.appendChild(svg("text", { x: left + plotW / 2, y: H - 2, "text-anchor": "middle" }, "layer"));
    box.appendChild(chart);
    const shown = layers.some((r) => r.layer === e.layer);
    $("layer-used").textContent = shown
      ? "The outlined bar, layer " + e.layer + ", is the layer the scores above come from."
      : e.layer === null || e.layer === undefined
        ? "The scores above come from the input embeddings (the word embeddings, before layer 0), not from one of these layers: no bar is outlined."
        : "The scores above come from layer " + e.layer + ", which has no bar here.";
  }

  function renderTopTokens(e) {
    const box = $("top-tokens");
    clear(box);
    const layers = e.layers.filter((r) => r.top_tokens);
    if (!layers.length) {
      box.appendChild(el("p", "dim small", "No decoded tokens for this method."));
      return;
    }
    const table = el("table");
    table.id = "top-tokens-table";
    const head = el("tr");
    head.appendChild(el("th", null, "input token"));
    for (const r of layers) head.appendChild(el("th", r.layer === e.layer ? "chosen" : null, "layer " + r.layer));
    table.appendChild(head);
    // a causal-LM head predicts the next token: that is the one to mark in a position's row
    const causal = e.decoder === "lm_head";
    e.tokens.forEach((token, i) => {
      const row = el("tr");
      row.appendChild(el("th", null, token.text));
      const next = e.tokens[i + 1];
      const expected = causal ? (next && next.segment === token.segment ? next.text : null) : token.text;
      for (const r of layers) {
        const cell = el("td");
        const tops = r.top_tokens[i] || [];
        const probs = (r.top_probs && r.top_probs[i]) || [];
        tops.slice(0, 3).forEach((tok, k) => {
          if (k) cell.appendChild(el("span", "sep", " · "));
          const span = el("span", tok === expected ? "own" : null, tok);
          if (probs[k] !== undefined) span.title = "p = " + fmt(probs[k]);
          cell.appendChild(span);
        });
        if (r.own_rank && r.own_rank[i] !== undefined && r.own_rank[i] >= 0)
          cell.title = "rank of the own (causal models: next) token: " + r.own_rank[i];
        row.appendChild(cell);
      }
      table.appendChild(row);
    });
    box.appendChild(table);
  }

  function render(e) {
    $("result").hidden = false;
    const hasLayers = e.layers.some((r) => r.coherence !== null && r.coherence !== undefined);
    $("layer-section").hidden = !hasLayers;
    $("no-layers").hidden = hasLayers;
    $("no-layers").textContent = hasLayers ? "" :
      "The " + e.method + " method works on the input only: no per-layer coherence or decoded tokens (choose dls to see them).";
    const scored = e.score !== null && e.score !== undefined; // a regression head's number
    const entity = e.entity || null; // a token classifier's: the entity explained
    $("prediction-kind").textContent = scored
      ? "score"
      : entity ? "entity" : e.task === "zero_shot" ? "zero-shot label" : "prediction";
    $("legend-neg").textContent = scored ? "lowered the score" : entity ? "against its type" : "against the class";
    $("legend-pos").textContent = scored ? "raised the score" : entity ? "towards its type" : "towards the class";
    $("prediction").textContent = entity ? entity.word : e.prediction;
    $("target-note").textContent = scored
      ? "word scores in its units: + raised it, - lowered it"
      : entity
        ? entity.label + ", probability " + fmt(entity.probability) + " (characters " +
          entity.start + "–" + entity.end + ")" +
          (entity.label !== e.prediction ? "; the span's most likely type: " + e.prediction : "")
        : e.target !== e.prediction ? "explaining: " + e.target : "";
    renderProbs(e);
    renderHeatmap(e);
    renderMeta(e, last ? last.elapsed_s : undefined);
    renderCoherence(e);
    renderTopTokens(e);
  }

  // ------------------------------------------------------------------ several explanations

  // a short name of one explanation among its text's: the entity, or the label explained
  function pickName(e) {
    if (e.entity) return e.entity.word;
    return e.target;
  }

  function pickTag(e) {
    if (e.entity) return entityTag(e.entity);
    const p = e.probabilities ? e.probabilities[e.target] : undefined;
    return p === undefined ? null : fmt(p, 2);
  }

  // the text with every entity of `list` underlined, each a button that shows its explanation
  function renderEntityText(list) {
    const box = $("entity-text");
    clear(box);
    const entities = list.map((e, i) => ({ entity: e.entity, index: i })).filter((x) => x.entity);
    box.hidden = !entities.length;
    if (!entities.length) return;
    const text = list[0].text;
    entities.sort((a, b) => a.entity.start - b.entity.start);
    let cursor = 0;
    for (const { entity, index } of entities) {
      if (entity.start < cursor) continue; // overlapping a shown one: in the list below only
      if (entity.start > cursor) box.appendChild(document.createTextNode(text.slice(cursor, entity.start)));
      const button = el("button", "entity", text.slice(entity.start, entity.end));
      button.type = "button";
      button.dataset.index = String(index);
      button.title = entity.label + ", probability " + fmt(entity.probability) + ": show its explanation";
      button.addEventListener("click", () => select(index));
      box.appendChild(button);
      cursor = entity.end;
    }
    if (cursor < text.length) box.appendChild(document.createTextNode(text.slice(cursor)));
  }

  function renderPicker(list) {
    const picker = $("picker");
    clear(picker);
    list.forEach((e, i) => {
      const button = el("button");
      button.appendChild(el("span", "name", pickName(e)));
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.index = String(i);
      const tag = pickTag(e);
      if (tag !== null) button.appendChild(el("span", "tag", tag));
      button.addEventListener("click", () => select(i));
      picker.appendChild(button);
    });
  }

  function select(index) {
    const list = last ? last.explanations : [];
    if (!list[index]) return;
    for (const node of document.querySelectorAll("#picker button, #entity-text .entity")) {
      const on = node.dataset.index === String(index);
      if (node.getAttribute("role") === "tab") node.setAttribute("aria-selected", on ? "true" : "false");
      node.classList.toggle("selected", on);
    }
    render(list[index]);
  }

  // every explanation of the text: a picker among several (entities, a multi-label model's
  // labels), then the chosen one
  function showAll(list, index) {
    $("result").hidden = false;
    const entities = info && info.task === "token_classification";
    $("none-found").hidden = list.length > 0;
    $("none-found").textContent = list.length ? "" : entities
      ? "The model finds no entity in this text."
      : "Nothing to explain in this text.";
    $("explained").hidden = !list.length;
    $("picker-box").hidden = !(entities ? list.length : list.length > 1);
    $("picker-title").textContent = entities
      ? list.length + " entit" + (list.length === 1 ? "y" : "ies") + ": click one to see its explanation"
      : list.length + " explanations of this text: choose one";
    renderEntityText(list);
    renderPicker(list);
    if (list.length) select(index);
  }

  // ------------------------------------------------------------------ downloads

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function downloadJson() {
    if (!last) return;
    const data = last.explanations.length === 1 ? last.explanations[0] : last.explanations;
    save(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }), "layersal-explanation.json");
  }

  async function downloadHtml() {
    if (!last) return;
    showError("");
    const response = await fetch("api/report.html", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ explanations: last.explanations }),
    });
    if (!response.ok) {
      showError("Could not render the HTML report (" + response.status + ")");
      return;
    }
    save(await response.blob(), "layersal-explanation.html");
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("explain").addEventListener("click", explainText);
    $("method").addEventListener("change", fillLayers);
    $("text").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) explainText();
    });
    $("download-json").addEventListener("click", downloadJson);
    $("download-html").addEventListener("click", downloadHtml);
    setBusy(true, "loading…");
    loadInfo()
      .then(() => setBusy(false, ""))
      .catch((e) => {
        showError(e.message);
        setBusy(false, "");
      });
  });
})();
