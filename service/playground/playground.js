// The playground: streams a series through WS /v1/stream (docs/protocol.md) and draws what
// comes back. No library and no request to any other origin: GET /v1/models for the model
// card, the example series from this server, and one websocket per session.
import { renderCard, renderCardMessage } from "./card.js";
import { renderChart } from "./chart.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
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
      renderCardMessage($("card"), "Enter the API key to see the model.");
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
  renderCard($("card"), page.model);
  fillModelOptions(page.model);
  return page.model;
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
      $("token").hidden = true; // the token shown was the pause's: the session moves on from here
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
    renderChart($("chart"), page);
  });
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
  renderChart($("chart"), page);
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
