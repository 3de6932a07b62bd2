// The model card: what GET /v1/models says about the served model, and the validation
// figures its artifact carries in its metadata.
import { el } from "./dom.js";

const fmt = (v, digits = 2) => (typeof v === "number" ? v.toFixed(digits) : "");

export function renderCardMessage(card, text) {
  card.replaceChildren(el("h2", {}, "Model"), el("p", { class: "note" }, text));
}

export function renderCard(card, m) {
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
    if (Object.keys(validation).some((name) => name.includes("/"))) {
      const details = el("details", {}, el("summary", {}, "per frequency"));
      details.append(metricsTable(validation, (name) => name.includes("/")));
      parts.push(details);
    }
    parts.push(el("p", { class: "note" },
      "sMAPE and MASE of the model's forecasts on windows held back from its training series."));
  } else {
    parts.push(el("p", { class: "note" }, "This artifact carries no validation metrics."));
  }
  const choice = m.metrics && m.metrics.context_choice;
  if (choice && typeof choice === "object") {
    const text = Object.entries(choice).map(([k, v]) => `${k}: ${fmt(v)}`).join(", ");
    parts.push(el("p", { class: "note" }, `M3 validation sMAPE by context length: ${text}.`));
  }
  if (m.data && m.data.source) parts.push(el("p", { class: "note" }, `Data: ${m.data.source}.`));
  card.replaceChildren(...parts);
}

// validation: {"m3": {"smape", "mase", "windows"}, "m3/monthly": {...}, ...}
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
