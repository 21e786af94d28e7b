// A line chart as inline SVG (no library): the values over time, the hourly min-max band when there is
// one, a few labelled ticks, and a sentence for screen readers saying what the chart shows.

import { fmtNumber, state } from "./core.js";

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 52, right: 14, top: 22, bottom: 34 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(lo, hi, n) {
  if (hi === lo) return [lo];
  const step = (hi - lo) / (n - 1);
  return Array.from({ length: n }, (_, i) => lo + i * step);
}

// points: [{ts, value, min?, max?}] in time order; span: seconds shown (ends at until); width: the box's
// CSS pixels, so the labels are drawn at their real size on a phone as on a desk
export function lineChart(points, { unit = "", span, until, summary, width = 640 }) {
  const W = Math.max(280, Math.round(width)), H = Math.round(Math.min(300, Math.max(200, W * 0.55)));
  const end = until, begin = until - span;
  const values = points.flatMap((p) => [p.value, p.min, p.max]).filter((x) => typeof x === "number");
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": summary });
  if (!values.length) return root;
  let lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
  lo -= pad; hi += pad;
  const x = (ts) => PAD.left + ((ts - begin) / (end - begin)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  const day = span > 2 * 86400;
  const fmt = new Intl.DateTimeFormat(state.lang, day ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  for (const v of ticks(lo + pad, hi - pad, 4)) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(v) + 5, "text-anchor": "end", class: "tick" }, fmtNumber(v)));
  }
  const times = ticks(begin, end, W < 500 ? 3 : 5);
  times.forEach((ts, i) => {
    const anchor = i === 0 ? "start" : i === times.length - 1 ? "end" : "middle";
    root.append(svg("text", { x: x(ts), y: H - 10, "text-anchor": anchor, class: "tick" }, fmt.format(new Date(ts * 1000))));
  });
  const band = points.filter((p) => typeof p.min === "number" && typeof p.max === "number");
  if (band.length > 1) {
    const top = band.map((p) => `${x(p.ts).toFixed(1)},${y(p.max).toFixed(1)}`);
    const bottom = band.slice().reverse().map((p) => `${x(p.ts).toFixed(1)},${y(p.min).toFixed(1)}`);
    root.append(svg("polygon", { points: [...top, ...bottom].join(" "), class: "band" }));
  }
  const line = points.filter((p) => typeof p.value === "number");
  root.append(svg("polyline", { points: line.map((p) => `${x(p.ts).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "),
    class: "line" }));
  const last = line.at(-1);
  if (last) root.append(svg("circle", { cx: x(last.ts), cy: y(last.value), r: 6, class: "last" }));
  root.append(svg("text", { x: PAD.left - 6, y: PAD.top - 8, "text-anchor": "end", class: "unit" }, unit));
  return root;
}
