// The playground: streams a series through WS /v1/stream (docs/protocol.md) and draws what
// comes back. No library and no request to any other origin: GET /v1/models for the model
// card, the example series from this server, and one websocket per session.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { width: 960, height: 400, left: 70, right: 16, top: 14, bottom: 34 };
  const WIRE_LINES = 40;

  const page = {
    examples: [],
    model: null,
    needsKey: null, // true after a 401, false once GET /v1/models answers without a key
    key: "",
    // the series on the chart
    name: "",
    values: [],
    history: 0,
    // the session
    ws: null,
    phase: "idle", // idle | connecting | streaming | pausing | paused | done | stopped
    options: null,
    next: 0, // index of the next observation to send
    read: 0, // observations the server has read
    inflight: false,
    lastSent: 0,
    timer: null,
    token: null,
    outputs: [], // {step, y, lo, hi}: y predicts observation step + 1
    forecast: null, // {step, mean, lo, hi}: mean[0] predicts observation step
    drawPending: false,
  };

  // ---- errors and status ------------------------------------------------------------------
  class PageError extends Error {}

  function showError(text, code, field) {
    const p = document.createElement("p");
    if (code) {
      const c = document.createElement("span");
      c.className = "code";
      c.textContent = field ? `${code} (${field})` : code;
      p.append(c, ": ");
    }
    p.append(text);
    $("errors").append(p);
    while ($("errors").children.length > 4) $("errors").firstElementChild.remove();
  }

  function clearErrors() {
    $("errors").replaceChildren();
  }

  // The server's error body, whatever route answered: {"error": {"code", "message", "field"}}
  // or {"error": "..."}; anything else is shown as the status line.
  async function responseError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: the status says enough
    }
    const err = body && body.error;
    if (err && typeof err === "object") return { code: err.code, message: err.message, field: err.field };
    if (typeof err === "string") return { code: String(response.status), message: err };
    return { code: String(response.status), message: response.statusText || "request failed" };
  }

  function setPhase(phase) {
    page.phase = phase;
    const open = page.ws !== null && page.ws.readyState === WebSocket.OPEN;
    $("start").disabled = phase === "connecting" || phase === "pausing";
    $("pause").disabled = phase !== "streaming";
    $("resume").disabled = phase !== "paused" || page.token === null;
    $("forecast").disabled = !(open && ["streaming", "done", "stopped"].includes(phase));
    updateStatus();
  }

  function updateStatus() {
    const s = $("status");
    s.dataset.phase = page.phase;
    s.dataset.read = String(page.read);
    const n = page.values.length;
    const where = `${page.name}: ${page.read} of ${n} observations read`;
    const speed = $("speed").value === "max" ? "as fast as answered" : `${$("speed").value} steps/s`;
    s.textContent = {
      idle: "Pick a series and press Start.",
      connecting: `${page.name}: connecting ...`,
      streaming: `${where}, streaming at ${speed}.`,
      pausing: `${where}, pausing ...`,
      paused: `${where}, paused. Resume continues from the resume token.`,
      done: `${where}: the end of the series. Forecast from here, or Reset.`,
      stopped: `${where}, stopped by an error. Forecast from here, or Reset.`,
    }[page.phase];
  }

  function wire(direction, text) {
    const pre = $("wire");
    const line = `${direction} ${text.length > 200 ? text.slice(0, 200) + " ..." : text}\n`;
    pre.textContent = (pre.textContent + line).split("\n").slice(-WIRE_LINES - 1).join("\n");
  }

  // ---- the API key -----------------------------------------------------------------------------
  function authHeaders() {
    return page.key ? { Authorization: `Bearer ${page.key}` } : {};
  }

  // A browser cannot set headers on a websocket: the key travels as a subprotocol, which the
  // server answers only with keys on (a browser drops a handshake that answers none).
  function subprotocols() {
    if (!page.key || page.needsKey === false) return [];
    const bytes = new TextEncoder().encode(page.key);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    const b64url = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    return ["gru-serve", `gru-serve.key.${b64url}`];
  }

  // ---- the model card --------------------------------------------------------------------------
  async function loadModel() {
    let response;
    try {
      response = await fetch("/v1/models", { headers: authHeaders() });
    } catch (e) {
      throw new PageError(`the server did not answer GET /v1/models (${e.message})`);
    }
    if (!response.ok) {
      const err = await responseError(response);
      if (response.status === 401) {
        page.needsKey = true;
        $("key-note").textContent = "This server needs an API key.";
        renderCardMessage("Enter the API key to see the model.");
      }
      const e = new PageError(err.message);
      e.code = err.code;
      e.field = err.field;
      throw e;
    }
    if (!page.key) {
      page.needsKey = false;
      $("key-note").textContent = "This server needs no key.";
    } else {
      $("key-note").textContent = "Key accepted.";
    }
    const body = await response.json();
    page.model = body.models[0];
    renderCard(page.model);
    fillModelOptions(page.model);
    return page.model;
  }

  function renderCardMessage(text) {
    const card = $("card");
    card.replaceChildren(el("h2", {}, "Model"), el("p", { class: "note" }, text));
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }

  const fmt = (v, digits = 2) => (typeof v === "number" ? v.toFixed(digits) : "");

  function renderCard(m) {
    const rows = [
      ["name", m.name],
      ["version", m.version],
      ["variant", m.variant],
      ["sizes", `input ${m.input_size}, hidden ${m.hidden_size} x ${m.num_layers} layer(s), output ${m.output_size}`],
      ["context length", m.context_length || "not stated"],
      ["horizon", m.horizon || "not stated"],
      ["frequencies", (m.frequencies || []).join(", ") || "none (pooled intervals)"],
      ["quantile levels", (m.quantile_levels || []).join(", ")],
      ["provider", m.provider],
      ["GRU nodes on", m.recurrent_nodes],
    ];
    const dl = el("dl", { id: "card-facts" });
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", { "data-field": k }, String(v)));
    const parts = [el("h2", {}, "Model"), dl];
    const validation = m.metrics && m.metrics.validation;
    if (validation && typeof validation === "object") {
      parts.push(el("h3", {}, "Validation, from the artifact"));
      parts.push(metricsTable(validation, (name) => !name.includes("/")));
      const perFrequency = Object.keys(validation).filter((name) => name.includes("/"));
      if (perFrequency.length) {
        const details = el("details", {}, el("summary", {}, "per frequency"));
        details.append(metricsTable(validation, (name) => name.includes("/")));
        parts.push(details);
      }
      parts.push(
        el("p", { class: "note" },
          "sMAPE and MASE of the model's forecasts on windows held back from its training series."),
      );
    } else {
      parts.push(el("p", { class: "note" }, "This artifact carries no validation metrics."));
    }
    const choice = m.metrics && m.metrics.context_choice;
    if (choice && typeof choice === "object") {
      const text = Object.entries(choice).map(([k, v]) => `${k}: ${fmt(v)}`).join(", ");
      parts.push(el("p", { class: "note" }, `M3 validation sMAPE by context length: ${text}.`));
    }
    if (m.data && m.data.source) parts.push(el("p", { class: "note" }, `Data: ${m.data.source}.`));
    $("card").replaceChildren(...parts);
  }

  function metricsTable(validation, keep) {
    const table = el("table", { class: "metrics" });
    table.append(el("tr", {}, el("th", {}, "set"), el("th", {}, "sMAPE"), el("th", {}, "MASE"), el("th", {}, "windows")));
    for (const [name, v] of Object.entries(validation)) {
      if (!keep(name) || !v || typeof v !== "object") continue;
      table.append(el("tr", {}, el("td", {}, name), el("td", {}, fmt(v.smape)), el("td", {}, fmt(v.mase, 3)),
        el("td", {}, v.windows === undefined ? "" : String(v.windows))));
    }
    return table;
  }

  function fillModelOptions(m) {
    // symmetric pairs of calibrated levels: (0.1, 0.9) is the 80% interval
    const levels = m.quantile_levels || [];
    const interval = $("interval");
    const before = interval.value;
    interval.replaceChildren(el("option", { value: "" }, "none"));
    for (const q of levels.filter((q) => q < 0.5).sort((a, b) => a - b)) {
      const hi = levels.find((h) => Math.abs(h - (1 - q)) < 1e-9);
      if (hi === undefined) continue;
      const label = `${Math.round((hi - q) * 100)}% (${q} to ${hi})`;
      interval.append(el("option", { value: `${q},${hi}` }, label));
    }
    const preferred = [...interval.options].find((o) => o.value === "0.1,0.9");
    interval.value = before && [...interval.options].some((o) => o.value === before) ? before
      : preferred ? preferred.value : interval.options[interval.options.length - 1].value;
    const frequency = $("frequency");
    frequency.replaceChildren(el("option", { value: "" }, "none (pooled)"));
    for (const f of m.frequencies || []) frequency.append(el("option", { value: f }, f));
    selectFrequency();
    if (m.horizon) $("horizon").value = String(m.horizon);
    suggestHistory();
  }

  // ---- the series ------------------------------------------------------------------------------
  async function loadExamples() {
    const response = await fetch("/playground/examples.json");
    if (!response.ok) throw new PageError(`the example series did not load (${response.status})`);
    page.examples = (await response.json()).series;
    const select = $("series");
    for (const s of page.examples) select.append(el("option", { value: s.id }, s.name));
    select.append(el("option", { value: "paste" }, "Paste your own ..."));
    onSeriesChange();
  }

  function currentExample() {
    return page.examples.find((s) => s.id === $("series").value) || null;
  }

  function onSeriesChange() {
    const ex = currentExample();
    $("paste").hidden = ex !== null;
    $("source").textContent = ex ? `Source: ${ex.source}.` : "";
    selectFrequency();
    suggestHistory();
  }

  function selectFrequency() {
    const ex = currentExample();
    const frequency = $("frequency");
    const wanted = ex && [...frequency.options].some((o) => o.value === ex.frequency) ? ex.frequency : "";
    frequency.value = wanted;
  }

  // Half the series, at most the context length the model was chosen with.
  function suggestHistory() {
    const ex = currentExample();
    if (!ex) return;
    const context = (page.model && page.model.context_length) || 24;
    $("history").value = String(Math.max(1, Math.min(context, Math.floor(ex.values.length / 2))));
  }

  // The page only splits the text into numbers; what the numbers may be (shape, size,
  // finiteness in float32, length) is the server's to say, and its answer is shown.
  function parsePaste(text) {
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
    if (!lines.length) {
      throw new PageError("the pasted series is empty: paste numbers separated by commas, spaces or new lines");
    }
    const rows = lines.map((line, i) =>
      line.split(/[\s,;]+/).filter((t) => t !== "").map((token) => {
        const v = Number(token);
        if (!Number.isFinite(v)) {
          throw new PageError(`the pasted series, line ${i + 1}: '${token}' is not a number`);
        }
        return v;
      }),
    );
    if (rows.length === 1) return rows[0];
    if (rows.every((r) => r.length === 1)) return rows.map((r) => r[0]);
    return rows; // several numbers on each line: one observation per line
  }

  function chosenSeries() {
    const ex = currentExample();
    if (ex) return { name: ex.name, values: ex.values.slice() };
    return { name: "your series", values: parsePaste($("paste").value) };
  }

  function streamOptions() {
    const options = {};
    const interval = $("interval").value;
    if (interval) options.quantiles = interval.split(",").map(Number);
    if ($("frequency").value) options.frequency = $("frequency").value;
    return options;
  }

  // ---- the session -------------------------------------------------------------------------------
  function openSocket(first) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/stream`, subprotocols());
    page.ws = ws;
    let opened = false;
    let closingState = null; // the `state` a server close sent first (it carries a token)
    ws.onopen = () => {
      opened = true;
      send(first);
    };
    ws.onmessage = (event) => {
      if (ws !== page.ws) return;
      wire("<-", String(event.data));
      const msg = JSON.parse(event.data);
      if (msg.type === "state" && msg.reason) closingState = msg;
      onMessage(msg);
    };
    ws.onclose = (event) => {
      if (ws !== page.ws) return; // a session the page has already left
      page.ws = null;
      clearTimeout(page.timer);
      page.inflight = false;
      if (page.phase === "paused" || page.phase === "idle") {
        setPhase(page.phase);
      } else if (!opened) {
        showError(
          "the websocket was refused before a session opened; with API keys on, check the key " +
            "(the server answers a missing or wrong key with HTTP 403, which a browser does not show)",
          "connection refused",
        );
        setPhase("idle");
      } else if (closingState) {
        showError(`${closingState.reason}; Resume continues from the resume token`,
          `closed by the server (${event.code})`);
        setPhase("paused");
      } else {
        showError(event.reason || "the connection ended", `closed by the server (${event.code})`);
        setPhase(page.outputs.length || page.read ? "stopped" : "idle");
      }
    };
  }

  function send(msg) {
    const text = JSON.stringify(msg);
    wire("->", text);
    page.ws.send(text);
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "ready":
        page.read = msg.step;
        page.next = msg.step;
        setPhase("streaming");
        pump();
        break;
      case "output": {
        page.inflight = false;
        page.read = msg.step + 1;
        const q = Object.entries(msg.quantiles || {}).sort((a, b) => Number(a[0]) - Number(b[0]));
        page.outputs.push({
          step: msg.step,
          y: msg.y,
          lo: q.length ? q[0][1] : null,
          hi: q.length ? q[q.length - 1][1] : null,
        });
        draw();
        if (page.phase === "streaming") pump();
        else updateStatus();
        break;
      }
      case "forecast": {
        const q = Object.entries(msg.quantiles || {}).sort((a, b) => Number(a[0]) - Number(b[0]));
        page.forecast = {
          step: msg.step,
          mean: msg.mean,
          lo: q.length ? q[0][1] : null,
          hi: q.length ? q[q.length - 1][1] : null,
        };
        draw();
        break;
      }
      case "state":
        page.token = msg.token;
        showToken(msg);
        if (page.phase === "pausing") setPhase("paused");
        break;
      case "error":
        showError(msg.message, msg.code, msg.field);
        if (page.phase === "connecting") {
          leaveSession();
          setPhase("idle");
        } else if (page.phase === "streaming") {
          // a step the server refused is not taken: stop here, the session stays usable
          page.inflight = false;
          clearTimeout(page.timer);
          setPhase("stopped");
        }
        break;
    }
  }

  function showToken(msg) {
    const t = $("token");
    t.hidden = false;
    t.textContent = `Resume token at step ${msg.step} (${msg.token.length} characters): ${msg.token.slice(0, 48)}...`;
  }

  function pump() {
    clearTimeout(page.timer);
    if (page.phase !== "streaming" || page.inflight) return;
    if (page.next >= page.values.length) {
      setPhase("done");
      return;
    }
    const speed = $("speed").value;
    const wait = speed === "max" ? 0 : Math.max(0, page.lastSent + 1000 / Number(speed) - performance.now());
    page.timer = setTimeout(sendStep, wait);
  }

  function sendStep() {
    if (page.phase !== "streaming" || page.inflight || !page.ws) return;
    page.inflight = true;
    page.lastSent = performance.now();
    send({ type: "step", x: page.values[page.next] });
    page.next += 1;
    updateStatus();
  }

  // Leave the current session: `close` asks the server for the final token and a clean close.
  function leaveSession() {
    clearTimeout(page.timer);
    const ws = page.ws;
    page.ws = null;
    page.inflight = false;
    if (ws && ws.readyState === WebSocket.OPEN) {
      wire("->", '{"type":"close"}');
      ws.send('{"type":"close"}');
    }
    if (ws && ws.readyState === WebSocket.CONNECTING) ws.close();
  }

  async function start() {
    clearErrors();
    leaveSession();
    let series;
    try {
      series = chosenSeries();
      if (!page.model) await loadModel();
    } catch (e) {
      showError(e.message, e.code || "not started", e.field);
      return;
    }
    const history = Math.max(1, Math.floor(Number($("history").value) || 1));
    Object.assign(page, {
      name: series.name,
      values: series.values,
      history: Math.min(history, series.values.length),
      outputs: [],
      forecast: null,
      token: null,
      read: 0,
      next: 0,
      options: streamOptions(),
    });
    $("token").hidden = true;
    setPhase("connecting");
    draw();
    const first = { type: "start", history: page.values.slice(0, page.history) };
    if (Object.keys(page.options).length) first.options = page.options;
    openSocket(first);
  }

  function pause() {
    if (page.phase !== "streaming") return;
    clearTimeout(page.timer);
    setPhase("pausing");
    send({ type: "close" }); // answered with `state` (the token), then the close
  }

  function resume() {
    if (page.phase !== "paused" || !page.token) return;
    clearErrors();
    setPhase("connecting");
    // options sent with `resume` replace the token's: send the same ones again
    const first = { type: "start", resume: page.token };
    if (Object.keys(page.options).length) first.options = page.options;
    openSocket(first);
  }

  function forecast() {
    if (!page.ws || page.ws.readyState !== WebSocket.OPEN) return;
    const msg = { type: "forecast", horizon: Number($("horizon").value) };
    send(msg);
  }

  function reset() {
    leaveSession();
    clearErrors();
    Object.assign(page, { values: [], outputs: [], forecast: null, token: null, read: 0, next: 0, name: "" });
    $("token").hidden = true;
    $("wire").textContent = "";
    setPhase("idle");
    draw();
  }

  // ---- the chart -------------------------------------------------------------------------------
  function draw() {
    if (page.drawPending) return;
    page.drawPending = true;
    requestAnimationFrame(() => {
      page.drawPending = false;
      render();
    });
  }

  const num = (v) => (Array.isArray(v) ? v[0] : v);

  function render() {
    const svg = $("chart");
    svg.replaceChildren();
    const { width, height, left, right, top, bottom } = CHART;
    const values = page.values.map(num);
    if (!values.length) {
      svg.append(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
        "The chart fills in as the series streams."));
      return;
    }
    const f = page.forecast;
    const lastIndex = Math.max(values.length - 1, f ? f.step + f.mean.length - 1 : 0);
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    for (const o of page.outputs) {
      lo = Math.min(lo, num(o.y), o.lo === null ? Infinity : num(o.lo));
      hi = Math.max(hi, num(o.y), o.hi === null ? -Infinity : num(o.hi));
    }
    if (f) {
      for (const v of [...f.mean, ...(f.lo || []), ...(f.hi || [])].map(num)) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
    const pad = (hi - lo || Math.abs(hi) || 1) * 0.05;
    lo -= pad;
    hi += pad;
    const x = (i) => left + (i / Math.max(lastIndex, 1)) * (width - left - right);
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom);

    // axes
    const axis = svgEl("g", { class: "axis" });
    for (const t of ticks(lo, hi, 6)) {
      axis.append(svgEl("line", { x1: left, x2: width - right, y1: y(t), y2: y(t) }));
      axis.append(svgEl("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, label(t)));
    }
    for (const t of ticks(0, lastIndex, 10).filter((t) => Number.isInteger(t))) {
      axis.append(svgEl("text", { x: x(t), y: height - bottom + 18, "text-anchor": "middle" }, String(t)));
    }
    axis.append(svgEl("text", { x: width - right, y: height - 4, "text-anchor": "end" }, "observation index"));
    svg.append(axis);

    // where the history ends and the stream begins
    if (page.history > 0 && page.history < values.length) {
      const hx = x(page.history - 0.5);
      svg.append(svgEl("line", { class: "divider", x1: hx, x2: hx, y1: top, y2: height - bottom }));
      svg.append(svgEl("text", { class: "divider-label", x: hx + 4, y: top + 12 }, "streaming from here"));
    }

    // one-step predictions: output at step s predicts observation s + 1
    const outs = page.outputs;
    if (outs.length && outs[0].lo !== null) svg.append(bandPath(outs.map((o) => [o.step + 1, num(o.lo), num(o.hi)]), x, y, "band"));
    svg.append(svgEl("polyline", { class: "actual", points: values.slice(0, Math.max(page.read, 1)).map((v, i) => `${x(i)},${y(v)}`).join(" ") }));
    if (outs.length) {
      svg.append(svgEl("polyline", { class: "pred", points: outs.map((o) => `${x(o.step + 1)},${y(num(o.y))}`).join(" ") }));
      const points = svgEl("g", { class: "pred-points" });
      for (const o of outs) {
        const c = svgEl("circle", {
          class: "pred-point", cx: x(o.step + 1), cy: y(num(o.y)), r: 2.6,
          "data-step": o.step, "data-y": String(o.y),
          "data-lo": o.lo === null ? "" : String(o.lo), "data-hi": o.hi === null ? "" : String(o.hi),
        });
        const band = o.lo === null ? "" : `, interval ${label(num(o.lo))} to ${label(num(o.hi))}`;
        c.append(svgEl("title", {}, `observation ${o.step + 1} predicted at step ${o.step}: ${label(num(o.y))}${band}`));
        points.append(c);
      }
      svg.append(points);
    }

    // the forecast fork: mean[k] predicts observation f.step + k
    if (f) {
      if (f.lo) svg.append(bandPath(f.mean.map((_, k) => [f.step + k, num(f.lo[k]), num(f.hi[k])]), x, y, "fc-band"));
      svg.append(svgEl("polyline", { class: "fc", points: f.mean.map((v, k) => `${x(f.step + k)},${y(num(v))}`).join(" ") }));
      const points = svgEl("g", { class: "fc-points" });
      f.mean.forEach((v, k) => {
        const c = svgEl("circle", {
          class: "fc-point", cx: x(f.step + k), cy: y(num(v)), r: 2.6, "data-index": f.step + k, "data-y": String(v),
          "data-lo": f.lo ? String(f.lo[k]) : "", "data-hi": f.hi ? String(f.hi[k]) : "",
        });
        c.append(svgEl("title", {}, `forecast of observation ${f.step + k}: ${label(num(v))}`));
        points.append(c);
      });
      svg.append(points);
    }
  }

  function bandPath(rows, x, y, cls) {
    const upper = rows.map(([i, , h]) => `${x(i)},${y(h)}`);
    const lower = rows.slice().reverse().map(([i, l]) => `${x(i)},${y(l)}`);
    return svgEl("path", { class: cls, d: `M${upper.join("L")}L${lower.join("L")}Z` });
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(lo, hi, count) {
    const raw = (hi - lo || 1) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function label(v) {
    const a = Math.abs(v);
    if (a >= 1e6 || (a > 0 && a < 1e-3)) return v.toExponential(2);
    return v.toLocaleString("en-US", { maximumFractionDigits: a >= 100 ? 0 : 2 });
  }

  // ---- wiring ----------------------------------------------------------------------------------
  async function useKey() {
    page.key = $("key").value.trim();
    clearErrors();
    try {
      await loadModel();
    } catch (e) {
      showError(e.message, e.code, e.field);
    }
  }

  async function init() {
    $("series").addEventListener("change", onSeriesChange);
    $("start").addEventListener("click", start);
    $("pause").addEventListener("click", pause);
    $("resume").addEventListener("click", resume);
    $("forecast").addEventListener("click", forecast);
    $("reset").addEventListener("click", reset);
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault(); // the key stays in the page: never in a URL
      useKey();
    });
    $("speed").addEventListener("change", () => {
      updateStatus();
      pump();
    });
    render();
    try {
      await loadExamples();
    } catch (e) {
      showError(e.message, "examples");
    }
    try {
      await loadModel();
    } catch (e) {
      showError(e.message, e.code, e.field);
    }
    document.body.dataset.loaded = "true";
  }

  init();
})();
