// The duty desk: open alerts (most severe, then oldest, first) with place, words, timeline and a live
// escalation countdown; acknowledge (with a note) and resolve; the sites' gateways, an offline one
// impossible to miss; the households panel with the responder's door unlock (desk_homes.js); the alarm
// (alarm.js) for every critical alert until it is acknowledged.
//
// The screen is rebuilt card by card (keyed, only the cards whose data changed), so a keyboard user's
// focus stays where it was while alerts come and go.

import { Alarm } from "./alarm.js";
import { loginForm } from "./auth.js";
import {
  api, banners, can, el, events, fmtTime, header, mark, preferredLanguage, setLanguage, start, state, t,
} from "./core.js";
import { loadHomes, onHomeEvent, renderHomes, setupHomes } from "./desk_homes.js";
import { card, cardVersion, countdownText, gatewayRow, gwKey, keyOf, sortGateways } from "./desk_view.js";
import { Live } from "./live.js";
import { gatewayTrouble, isOpen, needsAck, severityRank, severityWord, whatHappened, whereParts } from "./words.js";

const PAGE = 200; // cards shown at first, and added by "show more"
const MAX_OPEN = 10000; // the API's largest list: more open alerts than this are counted as "10000+"
const DESK_ROLES = ["duty_desk", "admin"];
const desk = {
  alerts: new Map(), gateways: new Map(), metas: new Map(), intents: new Map(), timelines: new Map(),
  open: new Set(), cards: new Map(), limit: PAGE, rendered: false, lang: "", me: "", acking: null,
};
const timers = {};
let alarm, live;

function later(name, fn, ms) { // coalesce bursts of changes into one update
  if (timers[name]) return;
  timers[name] = setTimeout(() => { timers[name] = null; fn(); }, ms);
}

// ---- reading ---------------------------------------------------------------------------------------------

// the most urgent screenful first (drawn at once), then every open alert (for the counts and "show more")
async function load() {
  const [first, gateways, intents] = await Promise.all([
    api(`/api/alerts?state=open&limit=${PAGE}`), api("/api/gateways"), api("/api/intents").catch(() => [])]);
  desk.alerts = new Map(first.map((a) => [keyOf(a), a]));
  desk.partial = first.length >= PAGE;
  desk.gateways = new Map(gateways.map((g) => [gwKey(g), g]));
  for (const i of intents) if (i.kind === "ack") desk.intents.set(`${i.site}/${i.gateway}/${i.target}`, i);
  renderAlerts();
  renderGateways();
  if (!desk.rendered) {
    desk.rendered = true;
    mark("alerts-rendered");
  }
  if (desk.partial) {
    const all = await api(`/api/alerts?state=open&limit=${MAX_OPEN}`);
    desk.alerts = new Map(all.map((a) => [keyOf(a), a]));
    desk.partial = all.length >= MAX_OPEN;
    renderAlerts();
  }
  mark("alerts-complete");
  loadHomes();
  for (const k of desk.open) loadTimeline(k);
  loadMetas();
}

async function loadMetas() {
  const wanted = new Set([...desk.alerts.values()].map(gwKey));
  const missing = [...wanted].filter((k) => !desk.metas.has(k) && desk.gateways.has(k));
  if (!missing.length || !can("gateways.view")) return;
  await Promise.all(missing.map(async (k) => {
    const g = desk.gateways.get(k);
    try {
      const detail = await api(`/api/gateways/${encodeURIComponent(g.site)}/${encodeURIComponent(g.gateway)}`);
      desk.metas.set(k, detail.meta || {});
    } catch { desk.metas.set(k, {}); }
  }));
  renderAlerts();
}

async function loadTimeline(k) {
  const [site, gateway, alert] = k.split("/");
  try {
    const d = await api(`/api/alerts/${encodeURIComponent(site)}/${encodeURIComponent(gateway)}/${encodeURIComponent(alert)}`);
    desk.timelines.set(k, d.timeline);
    desk.alerts.set(k, { ...desk.alerts.get(k), ...d.alert });
  } catch (e) {
    desk.timelines.set(k, [{ ts: Date.now() / 1000, type: e.message }]);
  }
  renderAlerts();
}

async function refreshIntent(id) {
  try {
    const i = await api(`/api/intents/${encodeURIComponent(id)}`);
    if (i.kind === "ack") desk.intents.set(`${i.site}/${i.gateway}/${i.target}`, i);
    renderAlerts();
  } catch { /* not ours to see */ }
}

// ---- the live stream -------------------------------------------------------------------------------------

