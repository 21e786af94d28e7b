// The volunteer's (and grid leader's) phone: the alerts of their groups, where exactly, who has already
// acknowledged, and one big "I'm on my way" -- an acknowledgement signed for them by the centre.
// Phones are alerted by SMS/WeChat Work links to this page; this is where they act.

import { api, banners, can, el, events, fmtAgo, fmtTime, header, start, state, t, toLogin } from "./core.js";
import { countdownText, gwKey, keyOf } from "./desk_view.js";
import { Live } from "./live.js";
import {
  groupLabel, intentWords, isOpen, needsAck, nextStep, severityRank, severityWord, statusWords, timelineWords,
  whatHappened, whereParts,
} from "./words.js";

const v = { alerts: new Map(), metas: new Map(), intents: new Map(), timelines: new Map(), open: new Set() };
let ids = 0;

async function load() {
  const [alerts, intents] = await Promise.all([
    api("/api/alerts?state=recent&recent_hours=24&limit=200"), api("/api/intents").catch(() => [])]);
  v.alerts = new Map(alerts.map((a) => [keyOf(a), a]));
  v.intents = new Map();
  for (const i of intents) if (i.kind === "ack") addIntent(i);
  render();
  for (const k of v.open) loadTimeline(k);
  loadMetas();
}

function addIntent(i) {
  const k = `${i.site}/${i.gateway}/${i.target}`;
  const list = (v.intents.get(k) || []).filter((x) => x.id !== i.id);
  v.intents.set(k, [...list, i]);
}

async function loadMetas() {
  if (!can("gateways.view")) return;
  const missing = [...new Set([...v.alerts.values()].map(gwKey))].filter((k) => !v.metas.has(k));
  await Promise.all(missing.map(async (k) => {
    const [site, gateway] = k.split("/");
    try { v.metas.set(k, (await api(`/api/gateways/${encodeURIComponent(site)}/${encodeURIComponent(gateway)}`)).meta || {}); }
    catch { v.metas.set(k, {}); }
  }));
  if (missing.length) render();
}

async function loadTimeline(k) {
  const [site, gateway, alert] = k.split("/");
  try {
    v.timelines.set(k, (await api(`/api/alerts/${encodeURIComponent(site)}/${encodeURIComponent(gateway)}/${encodeURIComponent(alert)}`)).timeline);
  } catch { v.timelines.set(k, []); }
  render();
}

function sorted() {
  return [...v.alerts.values()].sort((a, b) => (isOpen(b) - isOpen(a))
    || (isOpen(a) ? severityRank(a.severity) - severityRank(b.severity) || (a.raised_at ?? 0) - (b.raised_at ?? 0)
      : (b.resolved_at ?? 0) - (a.resolved_at ?? 0)));
}

function render() {
  const list = document.getElementById("alert-list");
  const focus = document.activeElement?.closest?.("[data-key]")?.dataset.key;
  const all = sorted();
  list.replaceChildren(...all.map(card));
  document.getElementById("alerts-empty").hidden = all.length > 0;
  if (focus) list.querySelector(`[data-key="${CSS.escape(focus)}"] button`)?.focus();
}

function card(a) {
  const k = keyOf(a), meta = v.metas.get(gwKey(a)), id = `va-${++ids}`;
  const what = whatHappened(a, meta), where = whereParts(a.location, meta), step = nextStep(a, meta);
  const groups = (a.groups || []).map((g) => groupLabel(meta, g)).join(" → ");
  const mine = (v.intents.get(k) || []);
  return el("li", { class: `alert sev-${a.severity || "none"} st-${a.status}`, "data-key": k, "aria-labelledby": `${id}-what` },
    el("div", { class: "alert-head" },
      el("span", { class: `badge sev-${a.severity || "none"}` }, severityWord(a.severity)),
      el("span", { class: "raised" }, t("alert.raised_at", { time: fmtTime(a.raised_at), ago: fmtAgo(a.raised_at) }))),
    el("h2", { class: "what", id: `${id}-what` }, what.text),
    el("p", { class: "where big" }, where.length ? where.join(" · ") : t("where.unknown")),
    el("p", { class: "site" }, t("volunteer.site", { site: a.site })),
    groups ? el("p", { class: "groups" }, t("volunteer.reached", { groups })) : null,
    el("p", { class: a.acked_by ? "state done" : (isOpen(a) ? "state nobody" : "state") },
      a.acked_by || !isOpen(a) ? statusWords(a, meta) : t("volunteer.nobody")),
    ...mine.map((i) => intentLine(i)),
    step ? el("p", { class: "countdown", "data-at": String(step.at), "data-group": step.group || "" },
      countdownText(step.at, step.group || "")) : null,
    actions(a, k, id),
    v.open.has(k) ? timeline(k, meta) : null);
}

