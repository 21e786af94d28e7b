// The farmer's phone: fields (irrigation zones) with their probes' current values and charts over 24 h
// and 7 days; each valve with the state the valve itself confirmed, start for N minutes / stop, and the
// result in words (executed, rejected with the gateway's reason, waiting while the gateway is offline,
// expired).  Live through the stream: readings, command results, the gateway going on- or offline.

import { lineChart } from "./chart.js";
import { api, banners, el, events, fmtNumber, header, mark, now, start, t, toLogin } from "./core.js";
import { Live } from "./live.js";
import { gatewayLine, isOn, readingTile, resultLine, valveControls, valveState } from "./farm_view.js";
import { label } from "./words.js";

const FARM_ROLES = ["farmer", "admin"];
const RANGES = { day: { span: 86400, resolution: "raw" }, week: { span: 7 * 86400, resolution: "hourly" } };
const f = { site: null, sites: [], gateways: [], details: new Map(), readings: new Map(), commands: new Map(),
  minutes: new Map(), chart: null, rendered: false };
let renderTimer = null;

const rkey = (gw, device, point) => `${gw}/${device}/${point}`;
const enc = encodeURIComponent;

async function sitesOf(me) {
  const sites = me.grants.filter((g) => FARM_ROLES.includes(g.role)).map((g) => g.site);
  if (sites.includes(null)) return (await api("/api/sites")).map((s) => s.site);
  return [...new Set(sites)].sort();
}

async function load() {
  if (!f.site) return;
  const site = enc(f.site);
  const [gws, readings, cmds] = await Promise.all([api(`/api/gateways?site=${site}`),
    api(`/api/readings/latest?site=${site}`), api(`/api/commands?site=${site}&kind=command&limit=100`)]);
  f.gateways = gws;
  const details = await Promise.all(gws.map((g) => api(`/api/gateways/${site}/${enc(g.gateway)}`).catch(() => ({}))));
  f.details = new Map(gws.map((g, i) => [g.gateway, details[i]]));
  f.readings = new Map(readings.map((r) => [rkey(r.gateway, r.device, r.point), r]));
  for (const c of cmds) f.commands.set(c.id, c);
  render();
  if (!f.rendered) { f.rendered = true; mark("farm-rendered"); }
}

async function reloadDetail(gateway) {
  try { f.details.set(gateway, await api(`/api/gateways/${enc(f.site)}/${enc(gateway)}`)); } catch { /* keep the last */ }
  renderSoon();
}

// ---- acting --------------------------------------------------------------------------------------------

async function command(gateway, action, target, minutes) {
  const params = action === "irrigate" ? { duration_s: Math.round(minutes * 60) } : {};
  const base = { gateway, action, target, params, created_at: now() };
  if (action === "irrigate" && !(minutes >= 1)) {
    f.commands.set(`local-${Date.now()}`, { ...base, status: "refused_here", detail: t("farm.minutes_invalid") });
  } else {
    try {
      const i = await api("/api/commands", { method: "POST", body: { site: f.site, gateway, action, target, params } });
      f.commands.set(i.id, { ...base, ...i });
    } catch (e) {
      f.commands.set(`local-${Date.now()}`, { ...base, status: "refused_here", detail: e.message });
    }
  }
  render();
}

function latestFor(gateway, targets) {
  let best = null;
  for (const c of f.commands.values()) {
    if (c.gateway === gateway && targets.includes(c.target) && (!best || (c.created_at ?? 0) >= (best.created_at ?? 0))) best = c;
  }
  return best;
}

// ---- showing -------------------------------------------------------------------------------------------

function renderSoon() {
  if (!renderTimer) renderTimer = setTimeout(() => { renderTimer = null; render(); }, 200);
}

function render() {
  const box = document.getElementById("farm");
  const focus = document.activeElement?.dataset?.focus;
  const parts = [];
  if (f.sites.length > 1) parts.push(sitePicker());
  if (!f.gateways.length) parts.push(el("p", { class: "empty" }, t("farm.no_gateways")));
  for (const g of f.gateways) parts.push(...gatewayParts(g));
  box.replaceChildren(...parts);
  if (focus) box.querySelector(`[data-focus="${CSS.escape(focus)}"]`)?.focus();
}

function sitePicker() {
  const select = el("select", { id: "site", onchange: (e) => { f.site = e.target.value; f.chart = null; load(); } },
    f.sites.map((s) => el("option", { value: s, selected: s === f.site }, s)));
  return el("p", { class: "site-picker" }, el("label", { for: "site" }, t("farm.site")), " ", select);
}

function gatewayParts(g) {
  const detail = f.details.get(g.gateway) || {}, meta = detail.meta || {};
  const zones = Object.entries(meta.zones || {});
  const out = [gatewayLine(g, now())];
  const inZones = new Set();
  for (const [id, zone] of zones) {
    (zone.devices || []).forEach((d) => inZones.add(d));
    out.push(zoneSection(g, detail, id, zone));
  }
  const valveDevices = new Set(Object.values(meta.valves || {}).map((v) => v.device));
  const others = [...f.readings.values()].filter((r) => r.gateway === g.gateway && !inZones.has(r.device)
    && !valveDevices.has(r.device) && typeof r.value === "number");
  if (others.length) {
    out.push(el("section", { class: "zone", "aria-labelledby": `other-${g.gateway}` },
      el("h2", { id: `other-${g.gateway}` }, t(zones.length ? "farm.other_readings" : "farm.readings")),
      el("ul", { class: "tiles" }, others.map((r) => readingTile(r, meta, openChart)))));
  }
  return out;
}

