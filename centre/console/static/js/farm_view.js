// The farmer's screen pieces: a zone (its probes' latest values, its valves with the state the valve
// itself confirmed, start N minutes / stop, the last result in words) and a reading tile.

import { el, fmtAgo, fmtNumber, fmtTime, t } from "./core.js";
import { gatewayTrouble, gatewayWords, intentWords, label } from "./words.js";

// what people call a point, and its unit, from the gateway's meta
export function pointInfo(meta, device, point) {
  const dev = meta?.devices?.[device];
  const p = dev?.points?.[point] || meta?.profiles?.[dev?.profile]?.points?.[point];
  return { label: label(p?.labels, point.replaceAll("_", " ")), unit: p?.unit || "" };
}

export function isOn(reading) {
  if (!reading) return null;
  if (typeof reading.value === "boolean") return reading.value;
  if (reading.text === "true" || reading.text === "false") return reading.text === "true";
  return typeof reading.value === "number" ? reading.value !== 0 : null;
}

export function gatewayLine(g, nowS) {
  const trouble = gatewayTrouble(g, nowS);
  return el("p", { class: `gw-line ${trouble ? "trouble" : "ok"}`, role: trouble ? "alert" : null },
    el("strong", {}, t("farm.gateway", { gateway: g.gateway })), " ", gatewayWords(g, nowS));
}

export function readingTile(r, meta, onChart) {
  const info = pointInfo(meta, r.device, r.point);
  const flag = r.text === "true" || r.text === "false" ? r.text : typeof r.value === "boolean" ? String(r.value) : null;
  const value = flag ? t(`value.${flag}`) : typeof r.value === "number" ? fmtNumber(r.value) : String(r.text ?? r.value ?? "–");
  return el("li", { class: "tile" },
    el("button", { type: "button", class: "tile-button", onclick: () => onChart(r, info),
      "aria-label": t("farm.tile_label", { point: info.label, value, unit: r.unit || info.unit, device: label(meta?.devices?.[r.device]?.labels, r.device) }) },
      el("span", { class: "tile-label" }, info.label),
      el("span", { class: "tile-value" }, value, el("span", { class: "unit" }, ` ${r.unit || info.unit}`)),
      el("span", { class: "tile-meta" }, `${label(meta?.devices?.[r.device]?.labels, r.device)} · ${fmtAgo(r.ts)}`)));
}

// one valve: the confirmed state, when it closes, and a failure to close in red
export function valveState(valveId, valve, reading, snap, gatewayOnline) {
  const on = isOn(reading);
  const name = label(valve?.labels, valveId);
  if (snap?.close_failing) return el("p", { class: "valve trouble", role: "alert" }, t("farm.valve_close_failing", { valve: name }));
  if (!gatewayOnline) {
    const last = on === null ? t("farm.state_unknown") : t(on ? "farm.was_open" : "farm.was_closed", { time: fmtTime(reading.ts) });
    return el("p", { class: "valve unknown" }, t("farm.valve_offline", { valve: name, last }));
  }
  if (on === null) return el("p", { class: "valve unknown" }, t("farm.valve_unknown", { valve: name }));
  if (on) {
    const closes = typeof snap?.closes_in_s === "number" ? t("farm.closes_in", { min: Math.max(1, Math.round(snap.closes_in_s / 60)) }) : "";
    return el("p", { class: "valve open" }, el("span", { class: "dot" }, "●"), " ", t("farm.valve_open", { valve: name }), closes);
  }
  return el("p", { class: "valve closed" }, el("span", { class: "dot" }, "○"), " ", t("farm.valve_closed", { valve: name }));
}

export function resultLine(cmd, gateway) {
  if (!cmd) return null;
  if (cmd.status === "refused_here") return el("p", { class: "intent refused", role: "status" }, t("intent.not_sent", { detail: cmd.detail }));
  const words = intentWords(cmd, gateway);
  const what = cmd.action === "irrigate" && cmd.params?.duration_s
    ? t("farm.cmd_irrigate", { min: Math.round(cmd.params.duration_s / 60) }) : t(`farm.cmd_${cmd.action}`);
  return el("div", { class: `intent ${words.kind}`, role: "status" },
    el("p", {}, el("strong", {}, what), " ", words.text),
    words.kind === "refused" && words.detail ? el("p", { class: "detail" }, t("farm.gateway_said", { detail: words.detail })) : null);
}

// the start/stop controls of one valve; onCommand(action, target, minutes); minutes: {value, set(v)}
export function valveControls(target, maxMin, open, onCommand, idBase, minutes) {
  const input = el("input", { id: `${idBase}-min`, type: "number", inputmode: "numeric", min: "1", max: String(maxMin),
    value: String(minutes.value ?? Math.min(10, maxMin)), class: "minutes", "data-action": "minutes",
    oninput: (e) => minutes.set(e.target.value) });
  return el("div", { class: "controls" },
    el("label", { for: input.id }, t("farm.minutes")), input,
    el("button", { type: "button", class: "primary big", "data-action": "start",
      onclick: () => onCommand("irrigate", target, Number(input.value)) }, t("farm.start")),
    el("button", { type: "button", class: open ? "danger big" : "secondary big", "data-action": "stop",
      onclick: () => onCommand("close", target) }, t("farm.stop")));
}