function intentLine(i) {
  if (i.status === "refused_here") return el("p", { class: "intent refused", role: "status" }, t("intent.not_sent", { detail: i.detail }));
  const words = intentWords(i, null);
  const who = i.on_behalf_of === state.me?.username ? t("volunteer.you") : i.on_behalf_of;
  return el("p", { class: `intent ${words.kind}`, role: "status" }, t("volunteer.ack_by", { who }), " ", words.text);
}

function actions(a, k, id) {
  const row = el("div", { class: "actions stack" });
  const sent = (v.intents.get(k) || []).some((i) => i.on_behalf_of === state.me?.username && i.status !== "refused_here");
  if (needsAck(a) && can("alerts.ack") && !sent) {
    row.append(el("button", { type: "button", class: "primary huge", "data-action": "ack", "aria-describedby": `${id}-what`,
      onclick: () => onMyWay(a) }, t("volunteer.on_my_way")));
  }
  row.append(el("button", { type: "button", class: "secondary big", "aria-expanded": String(v.open.has(k)),
    "aria-describedby": `${id}-what`, onclick: () => toggle(k) }, t(v.open.has(k) ? "action.hide_timeline" : "action.timeline")));
  return row;
}

function timeline(k, meta) {
  const items = v.timelines.get(k);
  if (!items) return el("p", { class: "timeline loading" }, t("timeline.loading"));
  return el("ol", { class: "timeline", "aria-label": t("timeline.title") },
    items.map((i) => el("li", {}, el("time", {}, fmtTime(i.ts)), " ", timelineWords(i, meta))));
}

function toggle(k) {
  if (v.open.has(k)) v.open.delete(k);
  else { v.open.add(k); loadTimeline(k); }
  render();
}

async function onMyWay(a) {
  const k = keyOf(a);
  try {
    const path = `/api/alerts/${encodeURIComponent(a.site)}/${encodeURIComponent(a.gateway)}/${encodeURIComponent(a.alert)}/ack`;
    addIntent(await api(path, { method: "POST", body: { note: t("volunteer.on_my_way_note") } }));
  } catch (e) {
    v.intents.set(k, [...(v.intents.get(k) || []), { id: "local", status: "refused_here", detail: e.message }]);
  }
  render();
}

function refreshIntent(id) {
  api(`/api/intents/${encodeURIComponent(id)}`).then((i) => { addIntent(i); render(); }).catch(() => {});
}

function onEvent(channel, d) {
  if (channel === "alert") {
    const k = keyOf(d);
    if ("updated_at" in d && "raised_at" in d) {
      v.alerts.set(k, { ...v.alerts.get(k), ...d });
      if (v.open.has(k)) loadTimeline(k);
      render();
      loadMetas();
    } else load();
    // a volunteer may not follow commands live: the alert's change is the moment their ack's state moved
    for (const i of v.intents.get(k) || []) if (i.id !== "local") refreshIntent(i.id);
  } else if (channel === "command" && d.kind === "ack") {
    refreshIntent(d.id);
  }
}

function tick() {
  for (const c of document.querySelectorAll("#alert-list .countdown")) c.textContent = countdownText(Number(c.dataset.at), c.dataset.group);
}

function sessionEnded() {
  banners.show("session", () => t("banner.session_ended_phone"), { action: () => t("action.login"), onAction: toLogin });
}

async function main() {
  const me = await start();
  if (!me) return;
  const frame = () => { header("volunteer.title"); render(); };
  events.addEventListener("language", frame);
  events.addEventListener("session-ended", sessionEnded);
  frame();
  new Live(["alert", "command"], { onSync: load, onEvent, onSessionEnded: sessionEnded }).start();
  setInterval(tick, 1000);
}

main();