function onEvent(channel, d) {
  onHomeEvent(channel, d);
  if (channel === "alert") {
    const k = keyOf(d);
    if ("updated_at" in d && "raised_at" in d) { // the whole view: apply it now
      desk.alerts.set(k, { ...desk.alerts.get(k), ...d });
      if (desk.open.has(k)) loadTimeline(k);
      if (!desk.metas.has(gwKey(d))) later("gateways", loadGateways, 200);
      later("render", renderAlerts, 30);
    } else {
      later("load", load, 300); // a partial change (another instance, or the centre's own): read again
    }
  } else if (channel === "gateway") {
    later("gateways", loadGateways, 200);
  } else if (channel === "command" && d.kind === "ack") {
    refreshIntent(d.id);
  }
}

async function loadGateways() {
  const gateways = await api("/api/gateways");
  desk.gateways = new Map(gateways.map((g) => [gwKey(g), g]));
  renderGateways();
  renderAlerts();
  loadMetas();
}

// ---- showing ---------------------------------------------------------------------------------------------

function sortedOpen() {
  return [...desk.alerts.values()].filter(isOpen).sort((a, b) => severityRank(a.severity) - severityRank(b.severity)
    || (a.raised_at ?? 0) - (b.raised_at ?? 0) || keyOf(a).localeCompare(keyOf(b)));
}

function renderAlerts() {
  const list = document.getElementById("alert-list");
  const all = sortedOpen(), shown = all.slice(0, desk.limit);
  const focus = document.activeElement?.closest?.("[data-key]") ? {
    key: document.activeElement.closest("[data-key]").dataset.key, action: document.activeElement.dataset.action } : null;
  const keep = new Set();
  let prev = null;
  for (const a of shown) {
    const k = keyOf(a), v = cardVersion(a, desk);
    keep.add(k);
    let c = desk.cards.get(k);
    if (!c || c.version !== v) {
      const li = card(a, desk, { ack: openAck, timeline: toggleTimeline });
      if (c) c.li.replaceWith(li);
      c = { li, version: v };
      desk.cards.set(k, c);
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== c.li) list.insertBefore(c.li, want);
    prev = c.li;
  }
  for (const [k, c] of desk.cards) if (!keep.has(k)) { c.li.remove(); desk.cards.delete(k); }
  if (focus && !document.activeElement?.closest?.("[data-key]")) {
    desk.cards.get(focus.key)?.li.querySelector(`[data-action="${focus.action}"]`)?.focus();
  }
  const critical = all.filter((a) => a.severity === "critical").length;
  document.getElementById("alert-count").textContent = t(desk.partial ? "desk.count_partial" : "desk.count",
    { n: all.length, critical });
  document.getElementById("alerts-empty").hidden = all.length > 0;
  const more = document.getElementById("show-more");
  more.hidden = all.length <= shown.length;
  more.textContent = t("desk.show_more", { n: all.length - shown.length });
  alarm.update(waiting(all));
}

// critical alerts nobody has acknowledged (an ack of this desk on its way silences its own alert)
function waiting(all) {
  return all.filter((a) => a.severity === "critical" && needsAck(a)
    && !["pending", "sent", "accepted", "executed"].includes(desk.intents.get(keyOf(a))?.status))
    .map((a) => {
      const meta = desk.metas.get(gwKey(a));
      return { key: keyOf(a), title: `${severityWord(a.severity)}: ${whatHappened(a, meta).text}`,
        body: [a.site, ...whereParts(a.location, meta)].join(" · ") };
    });
}

function renderGateways() {
  const gws = sortGateways([...desk.gateways.values()]);
  document.getElementById("gateway-list").replaceChildren(...gws.map(gatewayRow));
  renderHomes(desk.gateways);
  document.getElementById("gateways-empty").hidden = gws.length > 0;
  const bad = gws.filter((g) => gatewayTrouble(g, Date.now() / 1000 + state.clockOffset));
  if (bad.length) {
    banners.show("sites", () => t("banner.sites_trouble", { n: bad.length, list: bad.map(gwKey).join(", ") }));
  } else banners.hide("sites");
}

function tick() {
  for (const c of document.querySelectorAll("#alert-list .countdown")) {
    c.textContent = countdownText(Number(c.dataset.at), c.dataset.group);
  }
}

// ---- acting ----------------------------------------------------------------------------------------------

function openAck(a, resolve) {
  const dlg = document.getElementById("ack-dialog");
  const meta = desk.metas.get(gwKey(a));
  desk.acking = { a, resolve, back: document.activeElement };
  document.getElementById("ack-title").textContent = t(resolve ? "ack.title_resolve" : "ack.title");
  document.getElementById("ack-what").textContent =
    [whatHappened(a, meta).text, ...whereParts(a.location, meta)].join(" · ");
  document.getElementById("ack-note").value = "";
  document.getElementById("ack-confirm").textContent = t(resolve ? "action.resolve" : "action.ack");
  dlg.showModal();
  document.getElementById("ack-note").focus();
}