function zoneSection(g, detail, zoneId, zone) {
  const meta = detail.meta || {}, online = g.status === "online", hid = `zone-${g.gateway}-${zoneId}`;
  const valves = Object.entries(meta.valves || {}).filter(([id, v]) => (zone.valves || []).includes(id) || String(v.zone) === String(zoneId));
  const valvePoints = new Set(valves.map(([, v]) => rkey(g.gateway, v.device, v.point)));
  const readings = [...f.readings.values()].filter((r) => r.gateway === g.gateway && (zone.devices || []).includes(r.device)
    && !valvePoints.has(rkey(r.gateway, r.device, r.point)) && typeof r.value === "number");
  return el("section", { class: "zone", "aria-labelledby": hid },
    el("h2", { id: hid }, label(zone.labels, t("farm.zone", { zone: zoneId }))),
    readings.length ? el("ul", { class: "tiles" }, readings.map((r) => readingTile(r, meta, openChart)))
      : el("p", { class: "empty" }, t("farm.no_readings")),
    valves.map(([id, v]) => valveBox(g, detail, id, v, online)));
}

function valveBox(g, detail, id, v, online) {
  const reading = f.readings.get(rkey(g.gateway, v.device, v.point));
  const snap = detail.state?.commands?.valves?.[id];
  const open = !!snap?.open || isOn(reading) === true;
  const targets = [id, ...(v.zone !== null && v.zone !== undefined ? [`zone-${v.zone}`] : [])];
  const idBase = `valve-${g.gateway}-${id}`;
  const minutes = { value: f.minutes.get(idBase), set: (x) => f.minutes.set(idBase, x) };
  const controls = valveControls(id, Math.max(1, Math.floor((v.max_run_s || 7200) / 60)), open,
    (action, target, min) => command(g.gateway, action, target, min), idBase, minutes);
  for (const b of controls.querySelectorAll("[data-action]")) b.dataset.focus = `${idBase}-${b.dataset.action}`;
  return el("div", { class: "valve-box" }, valveState(id, v, reading, snap, online), controls,
    resultLine(latestFor(g.gateway, targets), g));
}

// ---- charts --------------------------------------------------------------------------------------------

async function openChart(r, info, range = "day") {
  f.chart = { r, info, range };
  const box = document.getElementById("chart");
  const { span, resolution } = RANGES[range];
  const until = now();
  const q = `site=${enc(f.site)}&gateway=${enc(r.gateway)}&device=${enc(r.device)}&point=${enc(r.point)}`
    + `&resolution=${resolution}&since=${until - span}&until=${until}`;
  let points = [];
  try {
    const s = await api(`/api/readings/series?${q}`);
    points = resolution === "raw" ? (s.raw || []).map((p) => ({ ts: p.ts, value: p.value }))
      : (s.hourly || []).map((p) => ({ ts: p.hour + 1800, value: p.mean, min: p.min, max: p.max }));
  } catch (e) {
    banners.show("chart", e.message, { kind: "warning" });
  }
  const values = points.map((p) => p.value).filter((x) => typeof x === "number");
  const unit = r.unit || info.unit;
  const summary = values.length ? t("chart.summary", { point: info.label, range: t(`chart.${range}`), unit,
    min: fmtNumber(Math.min(...values)), max: fmtNumber(Math.max(...values)), last: fmtNumber(values.at(-1)) })
    : t("chart.empty", { point: info.label, range: t(`chart.${range}`) });
  box.hidden = false;
  const meta = f.details.get(r.gateway)?.meta;
  box.replaceChildren(
    el("h2", { id: "chart-title" }, `${info.label} · ${label(meta?.devices?.[r.device]?.labels, r.device)}`),
    el("div", { class: "range", role: "group", "aria-labelledby": "chart-title" },
      ...Object.keys(RANGES).map((k) => el("button", { type: "button", class: "secondary", "aria-pressed": String(k === range),
        onclick: () => openChart(r, info, k) }, t(`chart.${k}`)))),
    lineChart(points, { unit, span, until, summary, width: box.clientWidth - 32 }),
    el("p", { class: "chart-summary" }, summary),
    el("button", { type: "button", class: "secondary", onclick: () => { box.hidden = true; f.chart = null; } }, t("action.close")));
  box.scrollIntoView({ block: "nearest" });
}

// ---- live ----------------------------------------------------------------------------------------------

function onEvent(channel, d) {
  if (d.site !== f.site) return;
  if (channel === "reading") {
    for (const r of d.readings || []) {
      const value = typeof r.value === "boolean" ? (r.value ? 1 : 0) : r.value;
      f.readings.set(rkey(d.gateway, r.device, r.point), { ...r, value, text: typeof r.value === "boolean" ? String(r.value) : null, gateway: d.gateway });
    }
    renderSoon();
  } else if (channel === "command") {
    api(`/api/commands/${enc(d.id)}`).then((c) => {
      f.commands.set(c.id, { ...f.commands.get(c.id), ...c });
      renderSoon();
      if (["executed", "failed", "accepted"].includes(c.status)) reloadDetail(c.gateway);
    }).catch(() => {});
  } else if (channel === "gateway") {
    load();
  }
}

async function main() {
  const me = await start();
  if (!me) return;
  f.sites = await sitesOf(me);
  f.site = f.sites[0] || null;
  const frame = () => { header("farm.title"); render(); if (f.chart) openChart(f.chart.r, f.chart.info, f.chart.range); };
  events.addEventListener("language", frame);
  events.addEventListener("session-ended", () => banners.show("session", () => t("banner.session_ended_phone"),
    { action: () => t("action.login"), onAction: toLogin }));
  frame();
  new Live(["reading", "command", "gateway"], { onSync: load, onEvent,
    onSessionEnded: () => events.dispatchEvent(new CustomEvent("session-ended")) }).start();
  setInterval(() => { for (const g of f.gateways) reloadDetail(g.gateway); }, 30000);
}

main();
