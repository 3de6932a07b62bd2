// The chart, in plain SVG: the series, the one-step predictions with their band, and a forecast
// fork with its band. Every point carries its values in data- attributes (what was drawn).
import { svgEl } from "./dom.js";

const SIZE = { width: 960, height: 400, left: 70, right: 16, top: 14, bottom: 34 };

const num = (v) => (Array.isArray(v) ? v[0] : v); // a row (several features): its first

// view: {values, history, read, outputs: [{step, y, lo, hi}], forecast: {step, mean, lo, hi}}
export function renderChart(svg, view) {
  svg.replaceChildren();
  const { width, height, left, right, top, bottom } = SIZE;
  const values = view.values.map(num);
  if (!values.length) {
    svg.append(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
      "The chart fills in as the series streams."));
    return;
  }
  const f = view.forecast;
  const outs = view.outputs;
  const lastIndex = Math.max(values.length - 1, f ? f.step + f.mean.length - 1 : 0);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  for (const o of outs) {
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
  if (view.history > 0 && view.history < values.length) {
    const hx = x(view.history - 0.5);
    svg.append(svgEl("line", { class: "divider", x1: hx, x2: hx, y1: top, y2: height - bottom }));
    svg.append(svgEl("text", { class: "divider-label", x: hx + 4, y: top + 12 }, "streaming from here"));
  }

  // one-step predictions: the output at step s predicts observation s + 1
  if (outs.length && outs[0].lo !== null) {
    svg.append(bandPath(outs.map((o) => [o.step + 1, num(o.lo), num(o.hi)]), x, y, "band"));
  }
  const actual = values.slice(0, Math.max(view.read, 1)).map((v, i) => `${x(i)},${y(v)}`);
  svg.append(svgEl("polyline", { class: "actual", points: actual.join(" ") }));
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

// About `count` round steps (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi].
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