async function onAckClosed() {
  const dlg = document.getElementById("ack-dialog");
  const job = desk.acking;
  desk.acking = null;
  if (!job) return;
  const { a, resolve, back } = job;
  if (dlg.returnValue === "confirm") {
    const note = document.getElementById("ack-note").value.trim();
    const k = keyOf(a);
    try {
      const path = `/api/alerts/${encodeURIComponent(a.site)}/${encodeURIComponent(a.gateway)}/${encodeURIComponent(a.alert)}/ack`;
      desk.intents.set(k, await api(path, { method: "POST", body: { note: note || null, resolve } }));
    } catch (e) {
      desk.intents.set(k, { status: "refused_here", detail: e.message });
    }
    renderAlerts();
  }
  const li = desk.cards.get(keyOf(a))?.li;
  (li?.querySelector(`[data-action="${back?.dataset?.action}"]`) || li?.querySelector("button") || back)?.focus();
}

function toggleTimeline(a) {
  const k = keyOf(a);
  if (desk.open.has(k)) desk.open.delete(k);
  else {
    desk.open.add(k);
    loadTimeline(k);
  }
  renderAlerts();
}

// ---- the shift: start, hand over, session end -----------------------------------------------------------

function shiftState() {
  const box = document.getElementById("shift-state"), button = document.getElementById("start-shift");
  const hide = alarm.started && alarm.soundOk && alarm.notifyOk;
  if (hide && document.activeElement === button) document.getElementById("test-sound").focus();
  button.hidden = hide;
  button.textContent = t(alarm.started ? "shift.retry" : "shift.start");
  if (!alarm.started) { box.textContent = t("shift.not_started"); return; }
  box.textContent = t("shift.started", { time: fmtTime(alarm.startedAt),
    sound: t(alarm.soundOk ? "shift.on" : "shift.off"), notify: t(alarm.notifyOk ? "shift.on" : "shift.off") });
}

function sessionEnded() {
  if (banners.has("session")) return;
  live.stop();
  banners.show("session", () => t("banner.session_ended"), { action: () => t("action.login"), onAction: openLogin });
}

function openLogin() {
  const dlg = document.getElementById("login-dialog");
  loginForm(document.getElementById("login-box"), async (me) => {
    dlg.close();
    if (!me.grants.some((g) => DESK_ROLES.includes(g.role))) return location.assign("/");
    banners.hide("session");
    desk.intents.clear();
    desk.me = me.username;
    await setLanguage(preferredLanguage(me));
    live.start();
  }, { idPrefix: "handover" });
  dlg.showModal();
}

// a handover ends this person's session first: the next one logs in while the alarm keeps going
async function handOver() {
  try { await api("/api/logout", { method: "POST" }); } catch { /* ended already */ }
  sessionEnded();
  openLogin();
}

function frame() {
  desk.lang = state.lang;
  header("desk.title", [el("button", { type: "button", class: "secondary", onclick: handOver }, t("header.handover"))]);
  shiftState();
  desk.cards.clear();
  document.getElementById("alert-list").replaceChildren();
  renderAlerts();
  renderGateways();
}

async function main() {
  const ready = start(); // meanwhile the live stream connects: its hello (re)loads the alerts once we are ready
  live = new Live(["alert", "gateway", "command", "reading"], {
    onSync: () => ready.then((me) => me && load()).then(() => banners.hide("load"), (e) => e.status !== 401
      && banners.show("load", () => t("banner.load_failed", { detail: e.message }))),
    onEvent: (ch, d) => desk.rendered && onEvent(ch, d),
    onSessionEnded: () => sessionEnded() });
  live.start();
  const me = await ready;
  if (!me) return;
  desk.me = me.username;
  alarm = new Alarm({ onClickNotification: (k) => desk.cards.get(k)?.li.querySelector("button")?.focus(),
    onChange: () => shiftState() });
  document.getElementById("start-shift").addEventListener("click", () => alarm.startShift());
  document.getElementById("test-sound").addEventListener("click", () => alarm.beep(1));
  document.getElementById("show-more").addEventListener("click", () => { desk.limit += PAGE; renderAlerts(); });
  document.getElementById("ack-dialog").addEventListener("close", onAckClosed);
  setupHomes();
  document.getElementById("login-cancel").addEventListener("click", () => document.getElementById("login-dialog").close());
  events.addEventListener("language", frame);
  events.addEventListener("session-ended", sessionEnded);
  frame();
  setTimeout(() => { if (!desk.rendered) load(); }, 4000); // no hello yet: show what the API has anyway
  setInterval(tick, 1000);
  setInterval(() => { renderGateways(); renderAlerts(); }, 10000);
}

main();
